"""The page's sections below the header: the comparison, degradation, factors, cost,
factorial effects, problems and the data files. Each returns HTML; no MLflow here.
A little over 300 lines: each section is short, and they read best in page order."""

from __future__ import annotations

from typing import Any

import pandas as pd

from reports import plots, stats
from reports.data import StudyInfo
from reports.effect_words import signed
from reports.effects import Effects
from reports.findings import degradation_applies, degradation_sentence
from reports.html import count, duration, esc, figure, is_missing, link, num, run_url, table
from reports.paper import normalize_dataset

FILES = ("arms.csv", "trials.csv", "problems.csv", "effects.csv", "comparison.md", "comparison.tex")


def section(title: str, intro: str, body: str, section_id: str = "") -> str:
    intro_html = f'<p class="muted">{esc(intro)}</p>' if intro else ""
    ident = f' id="{esc(section_id)}"' if section_id else ""
    return f"<section{ident}><h2>{esc(title)}</h2>{intro_html}{body}</section>"


def _legend(items: list[tuple[str, str]], legend_id: str) -> str:
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items)
    return f'<dl class="legend" id="{esc(legend_id)}">{rows}</dl>'


def _error_cell(row: pd.Series) -> str:
    if row["test_error_pct_n"] == 0:
        return "–"
    if is_missing(row["test_error_pct_std"]):
        return f"{num(row['test_error_pct_mean'])} <small>(one seed, no spread)</small>"
    return f"{num(row['test_error_pct_mean'])} ± {num(row['test_error_pct_std'])}"


def _trials_cell(row: pd.Series) -> str:
    parts = [f"{row['finished']} finished"]
    for key, word in (("diverged", "diverged"), ("failed", "failed"), ("not_ended", "not ended")):
        if row[key]:
            parts.append(f"{row[key]} {word}")
    return esc(", ".join(parts))


def _comparison_legend(arms: pd.DataFrame) -> list[tuple[str, str]]:
    sd = float(arms["mde_sd_pct"].iloc[0])
    spread = (
        f"the study's pooled seed standard deviation, {sd:.2f} points"
        if bool(arms["mde_sd_measured"].iloc[0])
        else f"an assumed seed standard deviation of {sd:.2f} points (no arm has two finished "
        f"seeds; {stats.PRIOR_SEED_SD_SOURCE})"
    )
    return [
        ("test error %", "final test error, mean ± sample standard deviation over the arm's "
         "finished seeds."),
        ("n", "finished seeds with a final test error; diverged and failed trials are counted "
         "under trials, never averaged."),
        ("95% CI", "t confidence interval of the arm's mean test error, clipped to [0, 100]."),
        ("vs reference", "Welch's t-test against the reference arm with the same other "
         "factors: the difference ± its standard error, in points."),
        ("p (Holm)", "that test's p-value, Holm-corrected across the arms compared."),
        ("MDE", "minimum detectable difference: the smallest true difference this comparison "
         "finds with 80% power at α = 0.05 (two-sided two-sample t-test) at its seeds, "
         f"given {spread}. A smaller real difference would likely go unseen."),
        ("paper %", "the papers' published test error for the same setting (sources below)."),
        ("vs paper (σ)", "our mean minus the paper's number, in our standard deviations."),
        ("train / val error %", "means over finished seeds, like test error."),
        ("params, MACs", "parameters, and multiply-accumulates per image."),
        ("images/s, wall / trial", "training throughput and wall time, means over finished "
         "seeds."),
    ]  # fmt: skip


def comparison(
    arms: pd.DataFrame, factors: list[str], links: dict[str, Any], evidence: bool = True
) -> str:
    intro = (
        "One row per arm: final errors in percent over finished seeds, each arm tested "
        "against the reference arm with the same other factors. Every column is explained "
        "under the table."
    )
    if not evidence:
        intro += " This is a reduced run: its differences are no evidence for the question."
    if arms.empty:
        return section("Comparison", "", '<p class="absent">No trial has been recorded yet.</p>')
    # The verdict sits beside the error it judges; cost columns come last.
    headers = [
        "arm",
        "trials",
        "test error %",
        "n",
        "95% CI",
        "vs reference",
        "p (Holm)",
        "MDE",
        "paper %",
        "vs paper (σ)",
        "train error %",
        "val error %",
        "params",
        "MACs",
        "images/s",
        "wall / trial",
        "runs",
    ]
    numeric = [False, False, True, True, True, False] + [True] * 10 + [False]
    sources: list[str] = []
    rows, classes = [], []
    for _, row in arms.iterrows():
        ci = (
            f"[{num(row['test_error_pct_ci_low'])}, {num(row['test_error_pct_ci_high'])}]"
            if not is_missing(row["test_error_pct_ci_low"])
            else "–"
        )
        paper = "–"
        if not is_missing(row["paper_test_error_pct"]):
            # Sources as numbered notes under the table: inline they would double its width.
            if row["paper_source"] not in sources:
                sources.append(row["paper_source"])
            mark = sources.index(row["paper_source"]) + 1
            paper = f"{num(row['paper_test_error_pct'])}<sup>{mark}</sup>"
        verdict = esc(row["verdict"])
        if evidence and " beats " in row["verdict"]:
            verdict = f'<span class="verdict-win">{verdict}</span>'
        seeds = row["seeds"] or [None] * len(row["run_ids"])
        run_links = " ".join(
            link(esc(f"s{s}" if s is not None else "run"), run_url(links["ui"], links["exp"], r))
            for s, r in zip(seeds, row["run_ids"], strict=True)
        )
        rows.append(
            [
                esc(row["arm"]),
                _trials_cell(row),
                _error_cell(row),
                str(row["test_error_pct_n"]),
                ci,
                verdict,
                num(row["p_holm"], 3),
                num(row["mde_pct"]),
                paper,
                "–" if is_missing(row["paper_gap_sd"]) else f"{row['paper_gap_sd']:+.1f}",
                num(row["train_error_pct_mean"]),
                num(row["val_error_pct_mean"]),
                count(row["params"]),
                count(row["macs"]),
                num(row["images_per_s"], 0),
                duration(row["wall_time_s"]),
                run_links,
            ]
        )
        classes.append("reference" if row["verdict"] == "reference" else "")
    body = table(headers, rows, numeric, classes, table_id="comparison")
    body += _legend(_comparison_legend(arms), "comparison-legend")
    if sources:
        notes = "".join(f"<li>{esc(s)}</li>" for s in sources)
        body += f'<ol class="muted paper-sources">{notes}</ol>'
    else:
        body += '<p class="muted">No arm matches a setting the papers report.</p>'
    return section("Comparison", intro, body, "comparison-section")


def _finding(text: str, evidence: bool, finding_id: str) -> str:
    """A sentence the data support; in a reduced run, greyed and said to be no evidence."""
    if evidence:
        return f'<p class="finding" id="{finding_id}">{esc(text)}</p>'
    return (
        f'<p class="finding finding-reduced" id="{finding_id}">In this reduced run (no '
        f"evidence for the study's question): {esc(text)}</p>"
    )


def degradation(
    trials: pd.DataFrame,
    history: pd.DataFrame,
    arms: pd.DataFrame,
    factors: list[str],
    info: StudyInfo,
    evidence: bool = True,
) -> str:
    title = "Degradation (Fig. 6)"
    if trials.empty:
        return section(title, "", '<p class="absent">No trial has been recorded yet.</p>')
    applies, why = degradation_applies(trials)
    if not applies:
        return section(title, "", f'<p class="absent">{esc(why)}</p>')
    sentence = _finding(
        degradation_sentence(arms, trials, factors), evidence, "degradation-finding"
    )
    curves = figure(
        plots.training_curves(trials, history, factors),
        "No error histories recorded for finished trials.",
        "training-curves",
    )
    dataset = info.dataset or (
        str(trials["dataset"].iloc[0]) if "dataset" in trials.columns else ""
    )
    depth_fig = plots.depth_plot(arms, factors, dataset)
    depth = figure(depth_fig, "No depth plot: the study does not vary depth.", "depth-plot")
    if depth_fig is not None:
        overlay = (
            "Stars: the paper's Table 6 (ResNet option A on CIFAR-10; 110 layers shown as the "
            "mean of 5 runs), at the depths this study covers."
            if normalize_dataset(dataset) == "cifar10"
            else "The paper's CIFAR-10 numbers are not overlaid: this study uses another data set."
        )
        depth = f'<p class="muted">{esc(overlay)}</p>' + depth
    intro = (
        "Mean over finished seeds; the shaded band spans the lowest to the highest seed. "
        "Degradation (docs/paper.md §1): a deeper plain net ending with a higher training "
        "error than a shallower one."
    )
    return section(title, intro, sentence + curves + depth)


def factors_section(trials: pd.DataFrame, factors: list[str]) -> str:
    if not factors or trials.empty:
        return section("Factors", "", '<p class="absent">No scientific factors recorded.</p>')
    parts = [
        figure(
            plots.factor_plot(trials, f, factors),
            f"No finished trial with a test error for {f}.",
            f"factor-{f}",
        )
        for f in factors
    ]
    return section("Error by factor", "Every finished seed is a point.", "".join(parts))


def problems_section(
    problems: pd.DataFrame, links: dict[str, Any], failures: list[tuple[int, str]]
) -> str:
    """Every diverged or failed run; above them, the failed trials' reasons grouped (the
    same reason on 8 trials reads once, with its count)."""
    title = "Diverged and failed trials"
    if problems.empty:
        return section(title, "", '<p class="absent">None: every ended trial finished.</p>')
    rows = []
    for _, p in problems.iterrows():
        rows.append(
            [
                link(esc(p["trial_key"]), run_url(links["ui"], links["exp"], p["run_id"])),
                esc(p["status"]),
                "–" if is_missing(p["iteration"]) else str(int(p["iteration"])),
                esc(p["reason"]),
            ]
        )
    intro = "Iteration: where the loss became non-finite, or the last evaluation before a failure."
    body = ""
    if failures:
        items = "".join(f"<li><strong>{n} × </strong>{esc(reason)}</li>" for n, reason in failures)
        body += f'<p>Failure reasons, grouped:</p><ul class="reasons">{items}</ul>'
    body += table(
        ["trial", "status", "iteration", "reason"],
        rows,
        [False, False, True, False],
        table_id="problems",
    )
    return section(title, intro, body, "problems-section")


def notes_section(notes: list[str]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{esc(n)}</li>" for n in notes)
    return section("Problems reading the store", "", f"<ul>{items}</ul>")


def cost(trials: pd.DataFrame, factors: list[str]) -> str:
    parts = [
        figure(
            plots.cost_plot(trials, name, factors),
            f"No finished trial records {name} and a test error.",
            f"cost-{name}",
        )
        for name in ("macs", "params")
    ]
    intro = (
        "Final test error against compute (multiply-accumulates per image) and size "
        "(parameters): every finished seed is a small point, each arm's mean a diamond. "
        "An arm below and left of another is better on both counts."
    )
    return section("Error against compute", intro, "".join(parts), "cost-section")


EFFECT_LEGEND = [
    ("effect", "the contrast named beside it, in points of test error (positive: higher "
     "error), estimated in the Type II model of the term."),
    ("95% CI", "t interval of that contrast, from the model's residual seed variance."),
    ("p", "Type II F test of the whole term (all its levels); for a two-level term the "
     "same as the contrast's t-test."),
    ("F (df)", "the F statistic, with the term's and the residual degrees of freedom."),
]  # fmt: skip


def effects_section(effects: Effects, evidence: bool = True) -> str:
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
    body = ""
    if effects.shortcut_depth:
        body += _finding(effects.shortcut_depth, evidence, "shortcut-depth-finding")
    rows = [
        [
            esc(e.term),
            esc(e.contrast),
            signed(e.estimate),
            f"[{signed(e.ci_low)}, {signed(e.ci_high)}]",
            esc(stats.format_p(e.p).removeprefix("p = ")),
            f"{e.f:.2f} ({e.df_num}, {e.df_den})",
        ]
        for e in effects.rows
    ]
    body += table(
        ["term", "contrast", "effect (points)", "95% CI", "p", "F (df)"],
        rows,
        [False, False, True, True, True, True],
        table_id="effects-table",
    )
    body += _legend(EFFECT_LEGEND, "effects-legend")
    body += (
        '<ul class="effect-sentences">'
        + "".join(f"<li>{esc(e.sentence)}</li>" for e in effects.rows)
        + "</ul>"
    )
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
