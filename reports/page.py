"""The report page: StudyData in, HTML, CSV-ready tables and paper-ready text out. No
MLflow here. The header (reports.header) and the sections (reports.sections) render; this
module decides what goes on the page and in which files."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd

from reports import plots, sections
from reports.context import reduction, reproducibility, settings_of, what_ran
from reports.data import (
    FINAL_METRICS,
    REPRO_TAGS,
    StudyData,
    empty_runs,
    factor_names,
    select_trials,
    setting_names,
)
from reports.effects import factorial_effects
from reports.export import comparison_latex, comparison_markdown
from reports.header import banner, header, reduced_notice
from reports.html import figure, page
from reports.tables import arm_table, count_trials, failure_groups, problem_table


@dataclass
class Report:
    """A rendered report: the page, the tables written beside it as CSV, text files
    (comparison.md, comparison.tex) and whether the study was partial when it was read."""

    html: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    partial: bool = False
    texts: dict[str, str] = field(default_factory=dict)


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
    reduced = reduction(info, trials) if not trials.empty else reduction(info, runs)
    evidence = not reduced
    arms = arm_table(trials, info, evidence=evidence)
    problems = problem_table(runs, data.history)
    failures = failure_groups(trials)
    effects = factorial_effects(trials, factors, evidence=evidence)
    settings = settings_of(trials, info, factors)
    links = {"ui": mlflow_ui_url, "exp": info.experiment_id}
    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")

    top = banner(counts, failures) + reduced_notice(reduced)
    body = [
        header(
            info,
            top,
            what_ran(info, trials, factors),
            settings,
            reproducibility(trials, info),
            counts,
            trials,
            runs,
            factors,
            when,
            links,
        ),
        sections.comparison(arms, factors, links, evidence),
        sections.effects_section(effects, evidence),
        sections.degradation(trials, data.history, arms, factors, info, evidence),
        sections.factors_section(trials, factors),
        sections.cost(trials, factors),
        sections.section(
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
        sections.section(
            "Learning-rate schedules",
            "The learning rate each distinct policy setting actually used (lr_trace.json); "
            "warm-ups and plateau drops show here as steps.",
            figure(
                plots.lr_plot(data.lr_traces, runs),
                "No learning-rate trace recorded.",
                "lr-traces",
            ),
        ),
        sections.problems_section(problems, links, failures),
        sections.notes_section(data.notes),
        sections.footer(),
    ]
    title = f"ablate report: {info.name}"
    if counts.partial:
        title = f"[PARTIAL] {title}"
    elif counts.state == "none":
        title = f"[NO RESULTS] {title}"
    paper_title = f"{info.name}: final error over seeds"
    return Report(
        html=page(title, "".join(body)),
        tables={
            "arms": _csv_arms(arms),
            "trials": _csv_trials(trials, factors, setting_names(info, trials)),
            "problems": problems,
            "effects": effects.frame(),
        },
        partial=counts.partial,
        texts={
            "comparison.md": comparison_markdown(arms, factors, paper_title),
            "comparison.tex": comparison_latex(arms, factors, paper_title),
        },
    )


def _csv_arms(arms: pd.DataFrame) -> pd.DataFrame:
    if arms.empty:
        return arms
    out = arms.copy()
    out["run_ids"] = out["run_ids"].map(lambda ids: ";".join(ids))
    out["seeds"] = out["seeds"].map(lambda s: ";".join(map(str, s)))
    return out


def _csv_trials(trials: pd.DataFrame, factors: list[str], settings: list[str]) -> pd.DataFrame:
    """One row per trial: its key and arm, every setting (factors first), status, final
    metrics, cost and where and how it ran."""
    if trials.empty:
        return trials
    columns = [
        "trial_key",
        "arm",
        *factors,
        "seed",
        *settings,
        "status",
        "diverged_at",
        "reason",
        *FINAL_METRICS,
        "params",
        "macs",
        *REPRO_TAGS,
        "run_id",
    ]
    present = [c for c in dict.fromkeys(columns) if c in trials.columns]
    return trials[present]
