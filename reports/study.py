"""A study's numbers, computed once from what the store holds: what the report page shows,
the tables written beside it, and what `load_study` hands a notebook, so the three cannot
disagree."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from reports.context import Reduction, reduction
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
from reports.tables import Counts, arm_table, count_trials, failure_groups, problem_table

CURVE_COLUMNS = ["trial_key", "arm", "seed", "iteration", "metric", "value"]


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
    out = arms.copy()
    out["run_ids"] = out["run_ids"].map(lambda ids: ";".join(ids))
    out["seeds"] = out["seeds"].map(lambda s: ";".join(map(str, s)))
    return out


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


def load_study(name: str, tracking_uri: str | None = None) -> Study:
    """Study `name` (the MLflow experiment, e.g. `depth@demo`) read from the store at
    `tracking_uri` (default: MLflow's). Raises ReportError with a one-line reason, as
    `ablate report` does."""
    analysis = analyse(fetch_study(name, tracking_uri))
    return Study(
        info=analysis.info,
        trials=trials_frame(analysis),
        arms=arms_frame(analysis),
        curves=analysis.curves,
        effects=analysis.effects.frame(),
    )
