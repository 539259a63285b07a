"""The report page: StudyData in, HTML, CSV-ready tables and paper-ready text out, no
MLflow here. reports.header renders the top of the page; this module the sections below
it, each from the study's Analysis (one that does not apply to the study's model is left
out), and decides their order and the files beside the page. The per-arm tables define
each column once with its legend, so a column shown is a column explained."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import pandas as pd

from reports import plots, stats
from reports.data import StudyData
from reports.effects import Effects, reduced_suffix, signed
from reports.header import degradation_applies, details, header, target_text
from reports.html import (
    count,
    duration,
    esc,
    figure,
    legend,
    link,
    num,
    page,
    run_url,
    section,
    table,
)
from reports.paper import normalize_dataset
from reports.study import Analysis, analyse, arms_frame, trials_frame
from reports.tables import comparison_latex, comparison_markdown

FILES = ("arms.csv", "trials.csv", "problems.csv", "effects.csv", "comparison.md", "comparison.tex")
NOTHING_YET = '<p class="absent">No trial has been recorded yet.</p>'


@dataclass
class Report:
    """A rendered report: the page, the tables written beside it as CSV, text files
    (comparison.md, comparison.tex) and whether the study was partial when it was read."""

    html: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    partial: bool = False
    texts: dict[str, str] = field(default_factory=dict)


def render_report(
    data: StudyData, mlflow_ui_url: str | None = None, generated_at: datetime | None = None
) -> Report:
    """Build the page of one study from its frames: the answer first, then the per-arm
    numbers and effects behind it, the figures, and the details of what ran."""
    a = analyse(data)
    links = {"ui": mlflow_ui_url, "exp": a.info.experiment_id}
    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        header(a),
        comparison(a, links),
        effects_section(a.effects),
        degradation(a),
        curves_section(a),
        factors_section(a),
        cost(a),
        layer_responses(a),
        lr_section(a),
        problems_section(a.problems, links, a.failures),
        details(a, when, links),
        notes_section(data.notes),
        footer(),
    ]
    title = f"ablate report: {a.info.name}"
    if a.counts.partial:
        title = f"[PARTIAL] {title}"
    elif a.counts.state == "none":
        title = f"[NO RESULTS] {title}"
    paper_title = f"{a.info.name}: final error over seeds"
    return Report(
        html=page(title, "".join(body)),
        tables={
            "arms": arms_frame(a),
            "trials": trials_frame(a),
            "problems": a.problems,
            "effects": a.effects.frame(),
        },
        partial=a.counts.partial,
        texts={
            "comparison.md": comparison_markdown(a.arms, a.factors, paper_title),
            "comparison.tex": comparison_latex(a.arms, a.factors, paper_title),
        },
    )


class Column(NamedTuple):
    header: str
    legend: str
    cell: Callable[[Any], str]  # a row (or an item) to HTML
    numeric: bool = True


def _error(row: pd.Series) -> str:
    if row["test_error_pct_n"] == 0:
        return "–"
    if pd.isna(row["test_error_pct_std"]):
        return f"{num(row['test_error_pct_mean'])} <small>(one seed, no spread)</small>"
    return f"{num(row['test_error_pct_mean'])} ± {num(row['test_error_pct_std'])}"


def _trials(row: pd.Series) -> str:
    kinds = ("finished", "diverged", "failed", "not_ended", "not_started")
    parts = [f"{row[k]} {k.replace('_', ' ')}" for k in kinds if row[k] or k == "finished"]
    return esc(", ".join(parts))


def _ci(row: pd.Series) -> str:
    if pd.isna(row["test_error_pct_ci_low"]):
        return "–"
    return f"[{num(row['test_error_pct_ci_low'])}, {num(row['test_error_pct_ci_high'])}]"


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
        if not row["paper_source"]:
            return "–"
        # Sources as numbered notes under the table: inline they would double its width.
        if row["paper_source"] not in sources:
            sources.append(row["paper_source"])
        mark = sources.index(row["paper_source"]) + 1
        if pd.isna(row["paper_test_error_pct"]):  # the paper's net, trained otherwise
            differs = esc(f"not comparable: {row['paper_differences']}")
            return f'<span class="muted paper-differs">{differs}</span><sup>{mark}</sup>'
        return f"{num(row['paper_test_error_pct'])}<sup>{mark}</sup>"

    def verdict(row: pd.Series) -> str:
        text = esc(row["verdict"])
        win = a.evidence and " beats " in row["verdict"]
        return f'<span class="verdict-win">{text}</span>' if win else text

    def runs(row: pd.Series) -> str:
        return " ".join(
            link(esc(f"s{s}"), run_url(links["ui"], links["exp"], r))
            for s, r in zip(row["seeds"], row["run_ids"], strict=True)
        )

    arms = a.arms
    columns = [
        Column("arm", "the arm's factor values.", lambda r: esc(r["arm"]), False),
        Column("trials", "the arm's trials by status; diverged and failed trials are "
               "counted here, never averaged.", _trials, False),
        Column("test error %", "final test error, mean ± sample standard deviation over the "
               "arm's finished seeds.", _error),
        Column("n", "finished seeds with a final test error.",
               lambda r: str(r["test_error_pct_n"])),
        Column("95% CI", "t confidence interval of the arm's mean test error, clipped to "
               "[0, 100]; under the two-stage design, mean ± t(n0 − 1) s0 / √n from its "
               "first-stage spread s0 (Study details: Replication rule).", _ci),
        Column("vs reference", "Welch's t-test against the reference arm with the same other "
               "factors (under the two-stage design, the Behrens-Fisher test on the first-"
               "stage spreads): the difference ± its standard error, in points.", verdict,
               False),
        Column("p (Holm)", "that test's p-value, Holm-corrected across the arms compared.",
               lambda r: num(r["p_holm"], 3)),
        Column("MDE", "minimum detectable difference: the smallest true difference this "
               "comparison finds with at least 80% power by the test above (Welch's, "
               "two-sided, α = 0.05 Holm-corrected over the arms compared: computed at "
               "α / arms compared, below which Holm's power never falls) at its seeds, given "
               f"{_spread(arms)}. A smaller real difference would likely go unseen.",
               lambda r: num(r["mde_pct"])),
    ]  # fmt: skip
    columns += _paper_and_target_columns(a, paper)
    columns += [
        Column("train error %", "mean over finished seeds, like test error.",
               lambda r: num(r["train_error_pct_mean"])),
        Column("runs", "each trial's MLflow run, by seed.", runs, False),
    ]  # fmt: skip
    return columns


def _paper_and_target_columns(a: Analysis, paper: Callable[[pd.Series], str]) -> list[Column]:
    """The columns only some studies have: the papers' numbers, the target precision."""
    arms, target, columns = a.arms, a.info.target_ci, []
    if (arms["paper_source"] != "").any():
        columns.append(
            Column("paper %", "the papers' published test error for the same net trained with "
                   "the same recipe (schedule, learning rates, momentum, weight decay, batch, "
                   "BatchNorm batch, iterations, training images; sources below). Where this "
                   "arm trained otherwise, each difference instead of the number: the two do "
                   "not compare.", paper, False)
        )  # fmt: skip
    if arms["paper_test_error_pct"].notna().any():
        columns.append(
            Column("vs paper (σ)", "our mean minus the paper's number, in our standard "
                   "deviations; only beside an arm trained as the paper did.",
                   lambda r: "–" if pd.isna(r["paper_gap_sd"]) else f"{r['paper_gap_sd']:+.1f}")
        )  # fmt: skip
    if target:
        columns.append(
            Column(f"target ±{target:g}", f"the 95% CI half-width against the study's target of "
                   f"±{target:g} points, and the seeds an arm that misses it would need at its "
                   "own seed spread (the pooled one with fewer than 2 seeds).",
                   lambda r: esc(target_text(r, a.info)), False)
        )  # fmt: skip
    return columns


def columns_table(columns: list[Column], items: Any, ident: str, classes=None) -> str:
    """The table `ident` of `items` (a frame's rows, or objects) and, under it, its legend
    `ident`-legend."""
    each = [x for _, x in items.iterrows()] if isinstance(items, pd.DataFrame) else items
    rows = [[c.cell(item) for c in columns] for item in each]
    numeric = [c.numeric for c in columns]
    body = table([c.header for c in columns], rows, numeric, classes, table_id=ident)
    return body + legend([(c.header, c.legend) for c in columns], f"{ident}-legend")


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


def comparison(a: Analysis, links: dict[str, Any]) -> str:
    if a.arms.empty:
        return section("Comparison", "", NOTHING_YET)
    intro = (
        "One row per arm: final errors in percent over finished seeds, each arm tested "
        "against the reference arm with the same other factors. Every column is explained "
        "under the table; what each arm cost is under Error against compute."
    )
    if not a.evidence:
        intro += " This is a reduced run: its differences are no evidence for the question."
    sources: list[str] = []  # the paper's, numbered as the cells cite them
    classes = ["reference" if v == "reference" else "" for v in a.arms["verdict"]]
    body = columns_table(_columns(a, links, sources), a.arms, "comparison", classes)
    if sources:
        notes = "".join(f"<li>{esc(s)}</li>" for s in sources)
        body += f'<ol class="muted paper-sources">{notes}</ol>'
    elif a.info.resnet:
        body += '<p class="muted">No arm matches a net the papers report.</p>'
    return section("Comparison", intro, body, "comparison-section")


def degradation(a: Analysis) -> str:
    """The paper's degradation problem (a deeper plain net training worse): only for the
    built-in ResNets."""
    title = "Degradation (Fig. 6)"
    if not a.info.resnet or a.trials.empty:
        return ""
    applies, why = degradation_applies(a.trials)
    if not applies:
        return section(title, "", f'<p class="absent">{esc(why)}</p>')
    depth_fig = plots.depth_plot(a.arms, a.factors, a.info.dataset)
    depth = figure(depth_fig, "No depth plot: the study does not vary depth.", "depth-plot")
    if depth_fig is not None:
        overlay = (
            "Stars: the paper's Table 6 (ResNet option A on CIFAR-10; 110 layers shown as the "
            "mean of 5 runs), at the depths this study covers."
            if normalize_dataset(a.info.dataset) == "cifar10"
            else "The paper's CIFAR-10 numbers are not overlaid: this study uses another data set."
        )
        depth = f'<p class="muted">{esc(overlay)}</p>' + depth
    intro = (
        "Degradation (docs/paper.md §1): a deeper plain net ending with a higher training "
        "error than a shallower one; whether this study shows it is in the answer at the top, "
        "its training curves in the next section."
    )
    return section(title, intro, depth, "degradation")


def curves_section(a: Analysis) -> str:
    if a.trials.empty:
        return section("Training curves", "", NOTHING_YET)
    split = a.info.resnet and "shortcut" in a.factors
    fig = plots.training_curves(a.trials, a.curves, a.factors, split_plain=split)
    intro = "Mean over finished seeds; the shaded band spans the lowest to the highest seed."
    body = figure(fig, "No error histories recorded for finished trials.", "training-curves")
    return section("Training curves", intro, body, "curves")


def factors_section(a: Analysis) -> str:
    if not a.factors or a.trials.empty:
        return section("Factors", "", '<p class="absent">No scientific factors recorded.</p>')
    parts = [
        figure(
            plots.factor_plot(a.trials, f, a.factors),
            f"No finished trial with a test error for {f}.",
            f"factor-{f}",
        )
        for f in a.factors
    ]
    return section("Error by factor", "Every finished seed is a point.", "".join(parts))


def cost(a: Analysis) -> str:
    parts = [
        figure(
            plots.cost_plot(a.trials, name, a.factors),
            f"No finished trial records {name} and a test error.",
            f"cost-{name}",
        )
        for name in ("macs", "params")
    ]
    if not a.arms.empty:
        parts.append(columns_table(COST_COLUMNS, a.arms, "arm-costs"))
    intro = (
        "Final test error against compute (multiply-accumulates per image) and size "
        "(parameters): every finished seed is a small point, each arm's mean a diamond. "
        "An arm below and left of another is better on both counts."
    )
    return section("Error against compute", intro, "".join(parts), "cost-section")


def layer_responses(a: Analysis) -> str:
    """Fig. 7, only where the trials recorded their layer responses."""
    fig = plots.layer_response_plot(a.trials, a.data.layer_responses, a.factors)
    if fig is None:
        return ""
    intro = (
        "Standard deviation of each weight layer's BN output (before the addition and ReLU) "
        "on a fixed batch of test images, mean over finished seeds. The paper finds residual "
        "nets respond less than plain ones, and deeper residual nets less still."
    )
    return section("Layer responses (Fig. 7)", intro, figure(fig, "", "layer-responses"))


def lr_section(a: Analysis) -> str:
    intro = (
        "The learning rate each distinct policy setting actually used (lr_trace.json); "
        "warm-ups and plateau drops show here as steps."
    )
    fig = plots.lr_plot(a.data.lr_traces, a.runs)
    body = figure(fig, "No learning-rate trace recorded.", "lr-traces")
    return section("Learning-rate schedules", intro, body)


def problems_section(
    problems: pd.DataFrame, links: dict[str, Any], failures: list[tuple[int, str]]
) -> str:
    """Every diverged or failed run; above them, the failed trials' reasons grouped (the
    same reason on 8 trials reads once, with its count)."""
    title = "Diverged and failed trials"
    if problems.empty:
        return section(title, "", '<p class="absent">None: every ended trial finished.</p>')
    rows = [
        [
            link(esc(p["trial_key"]), run_url(links["ui"], links["exp"], p["run_id"])),
            esc(p["status"]),
            # A trial that failed before its first evaluation logged no iteration.
            "before the first evaluation" if pd.isna(p["iteration"]) else str(int(p["iteration"])),
            esc(p["reason"]),
        ]
        for _, p in problems.iterrows()
    ]
    intro = "Iteration: where the loss became non-finite, or the last evaluation before a failure."
    body = ""
    if failures:
        items = "".join(f"<li><strong>{n} × </strong>{esc(reason)}</li>" for n, reason in failures)
        body += f'<p>Failure reasons, grouped:</p><ul class="reasons">{items}</ul>'
    body += table(
        ["trial", "status", "iteration", "reason"], rows, [0, 0, 1, 0], table_id="problems"
    )
    return section(title, intro, body, "problems-section")


def notes_section(notes: list[str]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{esc(n)}</li>" for n in notes)
    return section("Problems reading the store", "", f"<ul>{items}</ul>")


EFFECT_COLUMNS = [
    Column("term", "a factor (main effect) or a pair of factors (interaction).",
           lambda e: esc(e.term), False),
    Column("contrast", "what the effect measures, between the extreme levels.",
           lambda e: esc(e.contrast), False),
    Column("effect (points)", "that contrast in points of test error, estimated in the Type "
           "II model of the term; signs as stated under the answer.",
           lambda e: signed(e.estimate)),
    Column("95% CI", "t interval of that contrast, from the model's residual seed variance.",
           lambda e: f"[{signed(e.ci_low)}, {signed(e.ci_high)}]"),
    Column("p", "Type II F test of the whole term (all its levels); for a two-level term the "
           "same as the contrast's t-test.",
           lambda e: esc(stats.format_p(e.p).removeprefix("p = "))),
    Column("F (df)", "the F statistic, with the term's and the residual degrees of freedom.",
           lambda e: f"{e.f:.2f} ({e.df_num}, {e.df_den})"),
]  # fmt: skip


def effects_section(effects: Effects) -> str:
    title = "Factorial effects"
    if effects.absent:
        notes = "".join(f"<li>{esc(n)}</li>" for n in effects.notes)
        extra = f"<ul>{notes}</ul>" if notes else ""
        return section(title, "", f'<p class="absent">{esc(effects.absent)}</p>{extra}', "effects")
    intro = (
        "A linear model of every finished seed's final test error on the scientific factors, "
        "with their main effects and two-factor interactions (statsmodels OLS, Type II sums "
        "of squares). Main effects are averaged over the other factors; an interaction says "
        "how much the effect of one factor changes between the extreme levels of the other."
    )
    body = columns_table(EFFECT_COLUMNS, effects.rows, "effects-table")
    sentences = "".join(f"<li>{esc(e.sentence)}</li>" for e in effects.rows)
    body += f'<ul class="effect-sentences">{sentences}</ul>'
    if not effects.evidence:
        body += f'<p class="muted">{esc(reduced_suffix(False).strip())}</p>'
    if effects.notes:
        notes = "".join(f"<li>{esc(n)}</li>" for n in effects.notes)
        body += f'<p class="muted">How the design was handled:</p><ul class="muted">{notes}</ul>'
    return section(title, intro, body, "effects")


def footer() -> str:
    files = ", ".join(f'<a href="{n}">{n}</a>' for n in FILES)
    return (
        f'<footer><h2>Data</h2><p class="muted">The tables as CSV, and the comparison '
        f"ready for a paper (Markdown, LaTeX with booktabs): {files}.</p></footer>"
    )
