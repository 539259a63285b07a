"""Paper-ready tables (comparison.md, comparison.tex), the clipped confidence intervals and
the minimum detectable difference of each comparison."""

import math
import re

import numpy as np
import pandas as pd
import pytest
import report_fixtures as rf

from reports import render_report, stats
from reports.data import select_trials
from reports.tables import arm_table, comparison_latex, comparison_markdown, latex_escape


def arms_and_trials(spec: rf.StudySpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    data = rf.study_data(spec)
    trials = select_trials(data.runs)
    return arm_table(trials, data.info), trials


def test_markdown_table_marks_the_lowest_mean_of_each_column():
    spec = rf.partial_study()
    arms, _ = arms_and_trials(spec)
    text = comparison_markdown(arms, ["depth", "shortcut"], "shortcut_types")
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header, _, *rows = lines
    assert header == "| depth | shortcut | test error % | train error % | paper test error % |"
    assert len(rows) == 6
    errors = rf.seed_errors(spec)
    best_arm = min(errors, key=lambda a: np.mean(errors[a]))
    depth, shortcut = (part.split("=")[1] for part in best_arm.split())
    values = errors[best_arm]
    best = (
        f"| {depth} | {shortcut} | **{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f} "
        f"(n={len(values)})** |"
    )
    assert any(row.startswith(best) for row in rows)
    assert sum("**" in row.split("|")[3] for row in rows) == 1  # one best per column
    assert "8.35 (n=1)" in text  # one seed: no spread claimed
    # The paper column: these arms trained a short recipe, so no paper number stands beside
    # them (reports/paper.py); where one does, the lowest is bold as in the other columns.
    assert all(row.rstrip(" |").endswith("–") for row in rows)
    paper_like = arms.assign(paper_test_error_pct=arms["depth"].map({20: 8.75, 56: 6.97}))
    text = comparison_markdown(paper_like, ["depth", "shortcut"], "shortcut_types")
    assert "| **6.97** |" in text and "| 8.75 |" in text


def test_latex_table_is_booktabs_with_the_same_bold_cells():
    arms, _ = arms_and_trials(rf.partial_study())
    tex = comparison_latex(arms, ["depth", "shortcut"], "shortcut_types")
    md = comparison_markdown(arms, ["depth", "shortcut"], "shortcut_types")
    for command in ("\\toprule", "\\midrule", "\\bottomrule", "\\begin{tabular}{llrrr}"):
        assert command in tex
    assert "depth & shortcut & test error \\% & train error \\% & paper test error \\% \\\\" in tex
    bold_md = re.findall(r"\*\*(.*?)\*\*", md)
    bold_tex = re.findall(r"\\textbf\{(.*?)\}(?= &| \\\\)", tex)
    assert [b.replace(" ± ", " $\\pm$ ") for b in bold_md] == bold_tex
    assert len(tex.splitlines()) == 12 + len(arms)  # 11 lines of frame, 1 caption


def test_latex_escapes_names_from_the_store():
    assert latex_escape("skip_length 50% & #k {x}") == r"skip\_length 50\% \& \#k \{x\}"
    assert latex_escape("a ± b – c") == r"a $\pm$ b -- c"


def test_texts_are_part_of_the_report():
    report = render_report(rf.study_data(rf.complete_study()))
    assert report.texts["comparison.md"].startswith("# degradation@smoke: final error over seeds")
    assert "\\textbf{" in report.texts["comparison.tex"]


def test_confidence_interval_of_an_error_rate_is_clipped_to_0_100():
    spec = rf.complete_study()
    for trial, value in zip(spec.trials[:3], (0.001, 0.05, 0.002), strict=True):
        trial.final_override = {"test/error": value}
    arms, _ = arms_and_trials(spec)
    row = arms.set_index("arm").loc[rf.arm_label(rf.resolved(spec.trials[0]), spec.factors)]
    values = np.array([0.1, 5.0, 0.2])
    from scipy import stats as sps

    low, high = sps.t.interval(0.95, 2, loc=values.mean(), scale=sps.sem(values))
    assert low < 0 and row["test_error_pct_ci_low"] == 0.0
    assert row["test_error_pct_ci_high"] == pytest.approx(high)


def test_each_comparison_row_has_its_minimum_detectable_difference():
    spec = rf.partial_study()
    arms, _ = arms_and_trials(spec)
    errors = rf.seed_errors(spec)
    arms = arms.set_index("arm")
    # Pooled within-arm standard deviation over arms with 2 or more finished seeds.
    groups = [np.array(v) for v in errors.values() if len(v) >= 2]
    df = sum(len(g) - 1 for g in groups)
    sd = math.sqrt(sum(((g - g.mean()) ** 2).sum() for g in groups) / df)
    # The verdicts' test: Welch's, at Holm's first level over the arms compared.
    compared = (arms["reference_arm"] != "") & (arms["reference_arm"] != arms.index)
    level = 0.05 / int(compared.sum())
    for arm in ("depth=20 shortcut=none", "depth=20 shortcut=B", "depth=56 shortcut=none"):
        row = arms.loc[arm]
        n_a, n_b = len(errors[arm]), len(errors[row["reference_arm"]])
        power = stats.welch_power(row["mde_pct"], sd, sd, n_a, n_b, level)
        assert power == pytest.approx(0.8, abs=1e-4), arm
    assert arms["mde_sd_pct"].iloc[0] == pytest.approx(sd) and arms["mde_sd_measured"].all()
    # No test, no MDE: the reference itself, and an arm with one finished seed.
    assert math.isnan(arms.loc["depth=20 shortcut=A", "mde_pct"])
    assert math.isnan(arms.loc["depth=56 shortcut=B", "mde_pct"])


def test_mde_legend_names_the_prior_when_nothing_is_measured():
    spec = rf.complete_study()
    spec.trials = [t for t in spec.trials if t.settings["seed"] == 0]
    report = render_report(rf.study_data(spec))
    legend = re.search(r'<dl class="legend" id="comparison-legend">.*?</dl>', report.html).group(0)
    assert "assumed seed standard deviation of 0.50 points" in legend
    table = re.search(r'<table id="comparison">.*?</thead>', report.html).group(0)
    assert legend.count("<dt>") == table.count("<th>") == 10  # every column explained
