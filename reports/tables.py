"""Report tables as DataFrames: trial counts, the recipe, the per-arm comparison, problems.

Errors are fractions in MLflow (docs/tracking.md) and percent here, as in the paper;
columns holding percent end in `_pct`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from reports import stats
from reports.data import RECIPE_PARAMS, StudyInfo, factor_names, select_trials
from reports.paper import CIFAR_ITERATIONS, normalize_dataset, paper_result

SHORTCUT_ORDER = {"none": 0, "A": 1, "B": 2, "C": 3}


def level_key(value: Any) -> tuple:
    """Sort levels the way the paper lists them: numbers ascending, plain before A/B/C."""
    if isinstance(value, bool):
        return (1, int(value), "")
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        pass
    return (2, SHORTCUT_ORDER.get(str(value), 9), str(value))


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@dataclass(frozen=True)
class Counts:
    finished: int
    diverged: int
    failed: int
    running: int
    missing: int
    expected: int | None
    expected_estimated: bool
    retried: int
    tune_runs: int
    partial_reasons: list[str] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        return bool(self.partial_reasons)

    @property
    def seen(self) -> int:
        return self.finished + self.diverged + self.failed + self.running


def count_trials(runs: pd.DataFrame, info: StudyInfo, expected_trials: int | None = None) -> Counts:
    """Counts of trials by status and of missing ones. `expected_trials` (or the parent's
    param) is the plan's number of seed-trials; without either, the plan is guessed as
    every arm seen times every seed, which cannot see an arm that never started."""
    trials = select_trials(runs)
    by_status = trials["status"].value_counts() if not trials.empty else pd.Series(dtype=int)
    seen = len(trials)
    expected = expected_trials if expected_trials is not None else info.expected_trials
    estimated = False
    if expected is None and not trials.empty and info.seeds:
        expected = trials["arm"].nunique() * len(info.seeds)
        estimated = True
    missing = max(0, expected - seen) if expected is not None else 0
    running = int(by_status.get("running", 0))
    reasons = []
    if missing:
        reasons.append(f"{missing} of {expected} planned trials have no run yet")
    if running:
        reasons.append(
            f"{plural(running, 'trial')} not ended (still running, or interrupted and not "
            "yet resumed)"
        )
    if info.parent_status == "RUNNING":
        reasons.append("the study's parent run has not finished")
    elif info.parent_status == "KILLED":
        reasons.append("the study was interrupted (run it again to resume)")
    if seen == 0:
        reasons.append("no trial has been recorded yet")
    role_trial = runs[runs["role"] == "trial"] if not runs.empty else runs
    return Counts(
        finished=int(by_status.get("finished", 0)),
        diverged=int(by_status.get("diverged", 0)),
        failed=int(by_status.get("failed", 0)),
        running=running,
        missing=missing,
        expected=expected,
        expected_estimated=estimated,
        retried=len(role_trial) - seen,
        tune_runs=int((runs["role"] == "tune").sum()) if not runs.empty else 0,
        partial_reasons=reasons,
    )


def recipe(trials: pd.DataFrame, factors: list[str]) -> list[tuple[str, str]]:
    """The fixed training settings as (name, text); a setting that differs between trials
    says so instead of pretending to be fixed."""
    out = []
    for name in (*RECIPE_PARAMS, "momentum"):
        if name not in trials.columns:
            out.append((name, "not recorded"))
            continue
        values = sorted({v for v in trials[name].dropna()}, key=level_key)
        if not values:
            out.append((name, "not recorded"))
        elif len(values) == 1:
            out.append((name, str(values[0])))
        else:
            why = "scientific factor" if name in factors else "differs between trials"
            out.append((name, f"{', '.join(map(str, values))} ({why})"))
    return out


def _arm_values(rows: pd.DataFrame, factors: list[str]) -> dict[str, Any]:
    first = rows.iloc[0]
    return {f: first[f] for f in factors}


def _pct(rows: pd.DataFrame, key: str) -> np.ndarray:
    if key not in rows.columns:
        return np.array([])
    return 100.0 * pd.to_numeric(rows[key], errors="coerce").to_numpy(dtype=float)


def _mean(rows: pd.DataFrame, key: str) -> float:
    if key not in rows.columns:
        return math.nan
    values = stats.finite(pd.to_numeric(rows[key], errors="coerce"))
    return float(values.mean()) if values.size else math.nan


def arm_table(trials: pd.DataFrame, info: StudyInfo) -> pd.DataFrame:
    """One row per arm: final errors over finished seeds, cost, the paper's number, and
    Welch's test against the matching reference arm with Holm's correction across arms.

    `trials` is select_trials() output. Diverged trials are counted but left out of the
    error statistics (their last errors are not the end of training); the row shows how
    many there were so an arm that diverges often cannot hide.
    """
    factors = factor_names(info, trials)
    if trials.empty:
        return pd.DataFrame()
    rows = []
    for arm, group in trials.groupby("arm", sort=False):
        done = group[group["status"] == "finished"]
        test = stats.summarize(_pct(done, "test/error"))
        values = _arm_values(group, factors)
        settings = group.iloc[0].to_dict()
        row: dict[str, Any] = {
            "arm": arm,
            **values,
            "finished": len(done),
            "diverged": int((group["status"] == "diverged").sum()),
            "failed": int((group["status"] == "failed").sum()),
            "running": int((group["status"] == "running").sum()),
            "test_error_pct_mean": test.mean,
            "test_error_pct_std": test.std,
            "test_error_pct_n": test.n,
            "test_error_pct_ci_low": test.ci_low,
            "test_error_pct_ci_high": test.ci_high,
            "val_error_pct_mean": stats.summarize(_pct(done, "val/error")).mean,
            "train_error_pct_mean": stats.summarize(_pct(done, "train/error")).mean,
            "train_error_pct_std": stats.summarize(_pct(done, "train/error")).std,
            "params": _mean(group, "params"),
            "macs": _mean(group, "macs"),
            "images_per_s": _mean(done, "images_per_s"),
            "wall_time_s": _mean(done, "wall_time_s"),
            "run_ids": list(group["run_id"]),
            "seeds": list(group["seed"]) if "seed" in group.columns else [],
        }
        row.update(_paper_columns(settings, info, test))
        rows.append(row)
    rows.sort(key=lambda r: [level_key(r[f]) for f in factors])
    table = pd.DataFrame(rows)
    return _add_tests(table, trials, info, factors)


def _paper_columns(settings: dict[str, Any], info: StudyInfo, test: stats.Summary) -> dict:
    # A param absent from this run is NaN in the frame; the paper lookup wants None.
    settings = {k: v for k, v in settings.items() if not (isinstance(v, float) and math.isnan(v))}
    if not settings.get("dataset") and info.dataset:
        settings = {**settings, "dataset": info.dataset}
    found = paper_result(settings)
    if found is None:
        return {"paper_test_error_pct": math.nan, "paper_source": "", "paper_gap_sd": math.nan}
    gap = (test.mean - found.test_error_pct) / test.std if test.std > 0 else math.nan
    source = found.source + (f" ({found.note})" if found.note else "")
    iterations = settings.get("iterations")
    if normalize_dataset(settings.get("dataset")) == "cifar10" and iterations not in (
        None,
        CIFAR_ITERATIONS,
    ):
        source += f"; paper trained {CIFAR_ITERATIONS} iterations, this arm {iterations}"
    return {
        "paper_test_error_pct": found.test_error_pct,
        "paper_source": source,
        "paper_gap_sd": gap,
    }


def _matches(values: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return all(str(values.get(k)) == str(v) for k, v in wanted.items())


def _add_tests(
    table: pd.DataFrame, trials: pd.DataFrame, info: StudyInfo, factors: list[str]
) -> pd.DataFrame:
    """Each arm against the reference arm that shares its other factor values."""
    reference = {k: v for k, v in info.reference.items() if k in factors}
    finished = trials[trials["status"] == "finished"]
    errors = {arm: _pct(g, "test/error") for arm, g in finished.groupby("arm")}
    ref_arm, diffs, ses, ps, verdicts = [], [], [], [], []
    tests: list[tuple[int, stats.Welch, str, str, int, int]] = []
    records = table.to_dict("records")
    # Arms by their factor values (as text: the reference JSON says 20, the params "20").
    by_values = {}
    for j, r in enumerate(records):
        by_values.setdefault(tuple(str(r[f]) for f in factors), j)
    for i, row in enumerate(records):
        values = {f: row[f] for f in factors}
        diffs.append(math.nan)
        ses.append(math.nan)
        ps.append(math.nan)
        if not reference:
            ref_arm.append("")
            verdicts.append("the study names no reference arm")
            continue
        if _matches(values, reference):
            ref_arm.append(row["arm"])
            verdicts.append("reference")
            continue
        wanted = {**values, **reference}
        match = by_values.get(tuple(str(wanted[f]) for f in factors))
        label = " ".join(f"{k}={v}" for k, v in wanted.items())
        if match is None:
            ref_arm.append("")
            verdicts.append(f"no reference arm ({label}) in this study's runs")
            continue
        ref_row = records[match]
        ref_arm.append(ref_row["arm"])
        a = errors.get(row["arm"], np.array([]))
        b = errors.get(ref_row["arm"], np.array([]))
        result = stats.welch(a, b)
        diffs[-1], ses[-1], ps[-1] = result.diff, result.se, result.p
        short_arm = " ".join(f"{k}={values[k]}" for k in reference)
        short_ref = " ".join(f"{k}={v}" for k, v in reference.items())
        n_a, n_b = stats.finite(a).size, stats.finite(b).size
        tests.append((i, result, short_arm, short_ref, n_a, n_b))
        verdicts.append("")
    holm = stats.holm(ps)
    for i, result, short_arm, short_ref, n_a, n_b in tests:
        verdicts[i] = stats.verdict(short_arm, short_ref, result, holm[i], n_a, n_b)
    table["reference_arm"] = ref_arm
    table["diff_vs_reference_pct"] = diffs
    table["diff_se_pct"] = ses
    table["p_value"] = ps
    table["p_holm"] = holm
    table["verdict"] = verdicts
    return table


def problem_table(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Diverged and failed trial runs, retried attempts included, with the iteration where
    they stopped: the divergence point, or the last logged evaluation for a failure."""
    columns = ["trial_key", "arm", "status", "iteration", "reason", "run_id"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    trials = runs[(runs["role"] == "trial") & runs["status"].isin(["diverged", "failed"])]
    kept = set(select_trials(runs)["run_id"])
    last_step = (
        history.groupby("run_id")["step"].max() if not history.empty else pd.Series(dtype=float)
    )
    rows = []
    for _, run in trials.iterrows():
        if run["status"] == "diverged":
            iteration = pd.to_numeric(run.get("diverged_at"), errors="coerce")
        else:
            iteration = last_step.get(run["run_id"], math.nan)
        status = run["status"] if run["run_id"] in kept else f"{run['status']} (retried)"
        rows.append(
            {
                "trial_key": run["trial_key"],
                "arm": run["arm"],
                "status": status,
                "iteration": iteration,
                "reason": run.get("reason")
                or ("loss became non-finite" if run["status"] == "diverged" else ""),
                "run_id": run["run_id"],
            }
        )
    return pd.DataFrame(rows, columns=columns)
