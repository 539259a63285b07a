"""`ablate ui`: the MLflow UI over a study store, on 127.0.0.1, until interrupted. The URL
printed opens the study (or the list of studies) in MLflow's model-training view: MLflow 3
opens experiments in its GenAI view (traces, token costs) unless the link asks otherwise.
The server (MLflow starts several worker processes) runs in its own process group, so
Ctrl-C or SIGTERM stops all of it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ablations import lease
from ablations.errors import AblateError
from ablations.study import experiment_name
from ablations.tracking import existing, probe, resolve_uri
from reports.html import MODEL_TRAINING, experiment_url
from reports.layout import redact

HOST = "127.0.0.1"


def serve(study: str | None, preset: str | None, tracking_uri: str | None, port: int) -> int:
    """Serve the UI until it exits (its exit code) or is interrupted (KeyboardInterrupt,
    after stopping it). Refuses, before starting anything, a store or study that is not
    there and a port that is taken."""
    experiment = experiment_name(study, preset) if study else None
    uri = resolve_uri(tracking_uri)
    shown = redact(uri)
    if not uri.startswith("sqlite:///"):
        probe(uri)  # a server or database that does not answer, or refuses the login
    store = existing(uri)
    if store is None:
        raise AblateError(
            f"no MLflow store at {uri.removeprefix('sqlite:///')}; run a study in this "
            "folder first, or give the store with --tracking-uri"
        )
    studies = store.studies()
    if experiment is not None and experiment not in studies:
        there = ", ".join(studies) or "none"
        raise AblateError(f"no study {experiment} in the store {shown}; studies there: {there}")
    running = lease.holder(store, experiment) if experiment is not None else None
    if uri.startswith(("http://", "https://")):
        # The lab's tracking server already serves the UI: open it, start nothing.
        url = uri.rstrip("/")
        where = f"{url}/#/experiments?{MODEL_TRAINING}"
        if experiment is not None:
            where = experiment_url(url, studies[experiment]) or where
        print(f"MLflow UI of {shown}: {where}{_running(experiment, running)}", flush=True)
        return 0
    if not 0 < port < 65536:
        raise AblateError(f"--port {port}: use a TCP port number, 1-65535")
    if not _port_free(port):
        raise AblateError(
            f"port {port} on {HOST} is in use (another `ablate ui` or server?); "
            "stop it or choose another with --port"
        )
    # The store by environment, not argument: a database URI's password stays out of `ps`.
    cmd = [sys.executable, "-m", "mlflow", "ui", "--host", HOST, "--port", str(port)]
    address = f"http://{HOST}:{port}"
    where = f"{address}/#/experiments?{MODEL_TRAINING}"
    held = f", which holds {len(studies)} studies ({', '.join(studies) or 'none yet'})"
    if experiment is not None:
        where, held = experiment_url(address, studies[experiment]) or where, ""
    print(f"MLflow UI for {shown}{held}: {where} (Ctrl-C stops it)", flush=True)
    if running is not None:
        print(_running(experiment, running).removeprefix("; "), flush=True)
    # The server's own output (its workers' start-up lines, deprecation warnings) goes to
    # a log, so the line above stays the last one; a server that fails says where to look.
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri, "PYTHONWARNINGS": "ignore"}
    log = Path(tempfile.gettempdir()) / f"ablate-ui-{port}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, start_new_session=True, env=env, stdout=out, stderr=out)
        try:
            code = proc.wait()
        finally:
            _stop(proc)
    if code:
        print(f"the MLflow server stopped (exit {code}); its log: {log}", file=sys.stderr)
    return code


def _running(experiment: str | None, running) -> str:
    """`; study X is running on HOST ...`, or nothing."""
    return f"; study {experiment} is running {running.where()}" if running else ""


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the server's whole process group, SIGKILL to what is left after `grace`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                proc.poll()
                return
            proc.poll()
            time.sleep(0.1)
