"""The one writer of what ablate keeps in MLflow (`Store`), in the layout of
reports/layout.py (docs/tracking.md): tag names, roles and trial statuses are defined there,
where the reports read them too. It takes typed records (`StudyRecord`, ids, values), never
a plan; the ledger and `ablate ui` read the store through it. Every call retries on a
locked SQLite store (two studies sharing one file); only the driver writes, so concurrent
trials never contend for the store."""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablations.errors import AblateError
from reports.layout import Role, Tag, TrialStatus, redact, server_problem

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
    """Fail fast on a store that cannot work, before anything is written."""
    if uri.startswith(("http://", "https://")):
        problem = server_problem(uri)
        if problem:
            raise AblateError(f"{problem}; start it, or drop --tracking-uri to use ./mlflow.db")
        _probe_login(uri)
    elif uri.startswith(("postgresql", "mysql")):
        _probe_database(uri)
    elif uri.startswith("sqlite:///") and not _db(uri).parent.is_dir():
        raise AblateError(
            f"tracking store folder {_db(uri).parent} does not exist; create it or "
            "choose another --tracking-uri"
        )
    elif not uri.startswith(("sqlite:///", "file:", "databricks", "postgresql", "mysql")):
        raise AblateError(
            f"tracking URI {uri!r}: use sqlite:///PATH, http(s)://HOST:PORT or file:PATH"
        )


def refusal(err: BaseException, uri: str) -> AblateError | None:
    """A server's refusal of the login or of a permission, as one line (None: another
    error). MLflow's basic-auth app takes the login from MLFLOW_TRACKING_USERNAME and
    MLFLOW_TRACKING_PASSWORD; the password never appears here."""
    code = getattr(err, "error_code", "")
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    if code == "UNAUTHENTICATED":
        who = f"user {user!r} and the password given" if user else "no user name"
        return AblateError(
            f"MLflow server {redact(uri)} refused the login ({who}): set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a login of that server"
        )
    if code == "PERMISSION_DENIED":
        return AblateError(
            f"MLflow server {redact(uri)}: user {user!r} has no permission for this "
            f"({' '.join(str(err).split())[:160]}); ask its admin for EDIT (to run) or READ"
        )
    return None


def _probe_login(uri: str) -> None:
    """One authenticated read: a wrong password or a user without permission to read is
    refused here, before anything is written."""
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - refusals in one line, the rest as they are
        if (refused := refusal(err, uri)) is not None:
            raise refused from None
        raise AblateError(f"MLflow server {redact(uri)}: {_first_line(err)}") from None


def _probe_database(uri: str) -> None:
    """Connect once, with a short timeout: a database that is down, a wrong password or a
    missing driver is one line here, before MLflow's retries and migrations."""
    import sqlalchemy

    args = {"connect_timeout": 10} if uri.startswith("postgresql") else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=args, poolclass=sqlalchemy.NullPool)
    except ModuleNotFoundError as err:
        raise AblateError(
            f"tracking URI {redact(uri)} needs the database driver {err.name}: "
            "pip install 'ablate[server]'"
        ) from None
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except Exception as err:  # noqa: BLE001 - the driver's own types: all mean the same
        raise AblateError(f"cannot use database {redact(uri)}: {_first_line(err)}") from None
    finally:
        engine.dispose()


class StoreLost(AblateError):
    """The tracking store stopped answering (a server or database gone)."""


def _unreachable(err: BaseException) -> bool:
    """A store that does not answer: a server's connection refused or timed out after
    MLflow's retries, a database connection lost (their words, whatever the type)."""
    text = str(err).lower()
    words = ("max retries exceeded", "connection refused", "failed to establish",
             "server closed the connection", "connection failed", "read timed out",
             "could not connect", "terminating connection")  # fmt: skip
    return any(word in text for word in words)


def _duplicate(err: BaseException) -> bool:
    """A write that lost a race to insert the same row (SQLite's and PostgreSQL's words)."""
    text = str(err).lower()
    return "unique constraint" in text or "duplicate key" in text


def _first_line(err: BaseException) -> str:
    """An error's message, one line, no password of the URI in it."""
    lines = [line.strip() for line in str(getattr(err, "orig", None) or err).splitlines()]
    return next((line for line in lines if line), type(err).__name__)[:300]


def existing(uri: str) -> Store | None:
    """The store at `uri`; None for a SQLite file not created yet (reading creates none)."""
    if uri.startswith("sqlite:///") and not _db(uri).is_file():
        return None
    return Store(uri)


class _Retrying:
    """An MlflowClient whose every call is retried on SQLite's 'database is locked'
    (another study writing)."""

    def __init__(self, client, attempts: int = 8, uri: str = ""):
        self._client, self._attempts, self._uri = client, attempts, uri

    def __getattr__(self, name: str):
        method = getattr(self._client, name)

        def call(*args, **kwargs):
            for i in range(self._attempts):
                try:
                    return method(*args, **kwargs)
                except Exception as err:  # noqa: BLE001 - only lock errors are retried
                    if (refused := refusal(err, self._uri)) is not None:
                        raise refused from None
                    if _unreachable(err):
                        raise StoreLost(
                            f"the tracking store {redact(self._uri)} stopped answering "
                            f"({_first_line(err)}); nothing is lost: run the same command "
                            "again once it answers (trials resume from their checkpoints)"
                        ) from None
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


@dataclass(frozen=True)
class CodeVersion:
    """The code a run was made with (ablations.environment.code_version)."""

    version: str
    commit: str = ""  # "" outside a git checkout
    dirty: bool = False
    model_source: dict[str, Any] | None = None  # a model builder's module, digest, commit

    def tags(self, source: str) -> dict[str, str]:
        tags = {Tag.VERSION: self.version, "mlflow.source.name": source}
        tags["mlflow.source.type"] = "LOCAL"
        if self.commit:
            tags[Tag.GIT_COMMIT] = self.commit
            tags[Tag.GIT_DIRTY] = "true" if self.dirty else "false"
        if self.model_source:
            tags[Tag.MODEL_SOURCE] = json.dumps(self.model_source, sort_keys=True)
        return tags


@dataclass(frozen=True)
class StudyRecord:
    """A study as the store records it on its parent run: what makes it (`definition`,
    whose digest is the `fingerprint`), what its trials record, and how its seeds are
    chosen."""

    name: str  # the MLflow experiment: NAME or NAME@PRESET
    question: str
    definition: dict[str, Any]  # each arm's science settings, the nuisance phase
    fingerprint: str
    settings: dict[str, str]  # {param: type name}
    model: str
    model_factors: tuple[str, ...]
    params: dict[str, Any]  # the parent run's params
    replication: str = "fixed seeds"  # the design that chooses the seeds, in words
    target_ci: float | None = None
    max_seeds: int | None = None
    planned: dict[str, list[int]] = field(default_factory=dict)  # seeds by arm


def describe_changes(old: dict, new: dict) -> str:
    """What differs between two study definitions (StudyRecord.definition), in a few words."""
    old_arms, new_arms = old.get("arms", {}), new["arms"]
    diffs = [f"arm {arm} removed" for arm in sorted(set(old_arms) - set(new_arms))]
    diffs += [f"arm {arm} added" for arm in sorted(set(new_arms) - set(old_arms))]
    for arm in sorted(set(old_arms) & set(new_arms)):
        for key in sorted(set(old_arms[arm]) | set(new_arms[arm])):
            a, b = old_arms[arm].get(key), new_arms[arm].get(key)
            if a != b:
                diffs.append(f"{key}: {a} -> {b}")
    if old.get("nuisance") != new.get("nuisance"):
        diffs.append("nuisance phase changed")
    unique = list(dict.fromkeys(diffs))
    more = f", and {len(unique) - 4} more" if len(unique) > 4 else ""
    return "changed: " + ", ".join(unique[:4]) + more if unique else "changed"


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
            self.client = _Retrying(MlflowClient(tracking_uri=uri), uri=uri)

    # -- the study: experiment and parent run ---------------------------------------------
    def _study(self, name: str) -> tuple:
        """The study's experiment and parent run (None where absent)."""
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            return None, None
        runs = self.client.search_runs(
            [exp.experiment_id], f"tags.`{Tag.ROLE}` = '{Role.PARENT}'", max_results=1
        )
        return exp, (runs[0] if runs else None)

    def find_study(self, name: str) -> StudyIds | None:
        exp, parent = self._study(name)
        return StudyIds(name, exp.experiment_id, parent.info.run_id) if parent else None

    def studies(self) -> dict[str, str]:
        """Every ablate study in the store: name -> experiment id."""
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        runs = self.client.search_runs(
            experiments or ["0"], f"tags.`{Tag.ROLE}` = '{Role.PARENT}'", max_results=1000
        )
        return {r.data.tags[Tag.STUDY]: r.info.experiment_id for r in runs}

    def check_study(self, record: StudyRecord) -> None:
        """Refuse a study whose stored namesake has another definition, naming what changed."""
        _, parent = self._study(record.name)
        if parent is None or parent.data.tags.get(Tag.FINGERPRINT) == record.fingerprint:
            return
        changed = self._changes(parent.info.run_id, record.definition)
        raise AblateError(
            f"the store {redact(self.uri)} holds study {record.name} with another definition "
            f"({changed}); use another --tracking-uri, or rename the study"
        )

    def _changes(self, parent_id: str, new: dict) -> str:
        import tempfile

        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = self.client.download_artifacts(parent_id, "study.json", tmp)
                old = json.loads(Path(path).read_text())
        except Exception:  # noqa: BLE001 - an older store without study.json
            return "its stored definition cannot be read to compare"
        return describe_changes(old, new)

    def open_study(self, record: StudyRecord, code: CodeVersion) -> StudyIds:
        """Get or create the study's experiment and parent run (the first write of a run)."""
        self.check_study(record)
        _, parent = self._study(record.name)
        exp_id = self.experiment_id(record.name)
        self.client.set_experiment_tag(exp_id, Tag.NOTE, record.question)
        parent_id = parent.info.run_id if parent else self._create_parent(exp_id, record, code)
        tags = {Tag.REPLICATION: record.replication}
        if record.target_ci is not None:
            tags |= {Tag.TARGET_CI: str(record.target_ci), Tag.MAX_SEEDS: str(record.max_seeds)}
        self.set_tags(parent_id, {**tags, **code.tags(f"ablate run {record.name}")})
        return StudyIds(record.name, exp_id, parent_id)

    def experiment_id(self, name: str) -> str:
        """The study's experiment, created if absent (two drivers creating it at once: the
        second finds the first's). Its kind is written either way: a writer without
        permission learns so here, before anything else of the study is written."""
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            location = None
            if self.uri.startswith("sqlite:///"):
                # Beside the database, not relative to whichever process's cwd writes first.
                location = (_db(self.uri).parent / "mlartifacts" / name).as_uri()
            try:
                exp_id = self.client.create_experiment(name, artifact_location=location)
            except Exception:
                if (exp := self.client.get_experiment_by_name(name)) is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
        for attempt in range(3):
            try:
                self.client.set_experiment_tag(
                    exp_id, "mlflow.experimentKind", "custom_model_development"
                )
                break
            except AblateError:
                raise
            except Exception as err:  # noqa: BLE001 - two drivers inserting the tag at once
                if attempt == 2 or not _duplicate(err):
                    raise
        return exp_id

    def _create_parent(self, exp_id: str, record: StudyRecord, code: CodeVersion) -> str:
        tags = {
            Tag.ROLE: Role.PARENT,
            Tag.STUDY: record.name,
            Tag.FINGERPRINT: record.fingerprint,
            Tag.SETTINGS: json.dumps(record.settings),
            Tag.MODEL: record.model,
            Tag.MODEL_FACTORS: json.dumps(list(record.model_factors)),
            Tag.NOTE: record.question,
        }
        run = self.client.create_run(exp_id, run_name=record.name, tags=tags)
        self._log_params(run.info.run_id, record.params)
        self.client.log_dict(run.info.run_id, record.definition, "study.json")
        return run.info.run_id

    def set_plan_size(self, study: StudyIds, planned: dict[str, list[int]]) -> None:
        """The planned seeds (by arm) and trials as they stand (they grow when seeds are
        added)."""
        seeds = sorted({s for arm_seeds in planned.values() for s in arm_seeds})
        tags = {Tag.SEEDS: json.dumps(seeds), Tag.PLANNED: json.dumps(planned)}
        tags[Tag.EXPECTED_TRIALS] = str(sum(len(v) for v in planned.values()))
        self.set_tags(study.parent_id, tags)

    # -- child runs -----------------------------------------------------------------------
    def trial_runs(self, study: StudyIds) -> list:
        """Every child run of the study (trials and tuning trials), in one search."""
        return self.client.search_runs(
            [study.experiment_id], f"tags.`{Tag.ROLE}` != '{Role.PARENT}'", max_results=50_000
        )

    def create_trial(
        self,
        study: StudyIds,
        key: str,
        arm: str,
        params: dict,
        code: CodeVersion,
        role: Role = Role.TRIAL,
    ) -> str:
        """A child run, pending until its trial starts (MLflow status SCHEDULED)."""
        tags = {
            Tag.PARENT_RUN: study.parent_id,
            Tag.ROLE: role,
            Tag.STUDY: study.name,
            Tag.TRIAL_KEY: key,
            Tag.ARM: arm,
            Tag.STATUS: TrialStatus.PENDING,
            **code.tags(f"ablate run {study.name}"),
        }
        run_id = self.client.create_run(study.experiment_id, run_name=key, tags=tags).info.run_id
        self.client.update_run(run_id, status="SCHEDULED")
        self._log_params(run_id, params)
        self.client.log_dict(run_id, params, "trial_config.json")
        return run_id

    def start(self, run_id: str) -> None:
        """A trial starts, or resumes: RUNNING."""
        self.client.update_run(run_id, status="RUNNING")
        self.set_tags(run_id, {Tag.STATUS: TrialStatus.RUNNING})

    def log_start(self, run_id: str, split: dict[str, Any], environment: dict[str, Any]) -> None:
        """Where the trial resumed from and its split (`resumed_from`, `val_digest`,
        `train_size`), and its process's manifest (ablations.environment.environment)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        env = environment
        tags = {Tag.RESUMED_FROM: split["resumed_from"], Tag.VAL_DIGEST: split["val_digest"]}
        tags[Tag.TRAIN_SIZE] = split["train_size"]
        tags[Tag.VERSIONS] = json.dumps(env["versions"], sort_keys=True)
        tags |= {Tag.DEVICE: env["device"], Tag.DATA_DIGEST: env["data_digest"]}
        self.set_tags(run_id, tags)
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
        tags = {Tag.CHECKPOINT: path}
        if previous:
            tags[Tag.CHECKPOINT_PREVIOUS] = previous
        self.set_tags(run_id, tags)

    def finish(
        self,
        run_id: str,
        status: TrialStatus,
        summary: dict[str, Any],
        lr_trace: dict[str, list],
        layer_responses: dict[str, list] | None,
    ) -> None:
        """A trial that ended training (finished or diverged) with its results. Logged once:
        a store that went away between this and the status tag leaves the trial unfinished,
        and its rerun ends it again from its last checkpoint."""
        step = int(summary["iterations"])
        logged = self.client.get_metric_history(run_id, "wall_time_s")
        if not any(m.step == step for m in logged):
            self._metrics(run_id, [("wall_time_s", summary["wall_time_s"], step)])
        self.client.log_dict(run_id, lr_trace, "lr_trace.json")
        if layer_responses:
            self.client.log_dict(run_id, layer_responses, "layer_responses.json")
        tags = {Tag.STATUS: status}
        if summary.get("diverged_at") is not None:
            tags[Tag.DIVERGED_AT] = str(summary["diverged_at"])
        self.set_tags(run_id, tags)
        self.client.set_terminated(run_id, "FINISHED")

    def fail(self, run_id: str, reason: str) -> None:
        line = " ".join(reason.split())[:REASON_LIMIT]
        self.set_tags(run_id, {Tag.ERROR: line, Tag.STATUS: TrialStatus.FAILED})
        self.client.set_terminated(run_id, "FAILED")

    def interrupt(self, run_id: str) -> None:
        """Stopped part-way: KILLED, resumable (the next run sets it RUNNING again)."""
        self.set_tags(run_id, {Tag.STATUS: TrialStatus.INTERRUPTED})
        self.client.set_terminated(run_id, "KILLED")

    # -- the end of a study ---------------------------------------------------------------
    def summarize(self, study: StudyIds, errors: dict[str, dict[str, list[float]]]) -> None:
        """Per-arm means on the parent run, so the MLflow UI's chart view of the study is
        not empty (step = finished seeds); `errors`: {split: {arm: final errors, points}}.
        Metric keys take no `=`: arms say `depth:20`."""
        means = [
            (f"mean_{split}_error/{arm.replace('=', ':')}", sum(v) / len(v) / 100, len(v))
            for split, by_arm in errors.items()
            for arm, v in by_arm.items()
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
    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(str(k), str(v)) for k, v in tags.items()])

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
