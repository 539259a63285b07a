"""HTML building blocks: escaping, number formats, tables, figures and the page shell.

Every string that came from MLflow goes through `esc`; the page has no external
resources (plotly's JavaScript is inlined once in the head), so it works offline.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

PLOT_CONFIG = {"displaylogo": False, "responsive": True}

# The page's styles: a stylesheet beside this module, inlined into every page.
CSS = (Path(__file__).parent / "report.css").read_text(encoding="utf-8")


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def num(value: Any, digits: int = 2) -> str:
    if pd.isna(value):
        return "–"
    return f"{value:.{digits}f}"


def count(value: Any) -> str:
    """Parameter and MAC counts the way the paper writes them (0.27M, 1.8G)."""
    if pd.isna(value):
        return "–"
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.0f}"


def duration(seconds: Any) -> str:
    if pd.isna(seconds):
        return "–"
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


# MLflow 3's UI opens experiments in its GenAI view unless the link asks for model training.
MODEL_TRAINING = "workflowType=machine_learning"


def experiment_url(ui_url: str | None, experiment_id: str) -> str | None:
    if not ui_url or not experiment_id:
        return None
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{MODEL_TRAINING}"


def run_url(ui_url: str | None, experiment_id: str, run_id: str) -> str | None:
    if not ui_url:
        return None
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING}"


def link(text: str, url: str | None) -> str:
    """`text` is already HTML; the URL is escaped here."""
    if not url:
        return text
    return f'<a href="{esc(url)}" target="_blank" rel="noopener">{text}</a>'


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    numeric: Sequence[bool] | None = None,
    row_classes: Sequence[str] | None = None,
    table_id: str = "",
) -> str:
    """Cells are HTML already (escape at the call site); headers are plain text."""
    numeric = numeric or [False] * len(headers)
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(
            f'<td class="num">{c}</td>' if numeric[j] else f"<td>{c}</td>"
            for j, c in enumerate(row)
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return (
        f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def section(title: str, intro: str, body: str, section_id: str = "") -> str:
    intro_html = f'<p class="muted">{esc(intro)}</p>' if intro else ""
    ident = f' id="{esc(section_id)}"' if section_id else ""
    return f"<section{ident}><h2>{esc(title)}</h2>{intro_html}{body}</section>"


def legend(items: list[tuple[str, str]], legend_id: str) -> str:
    """What each column of a table means, under it."""
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items)
    return f'<dl class="legend" id="{esc(legend_id)}">{rows}</dl>'


def figure(fig: go.Figure | None, absent: str, div_id: str) -> str:
    """A figure without its own copy of plotly.js, or the reason it is absent."""
    if fig is None:
        return f'<p class="absent">{esc(absent)}</p>'
    body = pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=False,
        config=PLOT_CONFIG,
        div_id=div_id,
        default_width="100%",
    )
    return f'<div class="figure">{body}</div>'


def page(title: str, body: str) -> str:
    # plotly.js inlined once for the whole page: the file must open offline.
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script>'
        f"</head><body><main>{body}</main></body></html>\n"
    )
