"""The report page: StudyData in, HTML, CSV-ready tables and paper-ready text out. No
MLflow here. reports.study computes the numbers; the header, the answer and the sections
render them; this module decides what goes on the page, in which order, and in which
files."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd

from reports import sections
from reports.answer import answer
from reports.data import StudyData
from reports.header import details, header
from reports.html import page
from reports.study import analyse, arms_frame, trials_frame
from reports.tables import comparison_latex, comparison_markdown


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
        header(a, answer(a)),
        sections.comparison(a, links),
        sections.effects_section(a.effects),
        sections.degradation(a),
        sections.curves_section(a),
        sections.factors_section(a),
        sections.cost(a),
        sections.layer_responses(a),
        sections.lr_section(a),
        sections.problems_section(a.problems, links, a.failures),
        details(a, when, links),
        sections.notes_section(data.notes),
        sections.footer(),
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
