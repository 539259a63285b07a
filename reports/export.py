"""Paper-ready copies of the comparison table: Markdown (comparison.md) and LaTeX with
booktabs (comparison.tex). One row per arm: its factor levels, the final test and training
error as mean ± std (n seeds) over finished seeds, and the paper's number where one is
known; the lowest mean of each error column is bold."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd

# (header, mean column, std column, n column); the paper column has no spread.
ERROR_COLUMNS = (
    ("test error %", "test_error_pct_mean", "test_error_pct_std", "test_error_pct_n"),
    ("train error %", "train_error_pct_mean", "train_error_pct_std", "train_error_pct_n"),
)
PAPER_COLUMN = ("paper test error %", "paper_test_error_pct")

# Plain ASCII LaTeX for the few non-ASCII signs the tables use, after the special characters.
LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                 "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                 "^": r"\textasciicircum{}", "±": r"$\pm$", "–": "--", "×": r"$\times$",
                 "−": "$-$"}  # fmt: skip


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _best(arms: pd.DataFrame, column: str) -> float:
    values = pd.to_numeric(arms[column], errors="coerce") if column in arms.columns else None
    if values is None or values.dropna().empty:
        return math.nan
    return float(values.min())


def _cells(
    arms: pd.DataFrame, factors: list[str], bold: Callable[[str], str]
) -> tuple[list[str], list[list[str]], bool]:
    """Header and body as plain text cells; `bold` marks the best of a column."""
    factors = [f for f in factors if f in arms.columns] or ["arm"]
    paper = PAPER_COLUMN[1] in arms.columns and arms[PAPER_COLUMN[1]].notna().any()
    headers = [*factors, *(c[0] for c in ERROR_COLUMNS)] + ([PAPER_COLUMN[0]] if paper else [])
    best = {c[1]: _best(arms, c[1]) for c in ERROR_COLUMNS}
    best_paper = _best(arms, PAPER_COLUMN[1]) if paper else math.nan
    rows = []
    for _, arm in arms.iterrows():
        row = [str(arm[f]) for f in factors]
        for _, mean, std, n in ERROR_COLUMNS:
            value = arm.get(mean)
            if not _finite(value):
                row.append("–")
                continue
            spread = arm.get(std)
            text = f"{value:.2f} ± {spread:.2f}" if _finite(spread) else f"{value:.2f}"
            text += f" (n={int(arm[n])})"
            row.append(bold(text) if value == best[mean] else text)
        if paper:
            value = arm.get(PAPER_COLUMN[1])
            text = f"{value:.2f}" if _finite(value) else "–"
            row.append(bold(text) if _finite(value) and value == best_paper else text)
        rows.append(row)
    return headers, rows, paper


def comparison_markdown(arms: pd.DataFrame, factors: list[str], title: str) -> str:
    """The comparison as a GitHub-flavoured Markdown table."""
    if arms.empty:
        return f"# {title}\n\nNo trial has been recorded yet.\n"

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    headers, rows, paper = _cells(arms, factors, lambda t: f"**{t}**")
    lines = [f"# {title}", ""]
    lines.append("| " + " | ".join(cell(h) for h in headers) + " |")
    aligns = ["---"] * (len(headers) - len(ERROR_COLUMNS) - paper) + ["---:"] * (
        len(ERROR_COLUMNS) + paper
    )
    lines.append("| " + " | ".join(aligns) + " |")
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    lines += ["", _footnote(paper)]
    return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in text)


def comparison_latex(arms: pd.DataFrame, factors: list[str], title: str) -> str:
    """The comparison as a LaTeX table (needs \\usepackage{booktabs})."""
    if arms.empty:
        return f"% {latex_escape(title)}: no trial has been recorded yet.\n"

    # Cells are marked bold with a control character, escaped, then made LaTeX bold.
    headers, rows, paper = _cells(arms, factors, lambda t: "\x01" + t)

    def tex(text: str) -> str:
        if text.startswith("\x01"):
            return f"\\textbf{{{latex_escape(text[1:])}}}"
        return latex_escape(text)

    keys = len(headers) - len(ERROR_COLUMNS) - paper
    spec = "l" * keys + "r" * (len(headers) - keys)
    lines = [
        "% " + latex_escape(title),
        "% Needs \\usepackage{booktabs}.",
        "\\begin{table}[t]",
        "\\centering",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(latex_escape(h) for h in headers) + " \\\\",
        "\\midrule",
        *(" & ".join(tex(c) for c in row) + " \\\\" for row in rows),
        "\\bottomrule",
        "\\end{tabular}",
        f"\\caption{{{latex_escape(title)}. {latex_escape(_footnote(paper))}}}",
        "\\end{table}",
    ]
    return "\n".join(lines) + "\n"


def _footnote(paper: bool) -> str:
    text = (
        "Final error in percent, mean ± standard deviation over finished seeds (n); "
        "bold: the lowest mean in its column."
    )
    if paper:
        text += " Paper: the published test error for the same setting, where one exists."
    return text
