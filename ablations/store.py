"""What ablate writes to (and searches in) MLflow, as docs/tracking.md defines it; over 300
lines because it is that contract's one writer. Every call retries on a locked SQLite
store (two studies sharing one file); only the driver writes, so concurrent trials never
contend for the store."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import subprocess
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ablations.errors import AblateError

REASON_LIMIT = 5000  # MLflow keeps tag values up to 8000 characters


def resolve_uri(uri: str | None) -> str:
    """`--tracking-uri`, else MLFLOW_TRACKING_URI, else `sqlite:///<cwd>/mlflow.db`, resolved
    to an absolute path once, on the driver (reruns from elsewhere see the same store)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{_db(uri).resolve()}"
    return uri


def _db(uri: str) -> Path:
    """The database file of a `sqlite:///` URI."""
    return Path(uri.removeprefix("sqlite:///"))


def probe(uri: str) -> None:
    """Fail fast on a store that cannot work (the reports' check: reports.fetch)."""
    if uri.startswith(("http://", "https://")):
        from reports.errors import ReportError
        from reports.fetch import probe_server

        try:
            probe_server(uri)
        except ReportError as err:
            raise AblateError(
                f"{err}; start it, or drop --tracking-uri to use ./mlflow.db"
            ) from None
    elif uri.startswith("sqlite:///") and not _db(uri).parent.is_dir():
        raise AblateError(
            f"tracking store folder {_db(uri).parent} does not exist; create it or "
            "choose another --tracking-uri"
        )
    elif not uri.startswith(("sqlite:///", "file:", "databricks", "postgresql", "mysql")):
        raise AblateError(
            f"tracking URI {uri!r}: use sqlite:///PATH, http(s)://HOST:PORT or file:PATH"
        )


def existing(uri: str) -> Store | None:
    """The store at `uri`; None for a SQLite file not created yet (reading creates none)."""
    if uri.startswith("sqlite:///") and not _db(uri).is_file():
        return None
    return Store(uri)


class _Retrying:
    """An MlflowClient whose every call is retried on SQLite's 'database is locked'
    (another study writing)."""

    def __init__(self, client, attempts: int = 8):
        self._client, self._attempts = client, attempts

    def __getattr__(self, name: str):
        method = getattr(self._client, name)

        def call(*args, **kwargs):
            for i in range(self._attempts):
                try:
                    return method(*args, **kwargs)
                except Exception as err:  # noqa: BLE001 - only lock errors are retried
                    if "locked" not in str(err).lower() or i == self._attempts - 1:
                        raise
                    time.sleep(0.05 * 2**i + random.random() * 0.05)

        return call


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

    name = f"ablate-mlflow-{hashlib.sha256(str(_db(uri)).encode()).hexdigest()[:16]}.lock"
    fd = os.open(Path(tempfile.gettempdir()) / name, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def package_version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


@functools.lru_cache(maxsize=8)
def code_version(model: str | None = None) -> dict:
    """{"version", "commit", "dirty"} of ablate (commit "" outside a git checkout), and
    with a model builder where its code is ("model_source", resnet/builders.py)."""
    from resnet.builders import git, load_builder

    here = Path(__file__).resolve().parent
    out = {"version": package_version("ablate"), "commit": "", "dirty": False}
    if model is not None:
        out["model_source"] = load_builder(model).source()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out["commit"] = git(here, "rev-parse", "HEAD")
        out["dirty"] = bool(git(here, "status", "--porcelain", "--untracked-files=no"))
    return out


def code_tags(code: dict, source: str) -> dict[str, str]:
    """The MLflow tags of a code version (docs/tracking.md)."""
    tags = {
        "ablate.version": code["version"],
        "mlflow.source.name": source,
        "mlflow.source.type": "LOCAL",
    }
    if code.get("commit"):
        tags["mlflow.source.git.commit"] = code["commit"]
        tags["ablate.git_dirty"] = "true" if code["dirty"] else "false"
    if code.get("model_source"):
        tags["ablate.model_source"] = json.dumps(code["model_source"], sort_keys=True)
    return tags


@dataclass(frozen=True)
class StudyIds:
    """A study in the store: its MLflow experiment (named after the study) and parent run."""

    name: str
    experiment_id: str
    parent_id: str


class Store:
    """One MLflow tracking store; `open_study` starts writing, after the plan is valid."""

    def __init__(self, uri: str):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        with creating_tables(uri):
            self.client = _Retrying(MlflowClient(tracking_uri=uri))

    # -- the study: experiment and parent run ---------------------------------------------
    def _study(self, name: str) -> tuple:
        """The study's experiment and parent run (None where absent)."""
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            return None, None
        runs = self.client.search_runs(
            [exp.experiment_id], "tags.`ablate.role` = 'parent'", max_results=1
        )
        return exp, (runs[0] if runs else None)

    def find_study(self, name: str) -> StudyIds | None:
        exp, parent = self._study(name)
        return StudyIds(name, exp.experiment_id, parent.info.run_id) if parent else None

    def check_study(self, plan) -> None:
        """Refuse a plan whose stored study has another definition, naming what changed."""
        _, parent = self._study(plan.experiment)
        if parent is None or parent.data.tags.get("ablate.fingerprint") == plan.fingerprint():
            return
        changed = self._changes(parent.info.run_id, plan.definition())
        raise AblateError(
            f"the store {self.uri} holds study {plan.experiment} with another definition "
            f"({changed}); use another --tracking-uri, or rename the study"
        )

    def _changes(self, parent_id: str, new: dict) -> str:
        import tempfile

        from ablations.plan import describe_changes

        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = self.client.download_artifacts(parent_id, "study.json", tmp)
                old = json.loads(Path(path).read_text())
        except Exception:  # noqa: BLE001 - an older store without study.json
            return "its stored definition cannot be read to compare"
        return describe_changes(old, new)

    def open_study(self, plan, code: dict) -> StudyIds:
        """Get or create the study's experiment and parent run (the first write of a run)."""
        self.check_study(plan)
        exp, parent = self._study(plan.experiment)
        if exp is None:
            location = None
            if self.uri.startswith("sqlite:///"):
                # Beside the database, not relative to whichever process's cwd writes first.
                location = (_db(self.uri).parent / "mlartifacts" / plan.experiment).as_uri()
            exp_id = self.client.create_experiment(plan.experiment, artifact_location=location)
        else:
            exp_id = exp.experiment_id
        self.client.set_experiment_tag(exp_id, "mlflow.experimentKind", "custom_model_development")
        self.client.set_experiment_tag(exp_id, "mlflow.note.content", plan.question)
        parent_id = parent.info.run_id if parent else self._create_parent(exp_id, plan, code)
        tags = {"ablate.replication": "fixed seeds"}
        if plan.replication:
            rule = plan.replication
            tags = {
                "ablate.replication": rule.describe(),
                "ablate.target_ci": str(rule.target_ci),
                "ablate.max_seeds": str(rule.max_seeds),
            }
        self.set_tags(parent_id, {**tags, **code_tags(code, f"ablate run {plan.experiment}")})
        return StudyIds(plan.experiment, exp_id, parent_id)

    def _create_parent(self, exp_id: str, plan, code: dict) -> str:
        tags = {
            "ablate.role": "parent",
            "ablate.study": plan.experiment,
            "ablate.fingerprint": plan.fingerprint(),
            "ablate.settings": json.dumps(plan.param_types()),
            "ablate.model": plan.model,
            "ablate.model_factors": json.dumps(plan.model_factors),
            "mlflow.note.content": plan.question,
        }
        run_id = self.client.create_run(exp_id, run_name=plan.experiment, tags=tags).info.run_id
        params = {
            "question": plan.question[:500],
            "dataset": plan.dataset,
            "reference": json.dumps(plan.reference),
            "factors": json.dumps(plan.factors),
            "seeds": json.dumps(plan.seeds),
            "preset": plan.preset or "",
            "source": plan.source,
            "expected_trials": len(plan.trials),
            "full_dataset": plan.full["dataset"],
            "full_iterations": plan.full["iterations"],
        }
        self._log_params(run_id, params)
        self.client.log_dict(run_id, plan.definition(), "study.json")
        return run_id

    def set_plan_size(self, study: StudyIds, plan) -> None:
        """The planned seeds and trials as they stand (they grow when seeds are added)."""
        planned: dict[str, list[int]] = {}
        for t in plan.trials:
            planned.setdefault(t.arm, []).append(t.seed)
        self.set_tags(
            study.parent_id,
            {
                "ablate.seeds": json.dumps(sorted({t.seed for t in plan.trials})),
                "ablate.planned": json.dumps(planned),
                "ablate.expected_trials": str(len(plan.trials)),
            },
        )

    # -- child runs -----------------------------------------------------------------------
    def trial_runs(self, study: StudyIds) -> list:
        """Every child run of the study (trials and tuning trials), in one search."""
        return self.client.search_runs(
            [study.experiment_id], "tags.`ablate.role` != 'parent'", max_results=50_000
        )

    def create_trial(
        self, study: StudyIds, key: str, arm: str, params: dict, code: dict, role: str = "trial"
    ) -> str:
        """A child run, pending until its trial starts (MLflow status SCHEDULED)."""
        tags = {
            "mlflow.parentRunId": study.parent_id,
            "ablate.role": role,
            "ablate.study": study.name,
            "ablate.trial_key": key,
            "ablate.arm": arm,
            "ablate.status": "pending",
            **code_tags(code, f"ablate run {study.name}"),
        }
        run_id = self.client.create_run(study.experiment_id, run_name=key, tags=tags).info.run_id
        self.client.update_run(run_id, status="SCHEDULED")
        self._log_params(run_id, params)
        self.client.log_dict(run_id, params, "trial_config.json")
        return run_id

    def start(self, run_id: str) -> None:
        """A trial starts, or resumes: RUNNING."""
        self.client.update_run(run_id, status="RUNNING")
        self.set_tags(run_id, {"ablate.status": "running"})

    def log_start(self, run_id: str, start) -> None:
        """Where the trial resumed from, its split and its process's manifest."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        env = start.environment
        self.set_tags(
            run_id,
            {
                "ablate.resumed_from": str(start.resumed_from),
                "ablate.val_digest": start.val_digest,
                "ablate.train_size": str(start.train_size),
                "ablate.versions": json.dumps(env["versions"], sort_keys=True),
                "ablate.device": env["device"],
                "ablate.data_digest": env["data_digest"],
            },
        )
        dataset = Dataset(
            name=env["dataset"],
            digest=env["data_digest"],
            source_type="local",
            source=env["data_source"],
        )
        context = InputTag("mlflow.data.context", "training")
        self.client.log_inputs(run_id, [DatasetInput(dataset, [context])])

    def logged_upto(self, run_id: str) -> int:
        """The last iteration whose evaluation is in the store (-1: none)."""
        history = self.client.get_metric_history(run_id, "train/error")
        return max((m.step for m in history), default=-1)

    def log_evaluation(self, run_id: str, evaluation: dict) -> None:
        step = int(evaluation["iteration"])
        self._metrics(run_id, [(k, v, step) for k, v in evaluation.items() if k != "iteration"])

    def log_checkpoint(self, run_id: str, path: str, previous: str | None) -> None:
        """Where the newest checkpoints are, for a person (resuming reads the storage)."""
        tags = {"ablate.checkpoint": path}
        if previous:
            tags["ablate.checkpoint_previous"] = previous
        self.set_tags(run_id, tags)

    def finish(self, run_id: str, final) -> None:
        """A trial that ended training (finished or diverged) with its results."""
        step = int(final.summary["iterations"])
        self._metrics(run_id, [("wall_time_s", final.summary["wall_time_s"], step)])
        self.client.log_dict(run_id, final.lr_trace, "lr_trace.json")
        if final.layer_responses:
            self.client.log_dict(run_id, final.layer_responses, "layer_responses.json")
        tags = {"ablate.status": final.status}
        if final.summary.get("diverged_at") is not None:
            tags["ablate.diverged_at"] = str(final.summary["diverged_at"])
        self.set_tags(run_id, tags)
        self.client.set_terminated(run_id, "FINISHED")

    def fail(self, run_id: str, reason: str) -> None:
        line = " ".join(reason.split())[:REASON_LIMIT]
        self.set_tags(run_id, {"ablate.error": line, "ablate.status": "failed"})
        self.client.set_terminated(run_id, "FAILED")

    def interrupt(self, run_id: str) -> None:
        """Stopped part-way: KILLED, resumable (the next run sets it RUNNING again)."""
        self.set_tags(run_id, {"ablate.status": "interrupted"})
        self.client.set_terminated(run_id, "KILLED")

    # -- the end of a study ---------------------------------------------------------------
    def summarize(self, study: StudyIds, ledger) -> None:
        """Per-arm means on the parent run, so the MLflow UI's chart view of the study is
        not empty (step = finished seeds). Metric keys take no `=`: arms say `depth:20`."""
        means = [
            (f"mean_{split}_error/{arm.replace('=', ':')}", sum(v) / len(v) / 100, len(v))
            for split in ("test", "train")
            for arm, v in ledger.errors(split).items()
            if v
        ]
        self._metrics(study.parent_id, means)

    def delete_study(self, study: StudyIds) -> None:
        """Delete the study's experiment. MLflow keeps a deleted experiment (and its name)
        until `mlflow gc`; it is renamed first, so the name is free for a new study."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self.client.rename_experiment(study.experiment_id, f"{study.name} (removed {stamp})")
        self.client.delete_experiment(study.experiment_id)

    def end(self, study: StudyIds, outcome: str) -> None:
        self.client.set_terminated(study.parent_id, outcome)

    def running(self, study: StudyIds) -> None:
        self.client.update_run(study.parent_id, status="RUNNING")

    # -- helpers --------------------------------------------------------------------------
    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def _metrics(self, run_id: str, values: list[tuple[str, float, int]]) -> None:
        """(key, value, step) metrics, in batches of 500 (MLflow takes 1000 at most)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v, step in values]
        for i in range(0, len(metrics), 500):
            self.client.log_batch(run_id, metrics=metrics[i : i + 500])

    def _log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])
