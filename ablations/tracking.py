"""MLflow tracking, as docs/tracking.md defines it: one experiment per study, one parent run,
one nested child run per trial key, each evaluation logged exactly once.

Only the driver writes (through a Ray Tune callback), so concurrent trials never contend
for the SQLite store; calls still retry on a lock, for two studies sharing one store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ablations.errors import AblateError

T = TypeVar("T")
TERMINAL = ("finished", "diverged")
METRIC_KEYS = (
    "train/loss",
    "train/error",
    "val/loss",
    "val/error",
    "test/loss",
    "test/error",
    "lr",
    "images_per_s",
)


def resolve_uri(uri: str | None) -> str:
    """`--tracking-uri`, else MLFLOW_TRACKING_URI, else `sqlite:///<cwd>/mlflow.db`, resolved
    to an absolute path once, on the driver (workers and reruns see the same store)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (well within 10 s) on a store that cannot work, before any trial starts."""
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=timeout).raise_for_status()
        except requests.RequestException as err:
            reason = type(err).__name__
            raise AblateError(
                f"tracking server {uri} is unreachable ({reason}); start it, or "
                "drop --tracking-uri to use ./mlflow.db"
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


class Store:
    """The study's MLflow experiment."""

    def __init__(self, uri: str):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        with _creating_tables(uri):
            self.client = MlflowClient(tracking_uri=uri)

    # -- experiment and parent run -------------------------------------------------------
    def experiment_id(self, name: str, create: bool = True) -> str | None:
        exp = retry(lambda: self.client.get_experiment_by_name(name))
        if exp is not None:
            return exp.experiment_id
        if not create:
            return None
        location = None
        if self.uri.startswith("sqlite:///"):
            # Beside the database, not relative to whichever process's cwd writes first.
            db = Path(self.uri.removeprefix("sqlite:///"))
            location = (db.parent / "mlartifacts" / name).as_uri()
        return retry(lambda: self.client.create_experiment(name, artifact_location=location))

    def find_parent(self, exp_id: str):
        runs = retry(
            lambda: self.client.search_runs(
                [exp_id], "tags.`ablate.role` = 'parent'", max_results=1
            )
        )
        return runs[0] if runs else None

    def parent_run(self, exp_id: str, plan) -> str:
        """Get or create the study's parent run; a stored study with another definition is
        an error (its results would mix with these)."""
        fingerprint = plan.fingerprint()
        parent = self.find_parent(exp_id)
        if parent is not None:
            stored = parent.data.tags.get("ablate.fingerprint")
            if stored != fingerprint:
                raise AblateError(
                    f"the store {self.uri} holds study {plan.experiment} with another definition "
                    f"(fingerprint {stored}, this file {fingerprint}); use another "
                    "--tracking-uri, or rename the study"
                )
            return parent.info.run_id
        study = plan.study
        tags = {
            "ablate.role": "parent",
            "ablate.study": plan.experiment,
            "ablate.fingerprint": fingerprint,
            "mlflow.note.content": study.question,
        }
        run = retry(lambda: self.client.create_run(exp_id, run_name=plan.experiment, tags=tags))
        params = {
            "question": study.question[:500],
            "dataset": study.dataset,
            "reference": json.dumps(study.reference),
            "factors": json.dumps(list(study.scientific)),
            "seeds": json.dumps(sorted({t.seed for t in plan.trials})),
            "preset": plan.preset or "",
            "source": plan.source,
            "expected_trials": len(plan.trials),
        }
        self._log_params(run.info.run_id, params)
        return run.info.run_id

    # -- child runs ----------------------------------------------------------------------
    def child_runs(self, exp_id: str, role: str = "trial") -> dict[str, Any]:
        """Existing child runs by trial key."""
        runs = retry(
            lambda: self.client.search_runs(
                [exp_id], f"tags.`ablate.role` = '{role}'", max_results=50_000
            )
        )
        return {r.data.tags["ablate.trial_key"]: r for r in runs}

    def create_child(
        self,
        exp_id: str,
        parent_id: str,
        key: str,
        arm: str,
        config: dict,
        extra: dict,
        role: str = "trial",
        study: str = "",
    ) -> str:
        tags = {
            "mlflow.parentRunId": parent_id,
            "ablate.role": role,
            "ablate.study": study,
            "ablate.trial_key": key,
            "ablate.arm": arm,
            "ablate.status": "running",
        }
        run = retry(lambda: self.client.create_run(exp_id, run_name=key, tags=tags))
        self._log_params(run.info.run_id, {**config, **extra})
        retry(lambda: self.client.log_dict(run.info.run_id, config, "trial_config.json"))
        return run.info.run_id

    def logged_upto(self, run_id: str) -> int:
        """The last iteration whose evaluation is in the store (-1: none)."""
        history = retry(lambda: self.client.get_metric_history(run_id, "train/error"))
        return max((m.step for m in history), default=-1)

    def log_record(self, run_id: str, record: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        step = int(record["iteration"])
        metrics = [Metric(k, float(record[k]), now, step) for k in METRIC_KEYS if k in record]
        retry(lambda: self.client.log_batch(run_id, metrics=metrics))

    def finish(self, run_id: str, final: dict) -> None:
        from mlflow.entities import Metric

        status = final["status"]
        step = int(final["iterations"])
        now = int(time.time() * 1000)
        metrics = [Metric("wall_time_s", float(final["wall_time_s"]), now, step)]
        retry(lambda: self.client.log_batch(run_id, metrics=metrics))
        retry(lambda: self.client.log_dict(run_id, final["lr_trace"], "lr_trace.json"))
        if final.get("layer_responses"):
            retry(
                lambda: self.client.log_dict(
                    run_id, final["layer_responses"], "layer_responses.json"
                )
            )
        if final.get("diverged_at") is not None:
            retry(
                lambda: self.client.set_tag(run_id, "ablate.diverged_at", str(final["diverged_at"]))
            )
        retry(lambda: self.client.set_tag(run_id, "ablate.status", status))
        retry(lambda: self.client.set_terminated(run_id, "FINISHED"))

    def reopen(self, run_id: str) -> None:
        """A resumed run is RUNNING again (it was KILLED, or left RUNNING by a kill -9)."""
        retry(lambda: self.client.update_run(run_id, status="RUNNING"))
        retry(lambda: self.client.set_tag(run_id, "ablate.status", "running"))

    def fail(self, run_id: str, reason: str) -> None:
        line = " ".join(reason.split())[:500]
        retry(lambda: self.client.set_tag(run_id, "ablate.error", line))
        retry(lambda: self.client.set_tag(run_id, "ablate.status", "failed"))
        retry(lambda: self.client.set_terminated(run_id, "FAILED"))

    def _log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            chunk = items[i : i + 100]
            retry(lambda chunk=chunk: self.client.log_batch(run_id, params=chunk))


def code_version() -> dict[str, str]:
    """The ablate version, and the git commit when running from a checkout."""
    import subprocess
    from importlib.metadata import version

    tags = {"ablate.version": version("ablate")}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
            check=True,
        ).stdout.strip()
        tags["mlflow.source.git.commit"] = commit
    except (OSError, subprocess.SubprocessError):
        pass
    return tags


@contextlib.contextmanager
def _creating_tables(uri: str):
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


def trial_params(config) -> dict:
    """Every resolved setting under its STYLE.md name (execution details left out)."""
    values = dataclasses.asdict(config)
    for key in ("device", "compile", "data_dir", "checkpoint_every"):
        values.pop(key, None)
    return values
