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
    # Reproducibility, per trial (docs/tracking.md, child-run tags).
    "git_commit",
    "git_dirty",
    "versions",
    "device",
    "data_digest",
)
# Where each reproducibility column comes from.
REPRO_TAGS = {
    "git_commit": "mlflow.source.git.commit",
    "git_dirty": "ablate.git_dirty",
    "versions": "ablate.versions",
    "device": "ablate.device",
    "data_digest": "ablate.data_digest",
}
# Ended first; a trial that has not ended is running, interrupted (stopped, resumable) or
# pending (never started).
STATUSES = ("finished", "diverged", "failed", "running", "interrupted", "pending")
NOT_ENDED = ("running", "interrupted", "pending")

# Every setting a trial records as a param, in docs/tracking.md's order. A store written
# with the parent tag `ablate.settings` names its settings (and their types) itself; this
# list and the typed sets below only read stores written before that tag existed.
KNOWN_SETTINGS = (
    "depth",
    "shortcut",
    "skip_length",
    "bottleneck",
    "preactivation",
    "stem",
    "width",
    "dataset",
    "val_size",
    "iterations",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "lr_policy",
    "warmup",
    "warmup_lr",
    "plateau_patience",
    "eval_every",
    "precision",
    "seed",
)
# Params as the runner writes them are text; these are the typed ones (fallback).
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
TYPES = ("int", "float", "bool", "str")


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
    git_dirty: str = ""
    # `ablate.settings`: {setting name: int | float | bool | str}; empty in older stores.
    settings: dict[str, str] = field(default_factory=dict)
    replication: str = ""
    # The full study a preset reduces (equal to this run's without a preset).
    full_dataset: str = ""
    full_iterations: int | None = None


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


def parse_param(name: str, value: Any, types: dict[str, str] | None = None) -> Any:
    """Type a param's text by `types` (the parent's `ablate.settings`), or, for a name it
    does not list, by the documented meaning; leave unknown or odd ones alone. The text
    `None` is an unset setting (docs/tracking.md)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    if text == "None":
        return None
    kind = (types or {}).get(name)
    if kind not in TYPES:
        kind = _documented_type(name)
    try:
        if kind == "int":
            try:
                return int(text)
            except ValueError:
                return int(float(text))
        if kind == "float":
            return float(text)
    except ValueError:
        return text
    if kind == "bool":
        return text.strip().lower() in ("true", "1", "yes")
    return text


def _documented_type(name: str) -> str:
    for kind, names in (("int", INT_PARAMS), ("float", FLOAT_PARAMS), ("bool", BOOL_PARAMS)):
        if name in names:
            return kind
    return "str"


def parse_json(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default


def trial_status(tag: str | None, mlflow_status: str | None) -> str:
    """The trial's status from `ablate.status`, falling back on MLflow's run status for
    runs that carry none (docs/tracking.md: SCHEDULED while pending, KILLED when
    interrupted). Stores written before `interrupted` existed left a stopped trial tagged
    `running` with MLflow status KILLED: that is an interrupted trial too."""
    if tag == "running" and mlflow_status == "KILLED":
        return "interrupted"
    if tag in STATUSES:
        return tag
    return {
        "FAILED": "failed",
        "FINISHED": "finished",
        "SCHEDULED": "pending",
        "KILLED": "interrupted",
    }.get(mlflow_status or "", "running")


_STATUS_RANK = {status: rank for rank, status in enumerate(STATUSES)}


def select_trials(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per trial_key among role=trial runs.

    A trial that was retried has several runs; the best-ended one counts (in STATUSES
    order: finished over diverged over failed over the ones not ended), the latest among
    equals.
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


def setting_names(info: StudyInfo, trials: pd.DataFrame) -> list[str]:
    """The params that are settings: the parent's `ablate.settings`, in its order, or, in
    an older store, the documented settings the runs record."""
    if info.settings:
        return list(info.settings)
    return [name for name in KNOWN_SETTINGS if name in trials.columns]


def decode(type_name: str, text: str | None) -> Any:
    """A param's text back to its value ("None" is unset); ValueError on junk."""
    if text is None or text == "None":
        return None
    if type_name == "bool":
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(f"{text!r} is not true or false")
    if type_name == "int":
        value = float(text)
        if not value.is_integer():
            raise ValueError(f"{text!r} is not a whole number")
        return int(value)
    if type_name == "float":
        return float(text)
    return text
