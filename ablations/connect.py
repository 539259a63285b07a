"""Where the study store is and whether it answers: the tracking URI made absolute once,
the one reachability probe, retries on a locked SQLite file, and the lock that lets two
studies create one store's tables at once. No MLflow objects here."""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ablations.errors import AblateError

T = TypeVar("T")


def resolve_uri(uri: str | None) -> str:
    """`--tracking-uri`, else MLFLOW_TRACKING_URI, else `sqlite:///<cwd>/mlflow.db`, resolved
    to an absolute path once, on the driver (reruns from elsewhere see the same store)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def probe(uri: str) -> None:
    """Fail fast on a store that cannot work, before anything is written: the one
    reachability check, shared with the reports (reports.fetch.probe_server)."""
    if uri.startswith(("http://", "https://")):
        from reports.errors import ReportError
        from reports.fetch import probe_server

        try:
            probe_server(uri)
        except ReportError as err:
            raise AblateError(
                f"{err}; start it, or drop --tracking-uri to use ./mlflow.db"
            ) from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise AblateError(
                f"tracking store folder {folder} does not exist; create it or "
                "choose another --tracking-uri"
            )
    elif not uri.startswith(("file:", "databricks", "postgresql", "mysql")):
        raise AblateError(
            f"tracking URI {uri!r}: use sqlite:///PATH, http(s)://HOST:PORT or file:PATH"
        )


def retry(call: Callable[[], T], attempts: int = 8) -> T:
    """Retry a store call on SQLite's 'database is locked' (another study writing)."""
    for i in range(attempts):
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - only lock errors are retried
            if "locked" not in str(err).lower() or i == attempts - 1:
                raise
            time.sleep(0.05 * 2**i + random.random() * 0.05)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def creating_tables(uri: str):
    """MLflow creates (and migrates) a new SQLite store's tables when a client opens it; two
    studies starting at once would both migrate and one fails ("duplicate column name:
    step"). A lock per database file, in the temp folder so that nothing lands beside the
    store, makes the second wait until the first has opened it."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl
    import hashlib
    import tempfile

    db = uri.removeprefix("sqlite:///")
    name = f"ablate-mlflow-{hashlib.sha256(db.encode()).hexdigest()[:16]}.lock"
    fd = os.open(Path(tempfile.gettempdir()) / name, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
