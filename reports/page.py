"""The report page: StudyData in, HTML and CSV-ready tables out. No MLflow here."""

from __future__ import annotations

import importlib.metadata
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import plotly
import scipy

from reports import plots
from reports.data import (
    FINAL_METRICS,
    StudyData,
    StudyInfo,
    empty_runs,
    factor_names,
    select_trials,
)
from reports.findings import degradation_applies, degradation_sentence
from reports.html import count, duration, esc, figure, is_missing, link, num, page, run_url, table
from reports.paper import normalize_dataset
from reports.tables import Counts, arm_table, count_trials, plural, problem_table, recipe


@dataclass
class Report:
    """A rendered report: the page, the tables written beside it as CSV, and whether the
    study was partial when it was read."""

    html: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    partial: bool = False


def versions() -> list[tuple[str, str]]:
    try:
        ablate = importlib.metadata.version("ablate")
    except importlib.metadata.PackageNotFoundError:
        ablate = "not installed (run from a source tree)"
    return [
        ("ablate", ablate),
        ("mlflow", mlflow.__version__),
        ("pandas", pd.__version__),
        ("plotly", plotly.__version__),
        ("scipy", scipy.__version__),
        ("numpy", np.__version__),
        ("python", platform.python_version()),
    ]


def render_report(
    data: StudyData,
    mlflow_ui_url: str | None = None,
    expected_trials: int | None = None,
    generated_at: datetime | None = None,
) -> Report:
    """Build the page of one study from its frames."""
    info = data.info
    runs = data.runs if not data.runs.empty else empty_runs()
    trials = select_trials(runs)
    factors = factor_names(info, trials) if not trials.empty else list(info.factors)
    counts = count_trials(runs, info, expected_trials)
    arms = arm_table(trials, info)
    problems = problem_table(runs, data.history)
    links = {"ui": mlflow_ui_url, "exp": info.experiment_id}
    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")

    sections = [
        _header(info, counts, trials, runs, factors, when, links),
        _comparison(arms, factors, links),
        _degradation(trials, data.history, arms, factors, info),
        _factors(trials, factors),
        _section(
            "Layer responses (Fig. 7)",
            "Standard deviation of each weight layer's BN output (before the addition and "
            "ReLU) on a fixed batch of test images, mean over finished seeds. The paper finds "
            "residual nets respond less than plain ones, and deeper residual nets less still.",
            figure(
                plots.layer_response_plot(trials, data.layer_responses, factors),
                "No layer responses recorded (layer_responses.json) for finished trials.",
                "layer-responses",
            ),
        ),
        _section(
            "Learning-rate schedules",
            "The learning rate each distinct policy setting actually used (lr_trace.json); "
            "warm-ups and plateau drops show here as steps.",
            figure(
                plots.lr_plot(data.lr_traces, runs),
                "No learning-rate trace recorded.",
                "lr-traces",
            ),
        ),
        _problems(problems, links),
        _notes(data.notes),
        _footer(),
    ]
    title = f"ablate report: {info.name}"
    if counts.partial:
        title = f"[PARTIAL] {title}"
    return Report(
        html=page(title, "".join(sections)),
        tables={
            "arms": _csv_arms(arms),
            "trials": _csv_trials(trials, factors),
            "problems": problems,
        },
        partial=counts.partial,
    )


def _section(title: str, intro: str, body: str) -> str:
    intro_html = f'<p class="muted">{esc(intro)}</p>' if intro else ""
    return f"<section><h2>{esc(title)}</h2>{intro_html}{body}</section>"


def _banner(counts: Counts) -> str:
    if counts.partial:
        reasons = "; ".join(counts.partial_reasons)
        return (
            '<div class="partial-banner" id="partial-banner" role="alert">'
            "<strong>Partial study: this report shows only what exists so far.</strong> "
            f"{esc(reasons)}. Means, tests and plots cover finished trials only and may "
            "change when the study completes.</div>"
        )
    return (
        '<div class="complete-banner" id="complete-banner">Complete: every planned trial '
        "has ended.</div>"
    )


def _counts_text(counts: Counts) -> str:
    parts = [
        f"{counts.finished} finished",
        f"{counts.diverged} diverged",
        f"{counts.failed} failed",
        f"{counts.running} running or interrupted",
        f"{counts.missing} missing",
    ]
    text = " · ".join(parts)
    if counts.expected is not None:
        estimated = ", estimated as arms seen × seeds" if counts.expected_estimated else ""
        text += f" (of {counts.expected} planned{estimated})"
    if counts.retried:
        text += f"; {plural(counts.retried, 'earlier attempt')} retried"
    return esc(text)


def _compute_time(runs: pd.DataFrame) -> str:
    if runs.empty or "wall_time_s" not in runs.columns:
        return "not recorded"
    wall = pd.to_numeric(runs["wall_time_s"], errors="coerce")
    trial = wall[runs["role"] == "trial"].sum()
    tune = wall[runs["role"] == "tune"].sum()
    text = f"{duration(trial + tune)} (trials {duration(trial)}, tuning {duration(tune)})"
    unmeasured = int(wall.isna().sum())
    if unmeasured:
        runs_text = plural(unmeasured, "run")
        text += f"; {runs_text} without wall_time_s (failed or running) not counted"
    return esc(text)


def _header(
    info: StudyInfo,
    counts: Counts,
    trials: pd.DataFrame,
    runs: pd.DataFrame,
    factors: list[str],
    when: str,
    links: dict[str, Any],
) -> str:
    recipe_text = (
        ", ".join(f"{k} = {v}" for k, v in recipe(trials, factors)) if not trials.empty else "–"
    )
    reference = ", ".join(f"{k} = {v}" for k, v in info.reference.items()) or "not named"
    exp_link = link(esc(info.experiment_id or "–"), _experiment_url(links))
    facts = [
        ("Data set", esc(info.dataset or "not recorded")),
        ("Preset", esc(info.preset or "–")),
        ("Scientific factors", esc(", ".join(factors) or "–")),
        ("Reference arm", esc(reference)),
        ("Fixed recipe", esc(recipe_text)),
        ("Seeds", esc(_seeds(info, trials))),
        ("Trials", _counts_text(counts)),
        ("Tuning runs", esc(f"{counts.tune_runs} (not part of the comparison)")),
        ("Total compute", _compute_time(runs)),
        ("Study fingerprint", esc(info.fingerprint or "–")),
        ("Code version", esc(info.git_commit or "git commit not recorded")),
        ("Libraries (report)", esc(", ".join(f"{n} {v}" for n, v in versions()))),
        ("MLflow experiment", exp_link),
        ("Generated", esc(when)),
    ]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    question = esc(info.question or "The study's question was not recorded.")
    return (
        f"<header><h1>{esc(info.name)}</h1>{_banner(counts)}"
        f'<p class="question">{question}</p><dl class="facts">{dl}</dl></header>'
    )


def _seeds(info: StudyInfo, trials: pd.DataFrame) -> str:
    if info.seeds:
        return ", ".join(map(str, info.seeds))
    if "seed" in trials.columns and not trials.empty:
        seen = sorted(trials["seed"].dropna().unique())
        return ", ".join(map(str, seen)) + " (seen in runs; the plan was not recorded)"
    return "–"


def _experiment_url(links: dict[str, Any]) -> str | None:
    if not links["ui"] or not links["exp"]:
        return None
    return f"{links['ui'].rstrip('/')}/#/experiments/{links['exp']}"


def _error_cell(row: pd.Series) -> str:
    if row["test_error_pct_n"] == 0:
        return "–"
    if is_missing(row["test_error_pct_std"]):
        return f"{num(row['test_error_pct_mean'])} <small>(one seed, no spread)</small>"
    return f"{num(row['test_error_pct_mean'])} ± {num(row['test_error_pct_std'])}"


def _trials_cell(row: pd.Series) -> str:
    parts = [f"{row['finished']} finished"]
    for key, word in (("diverged", "diverged"), ("failed", "failed"), ("running", "not ended")):
        if row[key]:
            parts.append(f"{row[key]} {word}")
    return esc(", ".join(parts))


def _comparison(arms: pd.DataFrame, factors: list[str], links: dict[str, Any]) -> str:
    intro = (
        "One row per arm. Errors are final values in percent over finished seeds: mean ± "
        "standard deviation (n seeds), with a 95% confidence interval from the t-distribution. "
        "Diverged trials are counted but not averaged. Each arm is tested against the "
        "reference arm with the same other factors (Welch's t-test, Holm-corrected across "
        "arms; ± is the standard error of the difference). 'vs paper' is our mean minus the "
        "paper's number, in our standard deviations."
    )
    if arms.empty:
        return _section("Comparison", "", '<p class="absent">No trial has been recorded yet.</p>')
    # The verdict sits beside the error it judges; cost columns come last.
    headers = [
        "arm",
        "trials",
        "test error %",
        "n",
        "95% CI",
        "vs reference",
        "p (Holm)",
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
    numeric = [False, False, True, True, True, False] + [True] * 9 + [False]
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
        if " beats " in row["verdict"]:
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
    if sources:
        notes = "".join(f"<li>{esc(s)}</li>" for s in sources)
        body += f'<ol class="muted paper-sources">{notes}</ol>'
    else:
        body += '<p class="muted">No arm matches a setting the papers report.</p>'
    return _section("Comparison", intro, body)


def _degradation(
    trials: pd.DataFrame,
    history: pd.DataFrame,
    arms: pd.DataFrame,
    factors: list[str],
    info: StudyInfo,
) -> str:
    title = "Degradation (Fig. 6)"
    if trials.empty:
        return _section(title, "", '<p class="absent">No trial has been recorded yet.</p>')
    applies, why = degradation_applies(trials)
    if not applies:
        return _section(title, "", f'<p class="absent">{esc(why)}</p>')
    finding = esc(degradation_sentence(arms, trials, factors))
    sentence = f'<p class="finding" id="degradation-finding">{finding}</p>'
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
        "Degradation (PAPER.md section 1): a deeper plain net ending with a higher training "
        "error than a shallower one."
    )
    return _section(title, intro, sentence + curves + depth)


def _factors(trials: pd.DataFrame, factors: list[str]) -> str:
    if not factors or trials.empty:
        return _section("Factors", "", '<p class="absent">No scientific factors recorded.</p>')
    parts = [
        figure(
            plots.factor_plot(trials, f, factors),
            f"No finished trial with a test error for {f}.",
            f"factor-{f}",
        )
        for f in factors
    ]
    return _section("Error by factor", "Every finished seed is a point.", "".join(parts))


def _problems(problems: pd.DataFrame, links: dict[str, Any]) -> str:
    title = "Diverged and failed trials"
    if problems.empty:
        return _section(title, "", '<p class="absent">None: every ended trial finished.</p>')
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
    body = table(
        ["trial", "status", "iteration", "reason"],
        rows,
        [False, False, True, False],
        table_id="problems",
    )
    return _section(title, intro, body)


def _notes(notes: list[str]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{esc(n)}</li>" for n in notes)
    return _section("Problems reading the store", "", f"<ul>{items}</ul>")


def _footer() -> str:
    files = ", ".join(f'<a href="{n}.csv">{n}.csv</a>' for n in ("arms", "trials", "problems"))
    return f'<footer><h2>Data</h2><p class="muted">The tables as CSV: {files}.</p></footer>'


def _csv_arms(arms: pd.DataFrame) -> pd.DataFrame:
    if arms.empty:
        return arms
    out = arms.copy()
    out["run_ids"] = out["run_ids"].map(lambda ids: ";".join(ids))
    out["seeds"] = out["seeds"].map(lambda s: ";".join(map(str, s)))
    return out


def _csv_trials(trials: pd.DataFrame, factors: list[str]) -> pd.DataFrame:
    if trials.empty:
        return trials
    columns = [
        "trial_key",
        "arm",
        *factors,
        "seed",
        "status",
        "diverged_at",
        "reason",
        *FINAL_METRICS,
        "params",
        "macs",
        "run_id",
    ]
    present = [c for c in dict.fromkeys(columns) if c in trials.columns]
    return trials[present]
