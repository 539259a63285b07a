"""Report logic on fixture frames (no MLflow): edge cases a real study will meet."""

import math
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import report_fixtures as rf
from scipy.stats import ttest_ind

from reports import render_report, stats
from reports.data import select_trials
from reports.tables import arm_table, count_trials, problem_table

UI = "http://mlflow.example:5000/"


def smoke(**changes) -> rf.StudySpec:
    return replace(rf.complete_study(), **changes)


def find(spec: rf.StudySpec, **settings) -> rf.TrialSpec:
    (trial,) = [t for t in spec.trials if all(t.settings[k] == v for k, v in settings.items())]
    return trial


def render(spec: rf.StudySpec, **kwargs):
    data = rf.study_data(spec)
    return data, render_report(data, **kwargs)


def arms_of(spec: rf.StudySpec) -> pd.DataFrame:
    data = rf.study_data(spec)
    return arm_table(select_trials(data.runs), data.info).set_index("arm")


def expected_test_pct(spec: rf.StudySpec, arm: str) -> list[float]:
    out = []
    for trial in spec.trials:
        settings = rf.resolved(trial)
        if trial.status == "finished" and rf.arm_label(settings, spec.factors) == arm:
            out.append(100 * rf.final_errors(settings)[1])
    return out


def test_complete_study_is_not_marked_partial():
    _, report = render(rf.complete_study())
    assert not report.partial
    assert 'id="complete-banner"' in report.html
    assert 'id="partial-banner"' not in report.html
    assert "[PARTIAL]" not in report.html


def test_arm_means_cis_and_tests_agree_with_scipy():
    spec = rf.complete_study()
    arms = arms_of(spec)
    assert len(arms) == 4
    for arm, row in arms.iterrows():
        values = expected_test_pct(spec, arm)
        assert row["test_error_pct_mean"] == pytest.approx(np.mean(values))
        assert row["test_error_pct_std"] == pytest.approx(np.std(values, ddof=1))
        assert row["test_error_pct_n"] == 3
    plain = expected_test_pct(spec, "depth=8 shortcut=none")
    ref = expected_test_pct(spec, "depth=8 shortcut=A")
    welch = pd.Series(arms.loc["depth=8 shortcut=none"])
    assert welch["p_value"] == pytest.approx(ttest_ind(plain, ref, equal_var=False).pvalue)
    # Holm across the two arm-vs-reference tests of the study.
    assert arms["p_holm"].to_numpy() == pytest.approx(
        stats.holm(arms["p_value"].to_numpy()), nan_ok=True
    )
    assert arms.loc["depth=8 shortcut=A", "verdict"] == "reference"


def test_each_arm_is_compared_with_the_reference_of_its_own_depth():
    arms = arms_of(rf.complete_study())
    assert arms.loc["depth=14 shortcut=none", "reference_arm"] == "depth=14 shortcut=A"
    assert arms.loc["depth=8 shortcut=none", "reference_arm"] == "depth=8 shortcut=A"


def test_one_seed_reports_no_spread_and_no_test():
    spec = smoke(
        seeds=[0], trials=[t for t in rf.complete_study().trials if t.settings["seed"] == 0]
    )
    data, report = render(spec)
    arms = arm_table(select_trials(data.runs), data.info)
    assert set(arms["test_error_pct_n"]) == {1}
    assert arms["test_error_pct_std"].isna().all() and arms["test_error_pct_ci_low"].isna().all()
    tested = arms[arms["verdict"] != "reference"]
    assert tested["verdict"].str.contains("needs ≥ 2 seeds per arm").all()
    assert "one seed, no spread" in report.html


def test_missing_reference_arm_is_named_and_counted():
    trials = [
        t
        for t in rf.complete_study().trials
        if not (t.settings["depth"] == 14 and t.settings["shortcut"] == "A")
    ]
    spec = smoke(trials=trials, planned=rf.planned(rf.complete_study()))  # 3 without runs
    data, report = render(spec)
    arms = arm_table(select_trials(data.runs), data.info).set_index("arm")
    assert "no reference arm (depth=14 shortcut=A)" in arms.loc["depth=14 shortcut=none", "verdict"]
    counts = count_trials(data.runs, data.info)
    assert counts.missing == 3 and counts.partial
    assert report.partial and "3 of 12 planned trials have no run yet" in report.html


def test_diverged_trial_is_counted_not_averaged_and_listed():
    spec = rf.complete_study()
    bad = find(spec, depth=14, shortcut="none", seed=0)
    bad.status, bad.diverged_at = "diverged", 300
    data, report = render(spec)
    arms = arm_table(select_trials(data.runs), data.info).set_index("arm")
    row = arms.loc["depth=14 shortcut=none"]
    assert (row["finished"], row["diverged"], row["test_error_pct_n"]) == (2, 1, 2)
    assert row["test_error_pct_mean"] == pytest.approx(
        np.mean(expected_test_pct(spec, "depth=14 shortcut=none"))
    )
    problems = problem_table(data.runs, data.history)
    assert problems.to_dict("records")[0] | {"run_id": None} == {
        "trial_key": "depth=14 shortcut=none seed=0",
        "arm": "depth=14 shortcut=none",
        "status": "diverged",
        "iteration": 300,
        "reason": "loss became non-finite",
        "run_id": None,
    }
    assert "loss became non-finite" in report.html
    assert not report.partial


def test_failed_trial_lists_reason_and_last_iteration():
    spec = rf.complete_study()
    bad = spec.trials[0]
    bad.status, bad.error, bad.stop_at = "failed", "RuntimeError: out of memory", 300
    data, report = render(spec)
    problems = problem_table(data.runs, data.history)
    assert problems[["status", "iteration", "reason"]].values.tolist() == [
        ["failed", 300, "RuntimeError: out of memory"]
    ]
    assert "RuntimeError: out of memory" in report.html
    assert count_trials(data.runs, data.info).failed == 1


def test_nan_final_metrics_are_dropped_from_statistics():
    spec = rf.complete_study()
    spec.trials[0].final_override = {"test/error": math.nan, "val/error": math.nan}
    arm = rf.arm_label(rf.resolved(spec.trials[0]), spec.factors)
    data, report = render(spec)
    row = arm_table(select_trials(data.runs), data.info).set_index("arm").loc[arm]
    kept = expected_test_pct(spec, arm)[1:]
    assert row["test_error_pct_n"] == 2
    assert row["test_error_pct_mean"] == pytest.approx(np.mean(kept))
    assert math.isfinite(row["val_error_pct_mean"])
    assert "nan" not in re.sub(r"<script.*?</script>", "", report.html, flags=re.S).lower()


def test_partial_study_is_marked_in_title_banner_and_flag():
    _, report = render(rf.partial_study())
    assert report.partial
    assert "<title>[PARTIAL] ablate report: shortcut_types</title>" in report.html
    banner = re.search(r'<div [^>]*id="partial-banner".*?</div>', report.html, re.S).group(0)
    assert "banner-amber" in banner and "Partial study" in banner
    assert "3 of 21 planned trials have no run yet" in banner
    assert "1 trial pending (never started)" in banner
    assert "1 trial still running" in banner
    assert "1 trial interrupted (run the study again to resume)" in banner
    assert "parent run has not finished" in banner


def test_interrupted_and_pending_trials_are_not_ended_not_failed():
    data = rf.study_data(rf.partial_study())
    trials = select_trials(data.runs).set_index("trial_key")
    assert trials.loc["depth=20 shortcut=none seed=2", "mlflow_status"] == "KILLED"
    assert trials.loc["depth=20 shortcut=none seed=2", "status"] == "interrupted"
    assert trials.loc["depth=56 shortcut=B seed=2", "status"] == "pending"
    counts = count_trials(data.runs, data.info)
    assert (counts.running, counts.interrupted, counts.pending, counts.failed) == (1, 1, 1, 1)
    assert counts.missing == 3 and counts.state == "partial"


def test_retried_trial_counts_once_as_its_best_attempt():
    data = rf.study_data(rf.partial_study())
    trials = select_trials(data.runs)
    retried = trials[trials["trial_key"] == "depth=20 shortcut=A seed=0"]
    assert retried["status"].tolist() == ["finished"]
    assert count_trials(data.runs, data.info).retried == 1
    assert "failed (retried)" in problem_table(data.runs, data.history)["status"].tolist()


def test_tuning_runs_stay_out_of_the_comparison():
    data = rf.study_data(rf.partial_study())
    arms = arm_table(select_trials(data.runs), data.info)
    # 18 in the store minus running, interrupted, pending, failed and diverged.
    assert arms["finished"].sum() == 13
    assert (data.runs["role"] == "tune").sum() == 1


def test_paper_numbers_only_on_matching_cifar_arms():
    arms = arms_of(rf.partial_study())
    # The paper's nets, trained for 4,000 of its 64,000 iterations on a 45k split: the
    # paper's number does not compare, so its differences stand instead, and no gap.
    for arm in ("depth=20 shortcut=A", "depth=56 shortcut=A"):
        row = arms.loc[arm]
        assert pd.isna(row["paper_test_error_pct"]) and pd.isna(row["paper_gap_sd"])
        assert row["paper_source"] == "He et al. 2015, Table 6"
        assert "4,000 iterations, paper 64,000" in row["paper_differences"]
        assert "trained on 45k images, paper 50k" in row["paper_differences"]
    others = arms.loc[["depth=20 shortcut=B", "depth=20 shortcut=none"]]
    assert (others["paper_source"] == "").all() and others["paper_test_error_pct"].isna().all()
    assert arms_of(rf.complete_study())["paper_test_error_pct"].isna().all()


def test_without_a_reference_no_test_is_claimed():
    arms = arms_of(smoke(reference={}))
    assert (arms["verdict"] == "the study names no reference arm").all()
    assert arms["p_holm"].isna().all()


def test_degradation_sentence_and_why_absent():
    _, report = render(rf.complete_study())
    assert re.search(r"Degradation appears: plain-14 ends with [\d.]+% training error", report.html)
    trials = rf.grid_trials({"shortcut": ["A", "B"]}, seeds=[0, 1], fixed={"dataset": "digits"})
    _, flat = render(smoke(factors=["shortcut"], trials=trials))
    assert "degradation plots are absent: this study has a single depth (20)" in flat.html


def test_run_links_point_at_the_mlflow_ui():
    _, report = render(rf.complete_study(), mlflow_ui_url=UI)
    assert (
        'href="http://mlflow.example:5000/#/experiments/1/runs/run0000'
        '?workflowType=machine_learning"' in report.html
    )
    _, plain = render(rf.complete_study())
    assert "#/experiments/" not in plain.html


def test_text_from_the_store_is_escaped():
    _, report = render(smoke(question="Is <script>alert(1)</script> & co safe?"))
    assert "<script>alert(1)</script>" not in report.html
    assert "Is &lt;script&gt;alert(1)&lt;/script&gt; &amp; co safe?" in report.html


def test_page_is_self_contained_with_one_plotly_bundle():
    _, report = render(rf.partial_study())
    page = report.html
    assert page.count("plotly.js v") == 1  # the bundle's banner comment
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert not re.search(r"<link[^>]*\bhref=", page)
    # Fig. 6 curves and depth plot, two factor plots, two cost plots, layers, LR.
    assert page.count('class="plotly-graph-div"') == 8


def test_study_with_no_trials_yet():
    spec = smoke(trials=[], planned=rf.planned(rf.complete_study()))
    data, report = render(spec)
    assert report.partial and "no trial has been recorded yet" in report.html
    assert "12 of 12 planned trials have no run yet" in report.html
    assert report.tables["arms"].empty


def test_tables_for_csv():
    _, report = render(rf.partial_study())
    assert set(report.tables) == {"arms", "trials", "problems", "effects"}
    assert set(report.texts) == {"comparison.md", "comparison.tex"}
    assert len(report.tables["arms"]) == 6
    assert len(report.tables["trials"]) == 18  # one row per trial key seen, pending included
    assert report.tables["arms"]["run_ids"].str.count(";").ge(0).all()


def test_arms_that_miss_the_precision_target_say_so_with_the_seeds_they_need():
    spec = rf.adaptive_study()  # target: 95% CI half-width <= 0.3 points
    find(spec, depth=14, shortcut="A", seed=0).status = "failed"  # one finished seed left
    data, report = render(spec)
    arms = report.tables["arms"].set_index("arm")
    pooled = arms["mde_sd_pct"].iloc[0]
    for arm, row in arms.iterrows():
        values = expected_test_pct(spec, arm)
        n = len(values)
        half = ttest_interval_half(values) if n >= 2 else math.nan
        if n >= 2:
            assert row["ci_half_width_pct"] == pytest.approx(half)
        if n >= 2 and half <= 0.3:
            assert row["target_status"] == "met" and math.isnan(row["seeds_for_target"])
            continue
        sd = np.std(values, ddof=1) if n >= 2 else pooled  # its own spread, else the pooled
        assert row["target_status"] == "not met", arm
        assert row["seeds_for_target"] == stats.seeds_for_ci(sd, 0.3), arm
    missed = arms[arms["target_status"] == "not met"]
    assert 0 < len(missed) < len(arms) and (missed["test_error_pct_n"] == 1).any()
    page = re.sub(r"<(script|style)\b.*?</\1>", "", report.html, flags=re.S)
    answer = re.search(r'id="answer">.*?</section>', page, re.S).group(0)
    assert f"not met by {len(missed)} of {len(arms)} arms" in answer
    for arm, row in missed.iterrows():
        n, needs = int(row["test_error_pct_n"]), int(row["seeds_for_target"])
        width = "no interval (fewer than 2 seeds)" if n < 2 else f"±{row['ci_half_width_pct']:.2f}"
        said = f"target not met: {width} with {n} seed{'s' * (n != 1)}; needs {needs} seeds"
        said += ", more than the 4 allowed" if needs > 4 else ""  # the study's max_seeds
        assert f"{arm}: {said}" in answer
        assert said in page.split('id="comparison"')[1]  # in the arm's row too


def test_without_a_target_nothing_is_said_about_one():
    _, report = render(rf.complete_study())
    arms = report.tables["arms"]
    assert (arms["target_status"] == "").all() and arms["seeds_for_target"].isna().all()
    assert "target" not in re.search(r'<table id="comparison">.*?</thead>', report.html)[0]
    assert "Precision target" not in report.html


def ttest_interval_half(values: list[float]) -> float:
    from scipy.stats import sem, t

    return float(t.ppf(0.975, len(values) - 1) * sem(values))


def test_many_arms_missing_the_target_are_each_named_under_a_summary():
    trials = rf.grid_trials({"depth": [20, 32, 44], "shortcut": ["none", "A"]}, seeds=[0, 1])
    spec = rf.StudySpec("many", "q", ["depth", "shortcut"], {"shortcut": "A"}, [0, 1], trials)
    spec.target_ci, spec.max_seeds = 0.01, 50
    _, report = render(spec)
    arms = report.tables["arms"]
    assert (arms["target_status"] == "not met").all() and len(arms) == 6
    target = re.search(r'<li id="target"><details>(.*?)</details></li>', report.html, re.S)[1]
    assert "not met by 6 of 6 arms; 0 met it." in target
    for _, row in arms.iterrows():
        assert f"{row['arm']}: target not met: ±{row['ci_half_width_pct']:.2f} with 2 seeds" in (
            target
        )
