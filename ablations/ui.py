"""`ablate ui`: the MLflow UI on the study store, on 127.0.0.1, for as long as the command
runs. The server (MLflow starts several worker processes) runs in its own process group,
so Ctrl-C or SIGTERM stops all of it; a busy port is an error before anything starts."""

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
    if experiment is not None:
        where = experiment_url(address, _experiment_id(uri, experiment)) or where
    print(f"MLflow UI for {uri}: {where} (Ctrl-C stops it)", flush=True)
    proc = subprocess.Popen(cmd, start_new_session=True)
    previous = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop(proc)


def _experiment_id(uri: str, name: str) -> str:
    from ablations.store import Store

    found = Store(uri).find_study(name)
    if found is None:
        raise AblateError(f"no study {name} in the store {uri}; run it first, or omit the name")
    return found.experiment_id


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
