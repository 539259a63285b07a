"""HTML building blocks: escaping, number formats, tables, figures and the page shell.

Every string that came from MLflow goes through `esc`; the page has no external
resources (plotly's JavaScript is inlined once in the head), so it works offline.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

PLOT_CONFIG = {"displaylogo": False, "responsive": True}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1d2330; background: #fff; line-height: 1.45; }
main { max-width: 1600px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 1.7em; margin: 0.2em 0; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #dde1e8; padding-bottom: 4px; }
.question { font-size: 1.15em; color: #34405a; margin: 0.3em 0 1em; }
.banner { border-radius: 6px; padding: 12px 16px; margin: 12px 0 16px;
          overflow-wrap: anywhere; }
.banner strong { font-size: 1.05em; }
.banner-red { background: #fde8e8; border: 2px solid #c53030; }
.banner-red strong { color: #9b1c1c; }
.banner-amber { background: #fff4d6; border: 2px solid #e0a800; }
.banner-amber strong { color: #8a5a00; }
.banner-green { background: #e8f6ec; border: 1px solid #5cb27a; padding: 8px 16px; }
.banner-grey { background: #eef0f4; border: 2px solid #6b7385; }
.banner-grey strong { color: #34405a; }
.banner ul { margin: 6px 0 0; padding-left: 20px; }
ul.reasons li { white-space: normal; overflow-wrap: anywhere; margin: 2px 0; }
.ran { color: #34405a; margin: 0 0 1em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 0; }
dl.facts dt { font-weight: 600; color: #4a5568; }
dl.facts dd { margin: 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.9em; margin: 8px 0; }
th, td { border-bottom: 1px solid #e2e6ee; padding: 5px 9px; text-align: left;
         vertical-align: top; }
th { background: #f4f6fa; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.reference td { background: #f3f8ff; }
small, .muted { color: #6b7385; }
dl.legend { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px;
            font-size: 0.85em; color: #4a5568; margin: 6px 0 12px; }
dl.legend dt { font-weight: 600; }
dl.legend dd { margin: 0; }
#problems td:nth-child(4) { overflow-wrap: anywhere; min-width: 300px; }
.absent { color: #6b7385; font-style: italic; }
.verdict-win { color: #17643a; font-weight: 600; }
.figure { margin: 8px 0 24px; }
#comparison, #arm-costs { font-size: 0.85em; }
.answer { background: #f4f6fa; border-left: 4px solid #4a6fa5; padding: 4px 16px 8px;
          margin: 0 0 16px; }
.answer h2 { margin: 0.4em 0 0.2em; border: 0; font-size: 1.15em; }
.answer .basis { margin: 0; color: #34405a; }
.answer ul { margin: 6px 0; padding-left: 20px; }
.answer li { margin: 3px 0; }
.answer-reduced { border-left-color: #9aa3b5; }
.paper-sources { font-size: 0.85em; }
"""


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
