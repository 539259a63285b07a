"""What a study's trials actually ran: fixed settings, whether the run is a reduced version
of its study, and the code, libraries, devices and data each trial used. Frames in, plain
values out; the header renders them."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from reports.data import StudyInfo, setting_names
from reports.paper import CIFAR_ITERATIONS, normalize_dataset
from reports.tables import level_key, per_arm, plural

# A run with fewer iterations than this share of its full study's (or, for a ResNet on
# CIFAR-10, of the paper's 64k) checks the pipeline, not the question.
REDUCED_SHARE = 0.05


def show(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unset"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1000:
        return f"{value:,.0f}"
    return str(value)


def _distinct(column: pd.Series) -> list[Any]:
    """Distinct values in the paper's order, None (unset) included once."""
    values: dict[str, Any] = {}
    for value in column:
        values.setdefault(show(value), None if show(value) == "unset" else value)
    return sorted(values.values(), key=lambda v: (v is None, level_key(v) if v is not None else ()))


@dataclass(frozen=True)
class Settings:
    fixed: list[tuple[str, Any]]  # same in every trial
    varying: list[tuple[str, list[Any]]]  # differs between trials (factors and seed aside)


def settings_of(trials: pd.DataFrame, info: StudyInfo, factors: list[str]) -> Settings:
    """Every resolved setting (`ablate.settings`), split into those fixed for all trials
    and those that vary although they are no scientific factor (a tuned nuisance setting,
    or a study edited mid-way)."""
    fixed, varying = [], []
    if trials.empty:
        return Settings([], [])
    for name in setting_names(info):
        if name == "seed" or name not in trials.columns:
            continue
        values = _distinct(trials[name])
        if len(values) == 1:
            fixed.append((name, values[0]))
        elif name not in factors:
            varying.append((name, values))
    return Settings(fixed, varying)


def _iterations(trials: pd.DataFrame) -> int | None:
    if "iterations" not in trials.columns:
        return None
    values = pd.to_numeric(trials["iterations"], errors="coerce").dropna()
    return int(values.max()) if not values.empty else None


# Trials this short (a smoke preset's tens of iterations) can only show that the pipeline
# runs; longer reduced runs (the digits demo's 240) show effects of their own setting.
PLUMBING_ITERATIONS = 100


def _share(part: int, whole: int) -> str:
    pct = 100 * part / whole
    return f"{pct:.2f}%" if pct < 1 else f"{pct:.1f}%" if pct < 10 else f"{pct:.0f}%"


@dataclass(frozen=True)
class Reduction:
    """Why this run cannot answer its study's question; empty when it can."""

    reasons: list[str] = field(default_factory=list)
    against_paper: bool = False  # reduced against the paper's recipe, not a full study
    plumbing: bool = False  # so short that it can only check the pipeline

    def __bool__(self) -> bool:
        return bool(self.reasons)

    def sentence(self) -> str:
        what = (
            "This run is far shorter than the paper's recipe"
            if self.against_paper
            else "This run is a reduced version of the study"
        )
        meaning = (
            "It checks the pipeline; its verdicts are no evidence for the study's question."
            if self.plumbing
            else "Its verdicts hold for this reduced setting only; they are no evidence for "
            "the study's question."
        )
        return f"{what}: {', '.join(self.reasons)}. {meaning}"


def reduction(info: StudyInfo, trials: pd.DataFrame) -> Reduction:
    """Another data set than the full study's (`full_dataset`), fewer than 5% of its
    iterations (`full_iterations`), or, for a ResNet on CIFAR-10, fewer than 5% of the
    paper's 64k."""
    dataset = info.dataset
    iterations = _iterations(trials)
    reasons = []
    other_data = bool(info.full_dataset) and normalize_dataset(dataset) != normalize_dataset(
        info.full_dataset
    )
    if other_data:
        reasons.append(f"{dataset or 'another data set'} instead of {info.full_dataset}")
    full = info.full_iterations
    if iterations is not None and full and iterations < full:
        if other_data or iterations < REDUCED_SHARE * full:
            most = "at most " if trials["iterations"].nunique() > 1 else ""
            share = _share(iterations, full)
            reasons.append(f"{most}{iterations:,} of {full:,} iterations per trial ({share})")
    plumbing = iterations is not None and iterations < PLUMBING_ITERATIONS
    if reasons:
        return Reduction(reasons, plumbing=plumbing)
    cifar = info.resnet and normalize_dataset(dataset) == "cifar10"
    if cifar and iterations is not None and iterations < REDUCED_SHARE * CIFAR_ITERATIONS:
        share = _share(iterations, CIFAR_ITERATIONS)
        paper = f"{CIFAR_ITERATIONS:,}"
        return Reduction(
            [f"{iterations:,} of the paper's {paper} iterations per trial on CIFAR-10 ({share})"],
            against_paper=True,
            plumbing=plumbing,
        )
    return Reduction()


def what_ran(info: StudyInfo, trials: pd.DataFrame, factors: list[str]) -> str:
    """One line: the factors and levels, data set, the model builder's fixed settings,
    iterations and seeds this run actually trained."""
    if trials.empty:
        return "No trial has been recorded yet."
    parts = []
    levels = [
        f"{f} ({', '.join(show(v) for v in _distinct(trials[f]))})"
        for f in factors
        if f in trials.columns
    ]
    if levels:
        parts.append(" × ".join(levels))
    dataset = info.dataset
    if dataset:
        parts.append(f"on {dataset}")
    fixed = [
        f"{name} {show(trials[name].iloc[0])}"
        for name in info.model_factors
        if name in trials.columns and name not in factors and len(_distinct(trials[name])) == 1
    ]
    if fixed:
        parts.append("fixed " + ", ".join(fixed))
    iterations = _iterations(trials)
    if iterations is not None:
        varied = trials["iterations"].nunique() > 1
        parts.append(f"{'up to ' if varied else ''}{iterations:,} iterations per trial")
    seen = _distinct(trials["seed"].dropna()) if "seed" in trials.columns else []
    seeds = sorted({*info.seeds, *seen}, key=level_key)
    if seeds:
        each = per_arm(list(trials.groupby("arm").size()))
        parts.append(f"seeds {', '.join(map(str, seeds))} ({each})")
    return "Ran here: " + "; ".join(parts) + "."


@dataclass(frozen=True)
class Reproducibility:
    facts: list[tuple[str, str]]  # (label, text), in header order
    warnings: list[str]


def _tally(values: pd.Series, label: str = "") -> str:
    """'x' when every trial recorded x, else each value with its count of trials."""
    counts = Counter(values)
    if not counts:
        return "not recorded"
    if len(counts) == 1:
        return f"{next(iter(counts))}{label}"
    return "; ".join(f"{v} ({plural(n, 'trial')})" for v, n in counts.most_common())


def _versions(text: str) -> str:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return text
    return ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else text


def _recorded(trials: pd.DataFrame, column: str) -> pd.Series:
    if column not in trials.columns:
        return pd.Series(dtype=object)
    values = trials[column].fillna("").astype(str).str.strip()
    return values[values != ""]


def reproducibility(trials: pd.DataFrame, info: StudyInfo) -> Reproducibility:
    """Code version, libraries, devices, precision and data digests of the trials that
    ran, from their tags (docs/tracking.md), and warnings where trials of one study differ
    in code or data."""
    ran = trials[trials["status"] != "pending"] if not trials.empty else trials
    warnings = []
    commits = _recorded(ran, "git_commit")
    dirty = _recorded(ran, "git_dirty").str.lower().eq("true").reindex(ran.index, fill_value=False)
    if commits.empty:
        driver = f"; driver at {info.git_commit[:12]}" if info.git_commit else ""
        code = f"not recorded by the trials{driver}"
    else:
        labels = commits.str[:12] + dirty[commits.index].map(
            {True: " with uncommitted changes", False: ""}
        )
        code = _tally(labels, "" if dirty.any() else " (clean checkout)")
        if commits.nunique() > 1:
            warnings.append(
                f"The trials ran on {commits.nunique()} different code versions "
                f"({_tally(commits.str[:12])}): a difference between arms may come "
                "from the code, not the factors."
            )
    if dirty.any():
        warnings.append(
            f"{plural(int(dirty.sum()), 'trial')} ran from a checkout with uncommitted "
            "changes (ablate.git_dirty): the commit alone does not recover their code."
        )
    versions = _recorded(ran, "versions").map(_versions)
    if versions.nunique() > 1:
        warnings.append(
            f"The trials ran with {versions.nunique()} different sets of library versions."
        )
    digests = _recorded(ran, "data_digest")
    data = ran.loc[digests.index, "dataset"].astype(str) if not digests.empty else digests
    several = data.nunique() > 1
    for name, group in digests.groupby(data):
        if group.nunique() > 1:
            warnings.append(
                f"The trials trained on {group.nunique()} different versions of the data "
                f"{name} ({_tally(group)}): their results are not comparable as one study."
            )
    facts = [
        ("Code version", code),
        ("Libraries (training)", _tally(versions)),
        ("Devices", _tally(_recorded(ran, "device"))),
        ("Precision", _tally(_recorded(ran, "precision"))),
        ("Data digest", _tally(digests + " (" + data + ")" if several else digests)),
    ]
    return Reproducibility(facts, warnings)
