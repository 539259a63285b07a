"""Paper-ready copies of the comparison table: Markdown (comparison.md) and LaTeX with
booktabs (comparison.tex). One row per arm: its factor levels, the final test and training
error as mean ± std (n seeds) over finished seeds, and the paper's number where one is
known; the lowest mean of each error column is bold."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from reports.html import is_missing

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


def _cells(
    arms: pd.DataFrame, factors: list[str], bold: Callable[[str], str]
) -> tuple[list[str], list[list[str]], bool]:
    """Header and body as plain text cells; `bold` marks the best of a column."""
    factors = [f for f in factors if f in arms.columns] or ["arm"]
    paper = bool(arms[PAPER_COLUMN[1]].notna().any())
    columns = [*ERROR_COLUMNS, *([(*PAPER_COLUMN, None, None)] if paper else [])]
    rows = []
    for _, arm in arms.iterrows():
        row = [str(arm[f]) for f in factors]
        for _, mean, std, n in columns:
            value = arm[mean]
            if is_missing(value):
                row.append("–")
                continue
            text = f"{value:.2f}"
            text += f" ± {arm[std]:.2f}" if std and not is_missing(arm[std]) else ""
            text += f" (n={int(arm[n])})" if n else ""
            row.append(bold(text) if value == arms[mean].min() else text)
        rows.append(row)
    return [*factors, *(c[0] for c in columns)], rows, paper


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
