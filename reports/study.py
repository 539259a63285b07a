"""A study's numbers, computed once from what the store holds: what the report page shows,
the tables written beside it, and what `load_study` hands a notebook, so the three cannot
disagree; among them, whether the run is too reduced to answer its question."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from reports.data import (
    FINAL_METRICS,
    REPRO_TAGS,
    StudyData,
    StudyInfo,
    empty_runs,
    factor_names,
    select_trials,
    setting_names,
)
from reports.effects import Effects, factorial_effects
from reports.fetch import fetch_study
from reports.paper import CIFAR_ITERATIONS, normalize_dataset
from reports.tables import Counts, arm_table, count_trials, failure_groups, problem_table

CURVE_COLUMNS = ["trial_key", "arm", "seed", "iteration", "metric", "value"]
# A run with fewer iterations than this share of its full study's (or, for a ResNet on
# CIFAR-10, of the paper's 64k) checks the pipeline, not the question.
REDUCED_SHARE = 0.05


def max_iterations(trials: pd.DataFrame) -> int | None:
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
    iterations = max_iterations(trials)
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


@dataclass(frozen=True)
class Analysis:
    """Everything the page and the files say, computed from one StudyData."""

    data: StudyData
    runs: pd.DataFrame  # every child run
    trials: pd.DataFrame  # one row per trial key (select_trials)
    factors: list[str]
    counts: Counts
    reduced: Reduction
    arms: pd.DataFrame  # tables.arm_table
    effects: Effects
    problems: pd.DataFrame
    failures: list[tuple[int, str]]
    curves: pd.DataFrame  # CURVE_COLUMNS, one row per trial, metric and evaluation

    @property
    def info(self) -> StudyInfo:
        return self.data.info

    @property
    def evidence(self) -> bool:
        """A full run: its verdicts speak to the study's question."""
        return not self.reduced


def analyse(data: StudyData) -> Analysis:
    info = data.info
    runs = data.runs if not data.runs.empty else empty_runs()
    trials = select_trials(runs)
    factors = factor_names(info, trials) if not trials.empty else list(info.factors)
    reduced = reduction(info, trials if not trials.empty else runs)
    return Analysis(
        data=data,
        runs=runs,
        trials=trials,
        factors=factors,
        counts=count_trials(runs, info),
        reduced=reduced,
        arms=arm_table(trials, info, evidence=not reduced),
        effects=factorial_effects(trials, factors, evidence=not reduced, paper=info.resnet),
        problems=problem_table(runs, data.history),
        failures=failure_groups(trials),
        curves=_curves(runs, data.history),
    )


def _curves(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """The histories by trial: a trial resumed into a new run continues its curve there."""
    trials = runs[runs["role"] == "trial"]
    if trials.empty or history.empty:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    keys = trials[["run_id", "trial_key", "arm", "seed"]]
    curves = history.merge(keys, on="run_id").rename(columns={"key": "metric", "step": "iteration"})
    curves = curves.drop_duplicates(["trial_key", "metric", "iteration"], keep="last")
    return curves[CURVE_COLUMNS].sort_values(CURVE_COLUMNS[:5]).reset_index(drop=True)


def arms_frame(analysis: Analysis) -> pd.DataFrame:
    """arms.csv: the per-arm table, run ids and seeds joined with `;`."""
    arms = analysis.arms
    if arms.empty:
        return arms
    return arms.assign(
        run_ids=arms["run_ids"].map(";".join),
        seeds=arms["seeds"].map(lambda s: ";".join(map(str, s))),
    )


def trials_frame(analysis: Analysis) -> pd.DataFrame:
    """trials.csv: one row per trial: its key and arm, every setting (factors first),
    status, final metrics, cost and where and how it ran."""
    trials = analysis.trials
    if trials.empty:
        return trials
    columns = ["trial_key", "arm", *analysis.factors, "seed", *setting_names(analysis.info),
               "status", "diverged_at", "reason", *FINAL_METRICS, "params", "macs",
               *REPRO_TAGS, "run_id"]  # fmt: skip
    return trials[[c for c in dict.fromkeys(columns) if c in trials.columns]]


@dataclass(frozen=True)
class Study:
    """A study as a notebook sees it: the same numbers as its report.

    info: what the parent run says (question, factors, plan, model, target).
    trials: one row per trial (trials.csv): factor values and settings, status, final
        metrics, compute (params, macs, wall_time_s, images_per_s).
    arms: one row per arm (arms.csv): factor values, test error mean, std, n and 95% CI,
        the paper's number where it applies, Welch and Holm p against the reference arm,
        the verdict, and the precision target's status.
    curves: long frame trial_key, arm, seed, iteration, metric, value (errors as the
        fractions MLflow holds).
    effects: the factorial effects (effects.csv).
    """

    info: StudyInfo
    trials: pd.DataFrame
    arms: pd.DataFrame
    curves: pd.DataFrame
    effects: pd.DataFrame


def load_study(study: str, *, tracking_uri: str | None = None) -> Study:
    """A study's results (`study`: its MLflow experiment, NAME or NAME@PRESET, which is
    `plan.experiment`) from the store at `tracking_uri` (default: MLflow's). Raises
    ReportError as `ablate report` does."""
    analysis = analyse(fetch_study(study, tracking_uri))
    return Study(
        info=analysis.info,
        trials=trials_frame(analysis),
        arms=arms_frame(analysis),
        curves=analysis.curves,
        effects=analysis.effects.frame(),
    )
