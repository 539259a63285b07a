"""Report tables as DataFrames: trial counts, the per-arm comparison, problems; and the
comparison ready for a paper, as Markdown (comparison.md) and LaTeX with booktabs
(comparison.tex).

Errors are fractions in MLflow (docs/tracking.md) and percent here, as in the paper;
columns holding percent end in `_pct`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from reports import replication, stats
from reports.data import NOT_ENDED, STATUSES, StudyInfo, factor_names, select_trials, setting_names
from reports.paper import PaperComparison, paper_comparison

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


def is_plain(shortcut: object) -> bool:
    return str(shortcut) == "none"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def per_arm(counts: list[int]) -> str:
    """'3 per arm', or '2 to 4 per arm' when arms differ."""
    low, high = min(counts), max(counts)
    return f"{low} per arm" if low == high else f"{low} to {high} per arm"


@dataclass(frozen=True)
class Counts:
    finished: int
    diverged: int
    failed: int
    running: int
    interrupted: int
    pending: int
    missing: int
    expected: int  # planned now
    retried: int
    tune_runs: int
    partial_reasons: list[str] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        """More is to come: trials not ended or not started, or the study still open."""
        return bool(self.partial_reasons)

    @property
    def total(self) -> int:
        """Trials planned, or seen if more ran than planned."""
        ended = self.finished + self.diverged + self.failed
        return max(self.expected, ended + self.running + self.interrupted + self.pending)

    @property
    def state(self) -> str:
        """The banner's: `none` (no trial finished, and some failed or nothing more is to
        come), `partial` (more to come), `problems` (ended, not all finished), `complete`."""
        if self.finished == 0 and (self.failed + self.diverged > 0 or not self.partial):
            return "none"
        if self.partial:
            return "partial"
        if self.failed or self.diverged:
            return "problems"
        return "complete"


def count_trials(runs: pd.DataFrame, info: StudyInfo) -> Counts:
    """Counts of trials by status, and of the planned ones (`ablate.expected_trials`, which
    grows when seeds are added) that have no run yet."""
    trials = select_trials(runs)
    seen, expected = len(trials), info.expected_trials or 0
    missing = max(0, expected - seen)
    n = {s: int((trials["status"] == s).sum()) for s in STATUSES}
    reasons = [
        text
        for count, text in (
            (missing, f"{missing} of {expected} planned trials have no run yet"),
            (n["pending"], f"{plural(n['pending'], 'trial')} pending (never started)"),
            (n["running"], f"{plural(n['running'], 'trial')} still running"),
            (
                n["interrupted"],
                f"{plural(n['interrupted'], 'trial')} interrupted (run the study again to resume)",
            ),
            (info.parent_status == "RUNNING", "the study's parent run has not finished"),
            (info.parent_status == "KILLED", "the study was interrupted (run it again to resume)"),
            (seen == 0, "no trial has been recorded yet"),
        )  # fmt: skip
        if count
    ]
    return Counts(
        **n,
        missing=missing,
        expected=expected,
        retried=int((runs["role"] == "trial").sum()) - seen,
        tune_runs=int((runs["role"] == "tune").sum()),
        partial_reasons=reasons,
    )


DIVERGED_REASON = "diverged: the loss became non-finite"


def failure_groups(trials: pd.DataFrame) -> list[tuple[int, str]]:
    """(count, reason) of the failed and diverged trials (select_trials() rows), identical
    reasons grouped, most frequent first; a failure without a recorded reason says so."""
    ended = trials[trials["status"].isin(["failed", "diverged"])]
    reasons = Counter(
        DIVERGED_REASON
        if status == "diverged"
        else (str(reason).strip() if isinstance(reason, str) else "") or "no reason recorded"
        for status, reason in zip(ended["status"], ended["reason"], strict=True)
    )
    return sorted(((n, r) for r, n in reasons.items()), key=lambda item: (-item[0], item[1]))


def _pct(rows: pd.DataFrame, key: str) -> np.ndarray:
    """The finite values of an error column in percent; none where no run logged it."""
    return stats.finite(100.0 * pd.to_numeric(rows.get(key, pd.Series()), errors="coerce"))


def _mean(rows: pd.DataFrame, key: str) -> float:
    return stats.summarize(pd.to_numeric(rows.get(key, pd.Series()), errors="coerce")).mean


def arm_settings(trials: pd.DataFrame, info: StudyInfo, factors: list[str]) -> list[str]:
    """The settings (factors and seed aside) that are constant within every arm: the fixed
    settings, and any tuned per arm. They become columns of the arm table."""
    names = [n for n in setting_names(info) if n not in factors and n != "seed"]
    names = [n for n in names if n in trials.columns]
    per_arm = trials[names].astype(str).groupby(trials["arm"]).nunique()
    return [n for n in names if (per_arm[n] <= 1).all()]


def arm_table(trials: pd.DataFrame, info: StudyInfo, evidence: bool = True) -> pd.DataFrame:
    """One row per arm of select_trials() output: its settings, final errors over finished
    seeds, cost, the paper's number, the test against its reference arm (_add_tests) and
    its precision (_add_targets). Diverged trials are counted but left out of the error
    statistics (their last errors are not the end of training), so an arm that diverges
    often cannot hide. With `evidence` False (a reduced run) no verdict declares a winner.
    """
    factors = factor_names(info, trials)
    if trials.empty:
        return pd.DataFrame()
    fixed = arm_settings(trials, info, factors)
    rows = [_arm_row(arm, group, fixed, factors, info) for arm, group in trials.groupby("arm")]
    rows.sort(key=lambda r: [level_key(r[f]) for f in factors])
    stages = _stages(trials, info)
    table = _two_stage_intervals(pd.DataFrame(rows), stages)
    table = _add_tests(table, trials, info, factors, evidence, stages)
    return _add_targets(table, info, stages)


Stages = dict[str, tuple[np.ndarray, np.ndarray]]


def _stages(trials: pd.DataFrame, info: StudyInfo) -> Stages | None:
    """For a study whose seeds the two-stage design chose (`ablate.replication`), each
    arm's finished test errors (points) of its first-stage seeds (its first n0 planned
    seeds) and of the rest; None for any other design."""
    design = replication.parse(info.replication)
    if design is None:
        return None
    done = trials[trials["status"] == "finished"]
    out = {}
    for arm, group in trials.groupby("arm"):
        planned = info.planned.get(arm) or list(group["seed"])
        first = {str(s) for s in sorted(planned, key=level_key)[: design.first]}
        rows = done[done["arm"] == arm]
        in_first = rows["seed"].astype(str).isin(first)
        out[arm] = (_pct(rows[in_first], "test/error"), _pct(rows[~in_first], "test/error"))
    return out


def _two_stage_intervals(table: pd.DataFrame, stages: Stages | None) -> pd.DataFrame:
    """Under the two-stage design each arm's interval is mean +- t_{n0-1} s0 / sqrt(n)
    (reports/replication.py), not the t interval of all its seeds."""
    if stages is None or table.empty:
        return table
    for i, arm in enumerate(table["arm"]):
        found = replication.interval(*stages.get(arm, ([], [])))
        table.loc[i, "test_error_pct_ci_low"] = max(0.0, found.ci_low)
        table.loc[i, "test_error_pct_ci_high"] = min(100.0, found.ci_high)
        table.loc[i, "ci_half_width_pct"] = found.half_width
    return table


def _arm_row(
    arm: str, group: pd.DataFrame, fixed: list[str], factors: list[str], info: StudyInfo
) -> dict[str, Any]:
    done = group[group["status"] == "finished"]
    test = stats.summarize(_pct(done, "test/error"))
    train = stats.summarize(_pct(done, "train/error"))
    settings = group.iloc[0].to_dict()
    planned = len(info.planned.get(arm, []))
    found = paper_comparison(settings) if info.resnet else None
    return {
        "arm": arm,
        **{name: settings[name] for name in [*factors, *fixed]},
        "seeds_planned": planned,
        "finished": len(done),
        "diverged": int((group["status"] == "diverged").sum()),
        "failed": int((group["status"] == "failed").sum()),
        "not_ended": int(group["status"].isin(NOT_ENDED).sum()),
        "not_started": max(0, planned - len(group)),
        "test_error_pct_mean": test.mean,
        "test_error_pct_std": test.std,
        "test_error_pct_n": test.n,
        # An error rate lies in [0, 100]; a t interval of a few seeds may not.
        "test_error_pct_ci_low": max(0.0, test.ci_low) if test.n > 1 else math.nan,
        "test_error_pct_ci_high": min(100.0, test.ci_high) if test.n > 1 else math.nan,
        # Of the t interval before clipping: the precision adaptive replication aims at.
        "ci_half_width_pct": (test.ci_high - test.ci_low) / 2 if test.n > 1 else math.nan,
        "val_error_pct_mean": stats.summarize(_pct(done, "val/error")).mean,
        "train_error_pct_mean": train.mean,
        "train_error_pct_std": train.std,
        "train_error_pct_n": train.n,
        "params": _mean(group, "params"),
        "macs": _mean(group, "macs"),
        "images_per_s": _mean(done, "images_per_s"),
        "wall_time_s": _mean(done, "wall_time_s"),
        "run_ids": list(group["run_id"]),
        "seeds": list(group["seed"]),
        **_paper_columns(found, test),
    }


def _paper_columns(found: PaperComparison | None, test: stats.Summary) -> dict:
    """The paper's number and our gap to it only where the arm trained as the paper did
    (reports/paper.py); where only the net matches, the differences instead, no number."""
    out = {"paper_test_error_pct": math.nan, "paper_source": "", "paper_gap_sd": math.nan}
    out["paper_differences"] = ""
    if found is None:
        return out
    out["paper_source"] = found.result.source + (
        f" ({found.result.note})" if found.result.note else ""
    )
    if not found.comparable:
        return {**out, "paper_differences": "; ".join(found.differences)}
    paper = found.result.test_error_pct
    gap = (test.mean - paper) / test.std if test.std > 0 else math.nan
    return {**out, "paper_test_error_pct": paper, "paper_gap_sd": gap}


def _add_targets(
    table: pd.DataFrame, info: StudyInfo, stages: Stages | None = None
) -> pd.DataFrame:
    """Whether each arm's 95% CI half-width is within the study's `ablate.target_ci`, and
    if not, the seeds it needs: under the two-stage design the total its first stage asks
    for without the cap; else the seeds that meet the target 9 times in 10 at its own seed
    spread (the pooled one below 2 seeds)."""
    target = info.target_ci
    table["target_status"], table["seeds_for_target"] = "", math.nan
    if not target:
        return table
    met = table["ci_half_width_pct"] <= target
    own = table["test_error_pct_std"].where(table["test_error_pct_n"] >= 2)
    sds = own.fillna(table["mde_sd_pct"])
    table["target_status"] = met.map({True: "met", False: "not met"})
    needs = [
        math.nan if ok else _seeds_for_target(arm, sd, target, stages)
        for arm, ok, sd in zip(table["arm"], met, sds, strict=True)
    ]
    table["seeds_for_target"] = np.array(needs, dtype=float)
    return table


def _seeds_for_target(arm: str, sd: float, target: float, stages: Stages | None) -> float:
    first = stages.get(arm, ([], []))[0] if stages is not None else []
    if stages is not None and len(first) >= 2:
        return replication.needed_seeds(first, target)
    return stats.seeds_for_ci(sd, target)


def _add_tests(
    table: pd.DataFrame,
    trials: pd.DataFrame,
    info: StudyInfo,
    factors: list[str],
    evidence: bool,
    stages: Stages | None = None,
) -> pd.DataFrame:
    """Each arm against the reference arm with its other factor values: Welch's test (under
    the two-stage design, the Behrens-Fisher test on the first stages' variances,
    reports/replication.py), Holm's correction across the arms tested, and the difference
    the test could detect with 80% power at Holm's level (mde_pct, stats.mde) at the
    study's pooled seed spread, or the prior when no arm has two finished seeds."""
    reference = {k: v for k, v in info.reference.items() if k in factors}
    finished = trials[trials["status"] == "finished"]
    errors = {arm: _pct(g, "test/error") for arm, g in finished.groupby("arm")}
    spread = stats.seed_spread_of(trials)
    sd = spread[0] if spread else stats.PRIOR_SEED_SD
    # Arms by their factor values, as text: the reference JSON says 20, a param may be "20".
    arm_of = {tuple(str(r[f]) for f in factors): r["arm"] for _, r in table.iterrows()}
    refs, welch, sizes, verdicts = [], [], [], []
    for _, row in table.iterrows():
        wanted = {**{f: row[f] for f in factors}, **reference}
        ref = arm_of.get(tuple(str(wanted[f]) for f in factors)) if reference else None
        a, b = errors.get(row["arm"], np.array([])), errors.get(ref, np.array([]))
        tested = ref not in (None, row["arm"])
        refs.append(ref or "")
        welch.append(_test(row["arm"], ref, a, b, stages) if tested else stats.welch([], []))
        sizes.append((a.size, b.size) if tested else None)
        if not reference:
            verdicts.append("the study names no reference arm")
        elif ref is None:
            label = " ".join(f"{k}={v}" for k, v in wanted.items())
            verdicts.append(f"no reference arm ({label}) in this study's runs")
        else:
            verdicts.append("" if tested else "reference")
    holm = stats.holm([w.p for w in welch])
    short_ref = " ".join(f"{k}={v}" for k, v in reference.items())
    for i, size in enumerate(sizes):
        if size:
            arm = " ".join(f"{k}={table.iloc[i][k]}" for k in reference)
            verdicts[i] = stats.verdict(arm, short_ref, welch[i], holm[i], *size, evidence=evidence)
    table["reference_arm"] = refs
    table["diff_vs_reference_pct"] = [w.diff for w in welch]
    table["diff_se_pct"] = [w.se for w in welch]
    table["p_value"] = [w.p for w in welch]
    table["p_holm"] = holm
    table["verdict"] = verdicts
    tests = sum(size is not None for size in sizes)
    table["mde_pct"] = [
        _mde(arm, ref, size, sd, tests, stages) if size else math.nan
        for arm, ref, size in zip(table["arm"], refs, sizes, strict=True)
    ]
    table["mde_sd_pct"] = sd
    table["mde_sd_measured"] = spread is not None
    return table


def _mde(
    arm: str, ref: str, size: tuple[int, int], sd: float, tests: int, stages: Stages | None
) -> float:
    """The MDE of the arm's own test: Welch's, or the two-stage test from the arms' first
    stages (reports/replication.py)."""
    if stages is None:
        return stats.mde(*size, sd, tests=tests)
    firsts = [len(stages.get(name, ([], []))[0]) for name in (arm, ref)]
    return replication.mde(*size, *firsts, sd, tests=tests)


def _test(arm: str, ref: str, a: np.ndarray, b: np.ndarray, stages: Stages | None) -> stats.Welch:
    if stages is None:
        return stats.welch(a, b)
    none = (np.array([]), np.array([]))
    return replication.test(*stages.get(arm, none), *stages.get(ref, none))


def problem_table(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Diverged and failed trial runs, retried attempts included, with the iteration where
    they stopped: the divergence point, or the last logged evaluation for a failure."""
    problems = runs[(runs["role"] == "trial") & runs["status"].isin(["diverged", "failed"])]
    diverged = problems["status"] == "diverged"
    stopped = zip(
        diverged,
        pd.to_numeric(problems["diverged_at"], errors="coerce"),
        problems["run_id"].map(history.groupby("run_id")["step"].max()),
        strict=True,
    )
    kept = problems["run_id"].isin(select_trials(runs)["run_id"])
    reasons = problems["reason"].where(problems["reason"].astype(bool))
    problems = problems.assign(
        status=problems["status"].where(kept, problems["status"] + " (retried)"),
        # A list, not a Series: integer iterations stay integers in problems.csv.
        iteration=[at if stop else last for stop, at, last in stopped],
        reason=reasons.fillna(diverged.map({True: "loss became non-finite", False: ""})),
    )
    columns = ["trial_key", "arm", "status", "iteration", "reason", "run_id"]
    return problems[columns].reset_index(drop=True)


# (header, mean column, std column, n column); the paper column has no spread.
ERROR_COLUMNS = (
    ("test error %", "test_error_pct_mean", "test_error_pct_std", "test_error_pct_n"),
    ("train error %", "train_error_pct_mean", "train_error_pct_std", "train_error_pct_n"),
)
PAPER_COLUMN = ("paper test error %", "paper_test_error_pct", None, None)

# Plain ASCII LaTeX for the few non-ASCII signs the tables use, after the special characters.
LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                 "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                 "^": r"\textasciicircum{}", "±": r"$\pm$", "–": "--", "×": r"$\times$",
                 "−": "$-$"}  # fmt: skip


def _paper_rows(
    arms: pd.DataFrame, factors: list[str], cell: Callable[[str, bool], str]
) -> tuple[list[list[str]], int, str]:
    """The header and one row per arm (factor levels, test and training error as mean ± std
    (n seeds), the paper's number where known), each cell made by `cell(text, bold)`, bold
    for the lowest mean of its column; also how many columns are factors, and the note."""
    factors = [f for f in factors if f in arms.columns] or ["arm"]
    # The column whenever an arm is one of the papers' nets; a number only beside an arm
    # trained with the paper's recipe (reports/paper.py).
    paper = bool((arms.get("paper_source", pd.Series(dtype=str)).fillna("") != "").any())
    columns = [*ERROR_COLUMNS, *([PAPER_COLUMN] if paper else [])]
    rows = [[cell(h, False) for h in [*factors, *(c[0] for c in columns)]]]
    for _, arm in arms.iterrows():
        row = [cell(str(arm[f]), False) for f in factors]
        for _, mean, std, n in columns:
            value = arm[mean]
            text = f"{value:.2f}"
            text += f" ± {arm[std]:.2f}" if std and not pd.isna(arm[std]) else ""
            text += f" (n={int(arm[n])})" if n else ""
            row.append(cell("–" if pd.isna(value) else text, value == arms[mean].min()))
        rows.append(row)
    note = (
        "Final error in percent, mean ± standard deviation over finished seeds (n); "
        "bold: the lowest mean in its column."
    )
    if paper:
        note += (
            " Paper: the published test error of the same net trained with the same recipe;"
            " –: the arm trained otherwise (the report names each difference)."
        )
    return rows, len(factors), note


def comparison_markdown(arms: pd.DataFrame, factors: list[str], title: str) -> str:
    """The comparison as a GitHub-flavoured Markdown table."""
    if arms.empty:
        return f"# {title}\n\nNo trial has been recorded yet.\n"

    def cell(text: str, bold: bool) -> str:
        return (f"**{text}**" if bold else text).replace("|", "\\|")

    rows, keys, note = _paper_rows(arms, factors, cell)
    aligns = ["---"] * keys + ["---:"] * (len(rows[0]) - keys)
    lines = ["| " + " | ".join(row) + " |" for row in [rows[0], aligns, *rows[1:]]]
    return "\n".join([f"# {title}", "", *lines, "", note]) + "\n"


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in text)


def comparison_latex(arms: pd.DataFrame, factors: list[str], title: str) -> str:
    """The comparison as a LaTeX table (needs \\usepackage{booktabs})."""
    if arms.empty:
        return f"% {latex_escape(title)}: no trial has been recorded yet.\n"

    def cell(text: str, bold: bool) -> str:
        return f"\\textbf{{{latex_escape(text)}}}" if bold else latex_escape(text)

    rows, keys, note = _paper_rows(arms, factors, cell)
    header, *body = (" & ".join(row) + " \\\\" for row in rows)
    lines = [
        "% " + latex_escape(title),
        "% Needs \\usepackage{booktabs}.",
        "\\begin{table}[t]",
        "\\centering",
        f"\\begin{{tabular}}{{{'l' * keys + 'r' * (len(rows[0]) - keys)}}}",
        "\\toprule",
        header,
        "\\midrule",
        *body,
        "\\bottomrule",
        "\\end{tabular}",
        f"\\caption{{{latex_escape(title)}. {latex_escape(note)}}}",
        "\\end{table}",
    ]
    return "\n".join(lines) + "\n"
