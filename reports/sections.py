"""The page's sections below the header, in page order: the comparison, factorial
effects, degradation, training curves, factors, cost, layer responses, learning rates,
problems and the data files. Each takes the study's Analysis and returns HTML; a section
that does not apply to the study's model is left out."""

from __future__ import annotations

from typing import Any

import pandas as pd

from reports import plots, stats
from reports.comparison import Column, columns_table, comparison_table, cost_table
from reports.effects import Effects, reduced_suffix, signed
from reports.findings import degradation_applies
from reports.html import esc, figure, is_missing, link, run_url, table
from reports.paper import normalize_dataset
from reports.study import Analysis

FILES = ("arms.csv", "trials.csv", "problems.csv", "effects.csv", "comparison.md", "comparison.tex")
NOTHING_YET = '<p class="absent">No trial has been recorded yet.</p>'


def section(title: str, intro: str, body: str, section_id: str = "") -> str:
    intro_html = f'<p class="muted">{esc(intro)}</p>' if intro else ""
    ident = f' id="{esc(section_id)}"' if section_id else ""
    return f"<section{ident}><h2>{esc(title)}</h2>{intro_html}{body}</section>"


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
    return section("Comparison", intro, comparison_table(a, links), "comparison-section")


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
        parts.append(cost_table(a))
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
            "–" if is_missing(p["iteration"]) else str(int(p["iteration"])),
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
