"""The per-arm tables of the page: the comparison (errors, tests against the reference,
the paper's number, the precision target) and, beside the cost plots, what each arm cost.
Each column is defined once with its legend, so a column shown is a column explained."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from reports import stats
from reports.data import StudyInfo
from reports.html import count, duration, esc, is_missing, legend, link, num, run_url, table
from reports.study import Analysis
from reports.tables import plural


@dataclass(frozen=True)
class Column:
    header: str
    legend: str
    cell: Callable[[Any], str]  # a row (or an item) to HTML
    numeric: bool = True


def _error(row: pd.Series) -> str:
    if row["test_error_pct_n"] == 0:
        return "–"
    if is_missing(row["test_error_pct_std"]):
        return f"{num(row['test_error_pct_mean'])} <small>(one seed, no spread)</small>"
    return f"{num(row['test_error_pct_mean'])} ± {num(row['test_error_pct_std'])}"


def _trials(row: pd.Series) -> str:
    kinds = ("finished", "diverged", "failed", "not_ended", "not_started")
    parts = [f"{row[k]} {k.replace('_', ' ')}" for k in kinds if row[k] or k == "finished"]
    return esc(", ".join(parts))


def _ci(row: pd.Series) -> str:
    if is_missing(row["test_error_pct_ci_low"]):
        return "–"
    return f"[{num(row['test_error_pct_ci_low'])}, {num(row['test_error_pct_ci_high'])}]"


def _verdict(evidence: bool) -> Callable[[pd.Series], str]:
    def cell(row: pd.Series) -> str:
        text = esc(row["verdict"])
        if evidence and " beats " in row["verdict"]:
            return f'<span class="verdict-win">{text}</span>'
        return text

    return cell


def target_text(row: pd.Series, info: StudyInfo) -> str:
    """An arm against the precision target, in words; past the study's seed limit when
    the seeds it needs are more than adaptive replication may add."""
    half, n = row["ci_half_width_pct"], row["test_error_pct_n"]
    width = "no interval (fewer than 2 seeds)" if is_missing(half) else f"±{half:.2f}"
    if row["target_status"] == "met":
        return f"met ({width})"
    needs = int(row["seeds_for_target"])
    limit = f", more than the {info.max_seeds} allowed" if needs > (info.max_seeds or needs) else ""
    return f"target not met: {width} with {plural(n, 'seed')}; needs {needs} seeds{limit}"


def _spread(arms: pd.DataFrame) -> str:
    sd = float(arms["mde_sd_pct"].iloc[0])
    if bool(arms["mde_sd_measured"].iloc[0]):
        return f"the study's pooled seed standard deviation, {sd:.2f} points"
    return (
        f"an assumed seed standard deviation of {sd:.2f} points (no arm has two finished "
        f"seeds; {stats.PRIOR_SEED_SD_SOURCE})"
    )


def _columns(a: Analysis, links: dict[str, Any], sources: list[str]) -> list[Column]:
    def paper(row: pd.Series) -> str:
        if is_missing(row["paper_test_error_pct"]):
            return "–"
        # Sources as numbered notes under the table: inline they would double its width.
        if row["paper_source"] not in sources:
            sources.append(row["paper_source"])
        mark = sources.index(row["paper_source"]) + 1
        return f"{num(row['paper_test_error_pct'])}<sup>{mark}</sup>"

    def runs(row: pd.Series) -> str:
        seeds = row["seeds"] or [None] * len(row["run_ids"])
        return " ".join(
            link(esc(f"s{s}" if s is not None else "run"), run_url(links["ui"], links["exp"], r))
            for s, r in zip(seeds, row["run_ids"], strict=True)
        )

    arms, target = a.arms, a.info.target_ci
    columns = [
        Column("arm", "the arm's factor values.", lambda r: esc(r["arm"]), False),
        Column("trials", "the arm's trials by status; diverged and failed trials are "
               "counted here, never averaged.", _trials, False),
        Column("test error %", "final test error, mean ± sample standard deviation over the "
               "arm's finished seeds.", _error),
        Column("n", "finished seeds with a final test error.",
               lambda r: str(r["test_error_pct_n"])),
        Column("95% CI", "t confidence interval of the arm's mean test error, clipped to "
               "[0, 100].", _ci),
        Column("vs reference", "Welch's t-test against the reference arm with the same other "
               "factors: the difference ± its standard error, in points.", _verdict(a.evidence),
               False),
        Column("p (Holm)", "that test's p-value, Holm-corrected across the arms compared.",
               lambda r: num(r["p_holm"], 3)),
        Column("MDE", "minimum detectable difference: the smallest true difference this "
               "comparison finds with 80% power at α = 0.05 (two-sided two-sample t-test) at "
               f"its seeds, given {_spread(arms)}. A smaller real difference would likely go "
               "unseen.", lambda r: num(r["mde_pct"])),
    ]  # fmt: skip
    if arms["paper_test_error_pct"].notna().any():
        columns += [
            Column("paper %", "the papers' published test error for the same net (sources "
                   "below).", paper),
            Column("vs paper (σ)", "our mean minus the paper's number, in our standard "
                   "deviations.", lambda r: "–" if is_missing(r["paper_gap_sd"])
                   else f"{r['paper_gap_sd']:+.1f}"),
        ]  # fmt: skip
    if target:
        columns.append(
            Column(f"target ±{target:g}", f"the 95% CI half-width against the study's target of "
                   f"±{target:g} points, and the seeds an arm that misses it would need at its "
                   "own seed spread (the pooled one with fewer than 2 seeds).",
                   lambda r: esc(target_text(r, a.info)), False)
        )  # fmt: skip
    columns += [
        Column("train error %", "mean over finished seeds, like test error.",
               lambda r: num(r["train_error_pct_mean"])),
        Column("runs", "each trial's MLflow run, by seed.", runs, False),
    ]  # fmt: skip
    return columns


def columns_table(columns: list[Column], items: Any, ident: str, classes=None) -> str:
    """The table `ident` of `items` (a frame's rows, or objects) and, under it, its legend
    `ident`-legend."""
    each = [x for _, x in items.iterrows()] if isinstance(items, pd.DataFrame) else items
    rows = [[c.cell(item) for c in columns] for item in each]
    numeric = [c.numeric for c in columns]
    body = table([c.header for c in columns], rows, numeric, classes, table_id=ident)
    return body + legend([(c.header, c.legend) for c in columns], f"{ident}-legend")


def comparison_table(a: Analysis, links: dict[str, Any]) -> str:
    """The comparison, its legend and the paper's sources."""
    sources: list[str] = []
    columns = _columns(a, links, sources)
    classes = ["reference" if v == "reference" else "" for v in a.arms["verdict"]]
    body = columns_table(columns, a.arms, "comparison", classes)
    if sources:
        notes = "".join(f"<li>{esc(s)}</li>" for s in sources)
        body += f'<ol class="muted paper-sources">{notes}</ol>'
    elif a.info.resnet:
        body += '<p class="muted">No arm matches a net the papers report.</p>'
    return body


COST_COLUMNS = [
    Column("arm", "the arm's factor values.", lambda r: esc(r["arm"]), False),
    Column("val error %", "final validation error, mean over finished seeds.",
           lambda r: num(r["val_error_pct_mean"])),
    Column("params", "parameters.", lambda r: count(r["params"])),
    Column("MACs", "multiply-accumulates per image.", lambda r: count(r["macs"])),
    Column("images/s", "training throughput, mean over finished seeds.",
           lambda r: num(r["images_per_s"], 0)),
    Column("wall / trial", "wall time of a trial, mean over finished seeds.",
           lambda r: duration(r["wall_time_s"])),
]  # fmt: skip


def cost_table(a: Analysis) -> str:
    return columns_table(COST_COLUMNS, a.arms, "arm-costs")
