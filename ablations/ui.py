"""`ablate ui`: the MLflow UI on the study store, on 127.0.0.1, for as long as the command
runs. The server (MLflow starts several worker processes) runs in its own process group,
so Ctrl-C or SIGTERM (ablations/__init__.py) stops all of it; a store that does not exist
or a busy port is an error before anything starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from ablations.errors import AblateError
from reports.html import MODEL_TRAINING, experiment_url

HOST = "127.0.0.1"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def serve(uri: str, port: int, experiment: str | None = None) -> int:
    """Run the MLflow UI until interrupted; returns the exit code. The URL printed opens
    the study (or the list of studies) in MLflow's model-training view: MLflow 3 opens
    experiments in its GenAI view (traces, token costs) unless the link asks otherwise."""
    from ablations.store import existing

    store = existing(uri)
    if store is None:
        raise AblateError(
            f"no MLflow store at {uri.removeprefix('sqlite:///')}; run a study in this "
            "folder first, or give the store with --tracking-uri"
        )
    # The ablate studies in the store: name -> experiment id.
    client = store.client
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()] or ["0"],
        "tags.`ablate.role` = 'parent'",
        max_results=1000,
    )
    studies = {r.data.tags["ablate.study"]: r.info.experiment_id for r in runs}
    if experiment is not None and experiment not in studies:
        there = ", ".join(studies) or "none"
        raise AblateError(f"no study {experiment} in the store {uri}; studies there: {there}")
    if not 0 < port < 65536:
        raise AblateError(f"--port {port}: use a TCP port number, 1-65535")
    if not port_free(port):
        raise AblateError(
            f"port {port} on {HOST} is in use (another `ablate ui` or server?); "
            "stop it or choose another with --port"
        )
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    cmd += ["--host", HOST, "--port", str(port)]
    address = f"http://{HOST}:{port}"
    where = f"{address}/#/experiments?{MODEL_TRAINING}"
    held = f", which holds {len(studies)} studies ({', '.join(studies) or 'none yet'})"
    if experiment is not None:
        where, held = experiment_url(address, studies[experiment]) or where, ""
    print(f"MLflow UI for {uri}{held}: {where} (Ctrl-C stops it)", flush=True)
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
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
