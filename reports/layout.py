"""What ablate keeps in MLflow, by name (docs/tracking.md): the tags it sets on runs, the
roles of runs and the statuses of trials. ablations/tracking.py writes this layout and the
reports read it; both take the names from here, so a name is spelled once. Standard
library only: the command line imports it before anything heavy."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse, urlsplit, urlunsplit
from urllib.request import urlopen


class Tag(StrEnum):
    """The tags ablate sets on MLflow runs (docs/tracking.md)."""

    ROLE = "ablate.role"  # a Role
    STUDY = "ablate.study"
    STATUS = "ablate.status"  # a TrialStatus
    TRIAL_KEY = "ablate.trial_key"
    ARM = "ablate.arm"
    # the parent run: the study's definition and design
    FINGERPRINT = "ablate.fingerprint"
    SETTINGS = "ablate.settings"  # {param: type name} of every param a trial records
    MODEL = "ablate.model"
    MODEL_FACTORS = "ablate.model_factors"
    REPLICATION = "ablate.replication"
    TARGET_CI = "ablate.target_ci"
    MAX_SEEDS = "ablate.max_seeds"
    SEEDS = "ablate.seeds"
    PLANNED = "ablate.planned"
    EXPECTED_TRIALS = "ablate.expected_trials"
    # a trial's run
    CHECKPOINT = "ablate.checkpoint"
    CHECKPOINT_PREVIOUS = "ablate.checkpoint_previous"
    ERROR = "ablate.error"
    DIVERGED_AT = "ablate.diverged_at"
    RESUMED_FROM = "ablate.resumed_from"
    VAL_DIGEST = "ablate.val_digest"
    TRAIN_SIZE = "ablate.train_size"
    VERSIONS = "ablate.versions"
    DEVICE = "ablate.device"
    DATA_DIGEST = "ablate.data_digest"
    # the code version, on every run
    VERSION = "ablate.version"
    GIT_DIRTY = "ablate.git_dirty"
    MODEL_SOURCE = "ablate.model_source"
    # a driver's claim on a study (ablations/lease.py): a run without a role
    LEASE = "ablate.lease"  # "claim"
    LEASE_HELD = "ablate.lease_held"  # "true" once the claim won
    LEASE_HOST = "ablate.lease_host"
    LEASE_PID = "ablate.lease_pid"
    LEASE_HEARTBEAT = "ablate.lease_heartbeat"  # epoch milliseconds, the holder's clock
    # MLflow's own
    GIT_COMMIT = "mlflow.source.git.commit"
    NOTE = "mlflow.note.content"
    PARENT_RUN = "mlflow.parentRunId"


class Role(StrEnum):
    PARENT = "parent"  # the study
    TRIAL = "trial"  # an arm at a seed
    TUNE = "tune"  # a tuning trial of an arm


class TrialStatus(StrEnum):
    """How far a trial is: `Tag.STATUS` of its run."""

    PENDING = "pending"  # made, never started
    RUNNING = "running"
    INTERRUPTED = "interrupted"  # stopped part-way: resumes from its newest checkpoint
    FINISHED = "finished"
    DIVERGED = "diverged"  # ended training with a non-finite loss: never run again
    FAILED = "failed"  # a deterministic error: its reason is Tag.ERROR

    @property
    def done(self) -> bool:
        """Ended training: never run again."""
        return self in (TrialStatus.FINISHED, TrialStatus.DIVERGED)


def redact(uri: str) -> str:
    """The URI without a password, for messages (database URIs often carry one)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def server_problem(uri: str) -> str | None:
    """Why an http(s) tracking URI has no server answering (None: it answers, or is no
    server): MLflow retries a dead server for minutes, one probe of /health turns a typo
    into a clear message."""
    if urlparse(uri).scheme not in ("http", "https"):
        return None
    parts = urlsplit(uri)
    # urllib cannot take credentials in the URL; the probe needs none.
    health = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    try:
        with urlopen(f"{health.rstrip('/')}/health", timeout=10):
            pass
    except HTTPError:
        return None  # it answered; MLflow's own calls will say what is wrong, if anything
    except (URLError, OSError) as error:
        return f"cannot reach MLflow server {redact(uri)}: {getattr(error, 'reason', error)}"
    return None


# Reports on disk: ./ablate-reports/NAME by default, each folder marked with the store it
# was read from (redacted), so that two stores' reports of one study never overwrite each
# other and `ablate rm` knows which folder is the study's.
REPORTS_ROOT = Path("ablate-reports")
STORE_MARK = "store.txt"


def report_store(folder: Path) -> str | None:
    """The store a report folder was written from (None: no marked report there)."""
    mark = Path(folder) / STORE_MARK
    return mark.read_text(encoding="utf-8").strip() if mark.is_file() else None
