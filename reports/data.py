"""The shape of a study as the report sees it: plain DataFrames, no MLflow objects.

`reports.fetch` fills these from MLflow; tests build them by hand. Column names follow
docs/tracking.md (one name per concept): params keep their names (`depth`, `shortcut`),
final metric values keep their keys (`test/error`), tag-derived columns are listed in
TAG_COLUMNS.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

# Final values taken from each run's latest metrics (MLflow keeps the value at the
# highest step, which is the end of training).
FINAL_METRICS = (
    "train/error",
    "val/error",
    "test/error",
    "train/loss",
    "test/loss",
    "images_per_s",
    "wall_time_s",
)
# Histories the report plots (Fig. 6); fetching fewer keys keeps big studies fast.
HISTORY_METRICS = ("train/error", "test/error")

# Columns that come from tags and run info rather than params.
TAG_COLUMNS = (
    "run_id",
    "role",
    "arm",
    "trial_key",
    "status",
    "mlflow_status",
    "diverged_at",
    "reason",
    "start_time",
)
STATUSES = ("finished", "diverged", "failed", "running")

# Params as the runner writes them are strings; these are the typed ones.
INT_PARAMS = {
    "depth",
    "skip_length",
    "width",
    "num_classes",
    "in_channels",
    "iterations",
    "batch_size",
    "plateau_patience",
    "eval_every",
    "val_size",
    "seed",
    "params",
    "macs",
}
FLOAT_PARAMS = {"lr", "momentum", "weight_decay", "warmup_lr"}
BOOL_PARAMS = {"bottleneck", "preactivation"}
# The fixed training settings the header states (issue 5).
RECIPE_PARAMS = ("lr", "lr_policy", "iterations", "batch_size", "weight_decay", "warmup")


@dataclass(frozen=True)
class StudyInfo:
    """What the parent run says about the study. Every field may be missing from an
    older or half-written store, so all have defaults."""

    name: str
    experiment_id: str = ""
    parent_run_id: str | None = None
    parent_status: str | None = None
    question: str = ""
    dataset: str = ""
    reference: dict[str, Any] = field(default_factory=dict)
    factors: list[str] = field(default_factory=list)
    seeds: list[Any] = field(default_factory=list)
    preset: str = ""
    fingerprint: str = ""
    expected_trials: int | None = None
    git_commit: str = ""


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
    history: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["run_id", "key", "step", "value"])
    )
    lr_traces: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["run_id", "iteration", "lr"])
    )
    layer_responses: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["run_id", "layer", "name", "std"])
    )
    notes: list[str] = field(default_factory=list)


def empty_runs() -> pd.DataFrame:
    """The runs frame of a study with no child runs yet."""
    return pd.DataFrame(columns=list(TAG_COLUMNS))


def parse_param(name: str, value: Any) -> Any:
    """Type a param string by its documented meaning; leave unknown or odd ones alone."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    try:
        if name in INT_PARAMS:
            return int(float(text))
        if name in FLOAT_PARAMS:
            return float(text)
    except ValueError:
        return text
    if name in BOOL_PARAMS:
        return text.strip().lower() in ("true", "1", "yes")
    return text


def parse_json(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default


def trial_status(tag: str | None, mlflow_status: str | None) -> str:
    """The trial's status from `ablate.status`, falling back on MLflow's run status for
    runs that carry none.

    "running" covers every trial that has not ended: still training, or interrupted
    (the runner marks those KILLED with the tag `interrupted` until it resumes them).
    """
    if tag in ("finished", "diverged", "failed", "running"):
        return tag
    if mlflow_status == "FAILED":
        return "failed"
    if mlflow_status == "FINISHED":
        return "finished"
    return "running"


_STATUS_RANK = {"finished": 0, "diverged": 1, "failed": 2, "running": 3}


def select_trials(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per trial_key among role=trial runs.

    A trial that was retried has several runs; the best-ended one counts (finished over
    diverged over failed over running), the latest among equals.
    """
    trials = runs[runs["role"] == "trial"].copy()
    if trials.empty:
        return trials
    trials["_rank"] = trials["status"].map(_STATUS_RANK).fillna(9)
    trials = trials.sort_values(["_rank", "start_time"], ascending=[True, False])
    trials = trials.drop_duplicates("trial_key", keep="first").drop(columns="_rank")
    return trials.sort_values(["arm", "trial_key"]).reset_index(drop=True)


def factor_names(info: StudyInfo, trials: pd.DataFrame) -> list[str]:
    """The study's scientific factors; when the parent does not list them, the params
    that vary between arms (seed excepted)."""
    if info.factors:
        return [f for f in info.factors if f in trials.columns]
    skip = set(TAG_COLUMNS) | set(FINAL_METRICS) | {"seed", "params", "macs"}
    varying = []
    for column in trials.columns:
        if column in skip:
            continue
        if trials[column].astype(str).nunique() > 1:
            varying.append(column)
    return varying
