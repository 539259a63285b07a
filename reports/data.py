"""The shape of a study as the report sees it: plain DataFrames, no MLflow objects, and
`decode`, the one reader of a param's text (the runner reads params back with it too).

`reports.fetch` fills these from MLflow; tests build them by hand. Columns follow
docs/tracking.md: params and final metrics keep their names (`depth`, `test/error`),
tag-derived columns are TAG_COLUMNS. Which params exist, and their types, come from the
study itself (the parent's `ablate.settings`), never from a list here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from reports.layout import Tag, TrialStatus

# Final values taken from each run's latest metrics (MLflow keeps the value at the
# highest step, which is the end of training).
FINAL_METRICS = ("train/error", "val/error", "test/error", "train/loss", "test/loss",
                 "images_per_s", "wall_time_s")  # fmt: skip
# Histories the report plots (Fig. 6); fetching fewer keys keeps big studies fast.
HISTORY_METRICS = ("train/error", "test/error")
# Columns that come from tags and run info rather than params, the last five the
# reproducibility tags of docs/tracking.md (REPRO_TAGS says which).
TAG_COLUMNS = ("run_id", "role", "arm", "trial_key", "status", "mlflow_status", "diverged_at",
               "reason", "start_time", "git_commit", "git_dirty", "versions", "device",
               "data_digest")  # fmt: skip
REPRO_TAGS = {
    "git_commit": Tag.GIT_COMMIT,
    "git_dirty": Tag.GIT_DIRTY,
    "versions": Tag.VERSIONS,
    "device": Tag.DEVICE,
    "data_digest": Tag.DATA_DIGEST,
}
# Ended first; a trial that has not ended is running, interrupted (stopped, resumable) or
# pending (never started).
STATUSES = tuple(TrialStatus)
NOT_ENDED = (TrialStatus.RUNNING, TrialStatus.INTERRUPTED, TrialStatus.PENDING)
# Params the runner derives from the data and the model, or from tuning (docs/tracking.md):
# typed by `ablate.settings` like the rest, but nobody chose them, so they are no settings.
DERIVED = ("num_classes", "in_channels", "params", "macs", "tuned_from")
# The built-in ResNet builder: the paper's numbers and figures apply to its nets only.
RESNET = "resnet.spec:resnet"


def _bool(text: str) -> bool:
    word = text.strip().lower()
    if word not in ("true", "1", "yes", "false", "0", "no"):
        raise ValueError(word)
    return word in ("true", "1", "yes")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        number = float(text)  # "3.0" is 3; "3.5", "inf" and "nan" are no int
        if not number.is_integer():
            raise
        return int(number)


_DECODERS = {"int": _int, "float": float, "bool": _bool, "str": str}


def decode(type_name: str, text: str | None) -> Any:
    """A param's text as a value of its recorded type (`int`, `float`, `bool`, `str`).

    None and the text `None` are an unset setting. bool takes true/false/1/0/yes/no in any
    case; int takes "3" and "3.0" but not "3.5". Anything else raises ValueError: a junk
    value is never read as False or 0."""
    if type_name not in _DECODERS:
        raise ValueError(f"unknown type {type_name!r} (int, float, bool or str)")
    if text is None or text == "None":
        return None
    try:
        return _DECODERS[type_name](text)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid {type_name}") from None


@dataclass(frozen=True)
class StudyInfo:
    """What the parent run says about the study (docs/tracking.md). The plan's size is the
    one the tags hold now: adaptive replication grows it after the params were written."""

    name: str
    experiment_id: str = ""
    parent_run_id: str | None = None
    parent_status: str | None = None
    question: str = ""
    dataset: str = ""
    reference: dict[str, Any] = field(default_factory=dict)
    factors: list[str] = field(default_factory=list)
    seeds: list[Any] = field(default_factory=list)  # every seed planned (`ablate.seeds`)
    planned: dict[str, list[Any]] = field(default_factory=dict)  # arm -> its seeds
    preset: str = ""
    fingerprint: str = ""
    expected_trials: int | None = None
    git_commit: str = ""
    git_dirty: str = ""
    # `ablate.settings`: {param name: int | float | bool | str}, every param a run records.
    settings: dict[str, str] = field(default_factory=dict)
    replication: str = ""
    # The full study a preset reduces (equal to this run's without a preset).
    full_dataset: str = ""
    full_iterations: int | None = None
    model: str = RESNET  # the builder, "module:function"
    model_factors: list[str] = field(default_factory=list)  # that builder's settings
    target_ci: float | None = None  # wanted 95% CI half-width of an arm's mean, points
    max_seeds: int | None = None

    @property
    def resnet(self) -> bool:
        """Trained with the built-in ResNet builder, so the papers' numbers can apply."""
        return self.model == RESNET


@dataclass
class StudyData:
    """Everything a report needs.

    runs: one row per child run (trial and tune roles), TAG_COLUMNS + params + final
        metrics. Several runs may share a trial_key (retries); `select_trials` picks one.
    history: long frame run_id, key, step, value.
    lr_traces: long frame run_id, iteration, lr.
    layer_responses: long frame run_id, layer (1-based), name, std.
    notes: problems met while reading the store, shown in the report.
    """

    info: StudyInfo
    runs: pd.DataFrame
    history: pd.DataFrame = field(default_factory=lambda: _frame("run_id key step value"))
    lr_traces: pd.DataFrame = field(default_factory=lambda: _frame("run_id iteration lr"))
    layer_responses: pd.DataFrame = field(default_factory=lambda: _frame("run_id layer name std"))
    notes: list[str] = field(default_factory=list)


def _frame(columns: str) -> pd.DataFrame:
    return pd.DataFrame(columns=columns.split())


def empty_runs() -> pd.DataFrame:
    """The runs frame of a study with no child runs yet."""
    return pd.DataFrame(columns=list(TAG_COLUMNS))


def parse_json(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default


_STATUS_RANK = {status: rank for rank, status in enumerate(STATUSES)}


def select_trials(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per trial_key among role=trial runs: of a retried trial's runs the
    best-ended (in STATUSES order) counts, the latest among equals."""
    trials = runs[runs["role"] == "trial"].copy()
    trials["_rank"] = trials["status"].map(_STATUS_RANK).fillna(9)
    trials = trials.sort_values(["_rank", "start_time"], ascending=[True, False])
    trials = trials.drop_duplicates("trial_key", keep="first").drop(columns="_rank")
    return trials.sort_values(["arm", "trial_key"]).reset_index(drop=True)


def factor_names(info: StudyInfo, trials: pd.DataFrame) -> list[str]:
    """The study's scientific factors that its trials record."""
    return [f for f in info.factors if f in trials.columns]


def setting_names(info: StudyInfo) -> list[str]:
    """The params that are settings, in `ablate.settings` order (derived params aside)."""
    return [name for name in info.settings if name not in DERIVED]
