"""Factorial effects (reports.effects) against answers computed by hand and with numpy's
least squares, independently of statsmodels."""

import itertools
import math
import re

import numpy as np
import pandas as pd
import pytest
import report_fixtures as rf
from scipy import stats as sps

from reports import render_report
from reports.data import select_trials
from reports.effects import factorial_effects

T8 = sps.t.ppf(0.975, 8)


def trials_frame(cells: dict[tuple, list[float]], factors=("shortcut", "depth")) -> pd.DataFrame:
    """select_trials()-shaped rows: one finished trial per value (test error in percent)."""
    rows = []
    for levels, values in cells.items():
        settings = dict(zip(factors, levels, strict=True))
        arm = " ".join(f"{f}={v}" for f, v in settings.items())
        for seed, value in enumerate(values):
            rows.append(
                {
                    **settings,
                    "arm": arm,
                    "trial_key": f"{arm} seed={seed}",
                    "seed": seed,
                    "status": "finished" if math.isfinite(value) else "failed",
                    "test/error": value / 100,
                }
            )
    return pd.DataFrame(rows)


# Cell means 8.2, 8.6, 12.3, 7.2; every cell deviates -0.2, +0.2, 0: s^2 = 0.04 on 8 df.
BALANCED = {
    ("none", 20): [8.0, 8.4, 8.2],
    ("A", 20): [8.4, 8.8, 8.6],
    ("none", 56): [12.1, 12.5, 12.3],
    ("A", 56): [7.0, 7.4, 7.2],
}


def by_term(effects) -> dict:
    return {e.term: e for e in effects.rows}


def test_balanced_two_by_two_by_hand():
    effects = factorial_effects(trials_frame(BALANCED), ["shortcut", "depth"])
    rows = by_term(effects)
    assert list(rows) == ["shortcut", "depth", "shortcut × depth"]
    s2 = 0.04
    # Main effect of shortcut: A minus none, averaged over depth.
    shortcut = rows["shortcut"]
    assert shortcut.estimate == pytest.approx(((8.6 + 7.2) - (8.2 + 12.3)) / 2)
    se = math.sqrt(s2 * (1 / 6 + 1 / 6))
    assert (shortcut.ci_low, shortcut.ci_high) == pytest.approx((-2.35 - T8 * se, -2.35 + T8 * se))
    assert shortcut.p == pytest.approx(2 * sps.t.sf(2.35 / se, 8))
    assert shortcut.df_den == 8 and shortcut.df_num == 1
    # The interaction: the difference of differences.
    inter = rows["shortcut × depth"]
    assert inter.estimate == pytest.approx((7.2 - 12.3) - (8.6 - 8.2))
    se = math.sqrt(s2 * 4 / 3)
    assert inter.ci_high == pytest.approx(-5.5 + T8 * se)
    assert inter.f == pytest.approx((5.5 / se) ** 2)
    assert inter.contrast == "(shortcut=A − shortcut=none) at depth=56 − at depth=20"
    assert "the effect of shortcut depends on depth" in inter.sentence
    assert effects.notes == [] and effects.absent == ""


def test_the_papers_interaction_is_stated_with_its_size_and_ci():
    effects = factorial_effects(trials_frame(BALANCED), ["shortcut", "depth"], paper=True)
    se = math.sqrt(0.04 * 4 / 3)
    low, high = -5.5 - T8 * se, -5.5 + T8 * se
    assert effects.shortcut_depth == (
        "The paper's finding, that the benefit of shortcuts grows with depth: the data show "
        "it: shortcut A changes the test error by +0.40 points against none at depth 20 and "
        f"by -5.10 at depth 56, an interaction of -5.50 points (95% CI {low:+.2f} to "
        f"{high:+.2f}, p < 0.001)."
    )
    # Without the paper's ResNets the finding is not the paper's to judge.
    assert factorial_effects(trials_frame(BALANCED), ["shortcut", "depth"]).shortcut_depth == ""


def test_one_sign_convention_in_the_table_and_the_sentences():
    effects = factorial_effects(trials_frame(BALANCED), ["shortcut", "depth"], paper=True)
    rows = by_term(effects)
    # Error with A minus error with none, averaged: negative, and the sentence says lowers.
    assert rows["shortcut"].estimate == pytest.approx(-2.35)
    assert "lowers the test error by 2.35 points" in rows["shortcut"].sentence
    assert "-2.35 points" in rows["shortcut"].sentence
    inter = rows["shortcut × depth"]
    assert f"changes by {inter.estimate:+.2f} points" in inter.sentence
    assert f"an interaction of {inter.estimate:+.2f} points" in effects.shortcut_depth
    frame = effects.frame().set_index("term")
    assert frame.loc["shortcut × depth", "estimate_pct"] == pytest.approx(-5.5)


def test_a_main_effect_inside_a_significant_interaction_says_so():
    effects = factorial_effects(trials_frame(BALANCED), ["shortcut", "depth"])
    rows = by_term(effects)
    assert rows["shortcut × depth"].p < 0.05
    for factor, other in (("shortcut", "depth"), ("depth", "shortcut")):
        assert rows[factor].sentence.endswith(
            f" But {factor} interacts with {other} (p < 0.001): read the per-arm numbers, not "
            "this average."
        )
    # No significant interaction: the average is the story, no caveat.
    cells = dict(BALANCED)
    cells[("none", 56)] = [11.8, 12.2, 12.0]
    cells[("A", 20)] = [4.2, 4.6, 4.4]
    cells[("A", 56)] = [8.0, 8.4, 8.2]
    plain = by_term(factorial_effects(trials_frame(cells), ["shortcut", "depth"]))
    assert plain["shortcut × depth"].p > 0.05
    assert not any("interacts with" in e.sentence for e in plain.values())


def test_no_interaction_says_the_data_do_not_show_it():
    cells = dict(BALANCED)
    cells[("none", 56)] = [11.8, 12.2, 12.0]  # benefit 3.8 at 56 ...
    cells[("A", 20)] = [4.2, 4.6, 4.4]  # ... and 3.8 at 20
    cells[("A", 56)] = [8.0, 8.4, 8.2]
    effects = factorial_effects(trials_frame(cells), ["shortcut", "depth"], paper=True)
    assert by_term(effects)["shortcut × depth"].estimate == pytest.approx(0.0, abs=1e-9)
    assert "the data do not show it (nor its opposite)" in effects.shortcut_depth
    assert "an interaction of +0.00 points" in effects.shortcut_depth
    assert "no clear interaction" in by_term(effects)["shortcut × depth"].sentence


def _dummies(frame: pd.DataFrame, factor: str) -> np.ndarray:
    levels = sorted(frame[factor].unique(), key=str)
    return np.column_stack([(frame[factor] == lv).to_numpy(float) for lv in levels[1:]])


def _rss(y: np.ndarray, *blocks: np.ndarray) -> tuple[float, np.ndarray, int]:
    x = np.column_stack([np.ones(len(y)), *blocks])
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ beta
    return float(resid @ resid), beta, x.shape[1]


def test_unbalanced_main_effects_are_type_two():
    # Two seeds lost (a diverged and a failed trial): unequal cells.
    cells = {k: list(v) for k, v in BALANCED.items()}
    cells[("none", 56)][2] = math.nan
    cells[("A", 20)][0] = math.nan
    frame = trials_frame(cells)
    effects = factorial_effects(frame, ["shortcut", "depth"])
    done = frame[frame["status"] == "finished"]
    y = 100 * done["test/error"].to_numpy()
    # Treatment dummies with the paper's first level as reference (none, 20).
    s = (done["shortcut"] == "A").to_numpy(float)
    d = (done["depth"] == 56).to_numpy(float)
    rss_full, _, k_full = _rss(y, s, d, s * d)
    df = len(y) - k_full
    rss_depth_only, _, _ = _rss(y, d)
    rss_additive, beta, _ = _rss(y, s, d)
    f_shortcut = (rss_depth_only - rss_additive) / (rss_full / df)
    row = by_term(effects)["shortcut"]
    assert row.f == pytest.approx(f_shortcut)
    assert row.p == pytest.approx(sps.f.sf(f_shortcut, 1, df))
    assert row.estimate == pytest.approx(beta[1])  # the additive model's shortcut effect
    # Its CI and p agree: t squared is F.
    se = (row.ci_high - row.ci_low) / 2 / sps.t.ppf(0.975, df)
    assert (row.estimate / se) ** 2 == pytest.approx(f_shortcut)
    (note,) = effects.notes
    assert note.startswith(
        "The design is unbalanced: 4 of 4 cells hold finished seeds, 2 to 3 each (trials not "
        "finished: 2 failed). Sums of squares are Type II"
    )


def test_missing_cell_drops_the_interaction_and_says_so():
    cells = {k: list(v) for k, v in BALANCED.items()}
    cells[("A", 56)] = [math.nan] * 3  # every seed failed
    effects = factorial_effects(trials_frame(cells), ["shortcut", "depth"], paper=True)
    assert list(by_term(effects)) == ["shortcut", "depth"]
    assert any(
        "The shortcut × depth interaction cannot be estimated: no finished seed in "
        "shortcut=A depth=56" in n
        for n in effects.notes
    )
    assert "cannot be judged here" in effects.shortcut_depth


def test_three_level_factor_gives_f_test_and_extreme_contrast():
    cells = dict(BALANCED)
    cells[("B", 20)] = [7.9, 8.3, 8.1]
    cells[("B", 56)] = [6.8, 7.2, 7.0]
    frame = trials_frame(cells)
    effects = factorial_effects(frame, ["shortcut", "depth"])
    row = by_term(effects)["shortcut"]
    y = 100 * frame["test/error"].to_numpy()
    s, d = _dummies(frame, "shortcut"), _dummies(frame, "depth")
    # Dummies sorted as text: A, B, none; the F test does not depend on the reference.
    inter = np.column_stack([s[:, i] * d[:, 0] for i in range(2)])
    rss_full, _, k = _rss(y, s, d, inter)
    df = len(y) - k
    rss_d, _, _ = _rss(y, d)
    rss_add, _, _ = _rss(y, s, d)
    f = (rss_d - rss_add) / 2 / (rss_full / df)
    assert row.df_num == 2 and row.f == pytest.approx(f)
    assert row.p == pytest.approx(sps.f.sf(f, 2, df))
    # Balanced: B minus none is the difference of the marginal means.
    assert row.contrast == "shortcut=B − shortcut=none"
    assert row.estimate == pytest.approx((8.1 + 7.0) / 2 - (8.2 + 12.3) / 2)
    assert "shortcut has 3 levels; the F test over all of them" in row.sentence
    inter_row = by_term(effects)["shortcut × depth"]
    assert inter_row.df_num == 2
    assert inter_row.estimate == pytest.approx((7.0 - 12.3) - (8.1 - 8.2))


def test_one_seed_per_cell_leaves_interactions_out():
    cells = {k: v[:1] for k, v in BALANCED.items()}
    effects = factorial_effects(trials_frame(cells), ["shortcut", "depth"])
    assert list(by_term(effects)) == ["shortcut", "depth"]
    assert any("one finished seed per cell" in n for n in effects.notes)
    assert by_term(effects)["shortcut"].df_den == 1


def test_a_single_factor_has_no_factorial_model():
    frame = trials_frame({("none",): [8.0, 8.2], ("A",): [7.0, 7.1]}, factors=("shortcut",))
    effects = factorial_effects(frame, ["shortcut"])
    assert effects.rows == [] and "two or more scientific factors" in effects.absent


def test_the_smoke_fixture_shows_the_interaction_computed_from_its_cells():
    spec = rf.complete_study()
    data = rf.study_data(spec)
    effects = factorial_effects(select_trials(data.runs), ["depth", "shortcut"], paper=True)
    means = {}
    for depth, shortcut in itertools.product([8, 14], ["none", "A"]):
        values = [
            100 * rf.final_errors(rf.resolved(t))[1]
            for t in spec.trials
            if t.settings["depth"] == depth and t.settings["shortcut"] == shortcut
        ]
        means[(depth, shortcut)] = np.mean(values)
    change = (means[(14, "A")] - means[(14, "none")]) - (means[(8, "A")] - means[(8, "none")])
    assert f"an interaction of {change:+.2f} points" in effects.shortcut_depth
    assert by_term(effects)["depth × shortcut"].estimate == pytest.approx(change)
    for depth in (8, 14):
        assert f"{means[(depth, 'A')] - means[(depth, 'none')]:+.2f}" in effects.shortcut_depth


def test_reduced_run_findings_are_not_styled_as_evidence():
    report = render_report(rf.study_data(rf.complete_study()))
    answer = re.search(r'<section class="([\w -]+)" id="answer">.*?</section>', report.html)
    assert answer.group(1) == "answer answer-reduced" and 'id="shortcut-depth-finding"' in answer[0]
    assert "a reduced run: what it shows is no evidence" in answer[0]
    assert "no evidence for the study&#x27;s question" in report.html
    effects = report.tables["effects"]
    assert effects["sentence"].str.endswith("no evidence for the study's question.").all()


def test_the_sign_convention_is_stated_once_on_the_page():
    for spec in (rf.complete_study(), rf.partial_study()):
        page = render_report(rf.study_data(spec)).html
        assert page.count("Every effect on this page is a change in test error in points") == 1
        assert page.index('id="sign-convention"') < page.index('id="effects-table"')
