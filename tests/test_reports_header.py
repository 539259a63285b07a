"""The top of the page tells the truth: what happened, whether the run can answer its
question, what ran, with which settings, code, libraries, devices and data."""

import re
from dataclasses import replace
from html import unescape

import pandas as pd
import pytest
import report_fixtures as rf

from reports import render_report
from reports.data import select_trials
from reports.study import reduction

EVIDENCE_FREE = "It checks the pipeline; its verdicts are no evidence for the study's question."
REDUCED_ONLY = (
    "Its verdicts hold for this reduced setting only; they are no evidence for the study's "
    "question."
)


def render(spec: rf.StudySpec, **kwargs):
    return render_report(rf.study_data(spec), **kwargs)


def visible(page: str) -> str:
    """The page without scripts and styles, entities decoded for readable asserts."""
    return unescape(re.sub(r"<(script|style)\b.*?</\1>", "", page, flags=re.S))


def banner(html: str) -> tuple[str, str]:
    match = re.search(r'<div class="banner (banner-\w+)" id="(\w+-banner)"', html)
    assert match, "no status banner"
    return match.group(1), match.group(2)


# A1: the banner says what happened, in the right colour.


def test_every_trial_failed_is_red_and_never_complete():
    report = render(rf.failed_study())
    page = visible(report.html)
    assert banner(page) == ("banner-red", "failed-banner")
    assert "No trial finished: 8 of 8 failed." in page
    assert "Complete" not in page and "<title>[NO RESULTS]" in page
    # Identical reasons read once, with their count, in full (advice after a long path).
    assert page.count(f"<strong>8 trials:</strong> {rf.DATA_ERROR}") == 1
    assert f"<strong>8 × </strong>{rf.DATA_ERROR}" in page  # grouped in the problems too
    assert "overflow-wrap: anywhere" in report.html  # long reasons wrap, never cut


def test_different_failure_reasons_are_grouped_by_count():
    spec = rf.failed_study()
    for trial in spec.trials[:3]:
        trial.error = "RuntimeError: CUDA out of memory"
    page = visible(render(spec).html)
    reasons = re.search(r'<ul class="reasons" id="failure-reasons">(.*?)</ul>', page).group(1)
    assert re.findall(r"<strong>(\d+ trials?):</strong>", reasons) == ["5 trials", "3 trials"]


def test_no_trial_finished_yet_with_some_still_running_is_red():
    spec = rf.failed_study()
    for trial in spec.trials[:5]:
        trial.status, trial.stop_at = "running", 200
    page = visible(render(spec).html)
    assert banner(page) == ("banner-red", "failed-banner")
    assert "No trial finished yet: 3 failed, 5 still running (of 8)." in page


def test_partial_study_is_amber():
    assert banner(render(rf.partial_study()).html) == ("banner-amber", "partial-banner")


def test_ended_with_failures_is_amber_not_complete():
    spec = rf.complete_study()
    spec.trials[0].status, spec.trials[0].error = "failed", "RuntimeError: out of memory"
    report = render(spec)
    page = visible(report.html)
    assert banner(page) == ("banner-amber", "problems-banner")
    assert "Ended, but not every trial finished: 11 of 12 finished; 1 of 12 failed." in page
    assert "Complete" not in page and not report.partial


def test_every_trial_finished_is_green():
    page = visible(render(rf.complete_study()).html)
    assert banner(page) == ("banner-green", "complete-banner")
    assert "Complete: all 12 planned trials finished." in page


def test_counts_agree_when_adaptive_replication_added_seeds():
    # Planned with seeds 0 and 1 (8 trials); seeds were added up to 13 trials.
    report = render(rf.adaptive_study())
    page = visible(report.html)
    assert "Complete: all 13 planned trials finished." in page
    assert "<dt>Seeds</dt><dd>0, 1, 2, 3 (2 to 4 per arm)</dd>" in page
    assert "<dt>Trials</dt><dd>13 finished · 0 diverged" in page and "(of 13 planned)" in page
    assert "seeds 0, 1, 2, 3 (2 to 4 per arm)." in page  # Ran here
    assert "From 13 finished trials" in page  # the answer
    arms = report.tables["arms"].set_index("arm")
    assert arms["seeds_planned"].to_dict() == {
        "depth=8 shortcut=none": 4,
        "depth=8 shortcut=A": 3,
        "depth=14 shortcut=none": 4,
        "depth=14 shortcut=A": 2,
    }
    assert (arms["finished"] == arms["seeds_planned"]).all()
    assert not report.partial and "not started" not in page


def test_a_planned_seed_without_a_run_is_counted_in_its_arm():
    spec = rf.adaptive_study()
    spec.planned = rf.planned(spec)
    spec.trials = spec.trials[:-1]  # the last seed added never reached the store
    report = render(spec)
    page = visible(report.html)
    assert banner(page) == ("banner-amber", "partial-banner")
    assert "1 of 13 planned trials have no run yet" in page
    arms = report.tables["arms"]
    assert arms["not_started"].sum() == 1 and "1 not started" in page


# A2: every fixed setting in the header and the CSVs.


def fixed_depth_study(**changes) -> rf.StudySpec:
    """weight_decay varies; depth 14 and shortcut A are fixed."""
    trials = rf.grid_trials(
        {"weight_decay": [0.0001, 0.001]},
        seeds=[0, 1],
        fixed={
            "depth": 14,
            "shortcut": "A",
            "dataset": "digits",
            "iterations": 40,
            "eval_every": 10,
        },
    )
    spec = rf.StudySpec(
        name="weight_decay@smoke",
        question="Does weight decay matter for ResNet-20?",
        factors=["weight_decay"],
        reference={"weight_decay": 0.0001},
        seeds=[0, 1],
        trials=trials,
        dataset="digits",
        preset="smoke",
        full_dataset="cifar10",
        full_iterations=64_000,
    )
    return replace(spec, **changes)


def test_fixed_settings_in_header_arms_and_trials():
    report = render(fixed_depth_study())
    fixed = re.search(r'<span id="fixed-settings">(.*?)</span>', report.html).group(1)
    assert "depth = 14" in fixed and "shortcut = A" in fixed
    assert "label_smoothing = 0.0" in fixed  # known only from ablate.settings
    assert "plateau_patience = unset" in fixed and "weight_decay" not in fixed
    for name in ("arms", "trials"):
        table = report.tables[name]
        assert (table["depth"] == 14).all() and (table["shortcut"] == "A").all(), name
        assert (table["precision"] == "fp32").all() and "label_smoothing" in table, name


def test_a_setting_that_varies_without_being_a_factor_is_named():
    spec = fixed_depth_study()
    spec.trials[0].settings["lr"] = 0.05
    page = visible(render(spec).html)
    assert "<dt>Varying, not a factor</dt><dd>lr: 0.05, 0.1" in page


# A3: a reduced run says so, and its verdicts are no findings.


def test_reduced_run_is_said_plainly_near_the_top():
    report = render(fixed_depth_study())
    page = visible(report.html)
    sentence = (
        "This run is a reduced version of the study: digits instead of cifar10, 40 of 64,000 "
        f"iterations per trial (0.06%). {EVIDENCE_FREE}"
    )
    assert sentence in page
    assert page.index('id="reduced-notice"') < page.index('class="question"')
    assert "Ran here: weight_decay (0.0001, 0.001); on digits; fixed depth 14, shortcut A" in page
    assert "40 iterations per trial; seeds 0, 1 (2 per arm)." in page


def test_reduced_run_verdicts_are_not_wins():
    spec = rf.complete_study()
    report = render(spec)
    verdicts = report.tables["arms"]["verdict"]
    assert not verdicts.str.contains(" beats ").any()
    assert verdicts.str.contains("in this reduced run \\(not evidence\\)").any()
    assert "verdict-win" not in visible(report.html)
    # The same study as a full run would claim the win.
    full = render(replace(spec, full_dataset="digits", full_iterations=600))
    assert full.tables["arms"]["verdict"].str.contains(" beats ").any()


def test_full_run_has_no_reduced_notice_and_styled_wins():
    page = visible(render(rf.partial_study()).html)
    assert 'id="reduced-notice"' not in page
    assert '<span class="verdict-win">shortcut=A beats shortcut=none' in page


@pytest.mark.parametrize(
    ("iterations", "full", "expected"),
    [
        # Fewer than 5% of the full study's iterations.
        (3000, 64_000, "a reduced version of the study: 3,000 of 64,000 iterations per trial"),
        (3200, 64_000, None),  # exactly 5%: not reduced
        # The study itself is short: measured against the paper's 64k on CIFAR-10.
        (2000, None, "far shorter than the paper's recipe: 2,000 of the paper's 64,000"),
        (5000, None, None),
    ],
)
def test_reduction_rules(iterations, full, expected):
    trials = rf.grid_trials(
        {"shortcut": ["none", "A"]}, seeds=[0], fixed={"iterations": iterations}
    )
    spec = rf.StudySpec("s", "q", ["shortcut"], {"shortcut": "A"}, [0], trials)
    spec.full_iterations = full
    data = rf.study_data(spec)
    found = reduction(data.info, select_trials(data.runs))
    if expected is None:
        assert not found
    else:
        # Thousands of iterations are more than a plumbing check, but still reduced.
        assert expected in found.sentence() and found.sentence().endswith(REDUCED_ONLY)


# A4 and B10: reproducibility and the replication rule.


def test_reproducibility_facts_and_no_warning_when_uniform():
    report = render(rf.partial_study())
    page = visible(report.html)
    assert f"<dt>Code version</dt><dd>{rf.COMMIT[:12]} (clean checkout)</dd>" in page
    assert "<dt>Libraries (training)</dt><dd>ablate 0.1.0, python 3.11.7, torch 2.5.1" in page
    assert f"<dt>Devices</dt><dd>{rf.DEVICE}</dd>" in page
    assert "<dt>Precision</dt><dd>fp32</dd>" in page
    assert f"<dt>Data digest</dt><dd>{rf.data_digest('cifar10')}</dd>" in page
    assert "<dt>Replication rule</dt><dd>fixed seeds</dd>" in page
    assert 'id="repro-warning"' not in page
    trials = report.tables["trials"]
    for column in ("git_commit", "git_dirty", "device", "precision", "data_digest"):
        assert column in trials.columns


def test_mixed_code_versions_dirty_checkouts_and_data_are_warned():
    spec = rf.complete_study()
    spec.trials[0].commit = "b" * 40
    spec.trials[1].dirty = True
    spec.trials[2].digest = "0123456789abcdef"
    spec.trials[3].device = "NVIDIA H200"
    report = render(spec)
    page = visible(report.html)
    warning = re.search(r'<div [^>]*id="repro-warning".*?</div>', page, re.S).group(0)
    assert "banner-amber" in warning
    assert f"2 different code versions ({rf.COMMIT[:12]} (11 trials); bbbbbbbbbbbb (1 trial))" in (
        warning
    )
    assert "1 trial ran from a checkout with uncommitted changes" in warning
    assert "2 different versions of the data digits" in warning
    assert "NVIDIA H200 (1 trial)" in page
    trials = report.tables["trials"].set_index("trial_key")
    first = rf.arm_label(rf.resolved(spec.trials[0]), spec.factors) + " seed=0"
    assert trials.loc[first, "git_commit"] == "b" * 40


def test_the_model_builder_and_its_settings_are_stated():
    page = visible(render(rf.complete_study()).html)
    assert "<dt>Model</dt><dd>resnet.spec:resnet (the built-in ResNets); its settings: " in page
    user = visible(render(rf.user_model_study()).html)
    assert "<dt>Model</dt><dd>mymodels.se:build; its settings: width, gate</dd>" in user
    # What ran names the builder's own fixed settings, never a ResNet's.
    fixed = rf.user_model_study()
    fixed.trials = [t for t in fixed.trials if t.settings["width"] == 16]
    fixed.factors, fixed.reference = ["gate"], {"gate": False}
    for t in fixed.trials:
        t.settings.pop("width")
    ran = visible(render(fixed).html)
    assert "Ran here: gate (False, True); on cifar10; fixed width 16; 2,000 iterations" in ran


def test_adaptive_replication_rule_is_stated():
    rule = "adaptive: 95% CI half-width <= 0.3 points, at most 10 seeds per arm"
    page = visible(render(replace(rf.complete_study(), replication=rule)).html)
    # The rule of earlier versions, with what it does to the intervals and tests.
    assert f"<dt>Replication rule</dt><dd>{rule}: the sequential rule" in page
    assert "cover less than stated" in page


def test_trials_csv_keeps_reproducibility_for_pending_trials_empty():
    trials = render(rf.partial_study()).tables["trials"].set_index("trial_key")
    pending = trials.loc["depth=56 shortcut=B seed=2"]
    assert pending["status"] == "pending" and pending["git_commit"] == ""
    assert isinstance(trials, pd.DataFrame)


def test_every_trial_diverged_is_red_and_grouped():
    spec = rf.failed_study()
    for trial in spec.trials:
        trial.status, trial.error, trial.diverged_at = "diverged", None, 400
    page = visible(render(spec).html)
    assert banner(page) == ("banner-red", "failed-banner")
    assert "No trial finished: 8 of 8 diverged." in page
    assert "<strong>8 trials:</strong> diverged: the loss became non-finite" in page


def test_the_answer_comes_first_and_says_what_the_study_found():
    # One factor, a full CIFAR-10 run of its own length: the comparison is the answer.
    trials = rf.grid_trials(
        {"shortcut": ["none", "A"]}, seeds=[0, 1, 2], fixed={"depth": 56, "iterations": 4000}
    )
    spec = rf.StudySpec("plain_vs_a", "Do shortcuts help at depth 56?", ["shortcut"],
                        {"shortcut": "A"}, [0, 1, 2], trials)  # fmt: skip
    page = visible(render(spec).html)
    answer = re.search(r'<section class="answer" id="answer">.*?</section>', page, re.S)[0]
    assert "From 6 finished trials; tests at α = 0.05:" in answer
    assert re.search(r"shortcut=A beats shortcut=none by [\d.]+ ± [\d.]+ points, p [<=] ", answer)
    assert 'id="sign-convention"' not in answer  # no effects, no convention to state
    order = [page.index(f'id="{i}"') for i in ("answer", "comparison", "effects", "details")]
    assert order == sorted(order) and page.index('class="question"') < order[0]
    # Nothing finished: the answer says so instead of guessing.
    failed = visible(render(rf.failed_study()).html)
    assert "No trial has finished: there is no answer yet." in failed


# The answer tests every part of the question, and a significant interaction leads it.

# Training errors like the digits demo's: plain-44 far above plain-8, ResNet-44 below ResNet-8.
DEMO_TRAIN = {
    ("none", 8): [0.36, 0.37, 0.35],
    ("none", 44): [0.66, 0.69, 0.68],
    ("A", 8): [0.34, 0.33, 0.35],
    ("A", 44): [0.16, 0.17, 0.15],
}


def depth_demo_study(reduced: bool = False, train=DEMO_TRAIN) -> rf.StudySpec:
    """The depth study's demo shape: shortcut none/A x depth 8/44 on digits, three seeds;
    `reduced`: the demo preset of the CIFAR-10 study."""
    trials = rf.grid_trials(
        {"shortcut": ["none", "A"], "depth": [8, 44]},
        seeds=[0, 1, 2],
        fixed={"dataset": "digits", "in_channels": 1, "iterations": 600, "eval_every": 100},
    )
    for trial in trials:
        cell = (trial.settings["shortcut"], trial.settings["depth"])
        trial.final_override = {"train/error": train[cell][trial.settings["seed"]]}
    spec = rf.StudySpec(
        "depth@demo", "Do deeper plain nets train worse while deeper residual nets train better?",
        ["shortcut", "depth"], {"shortcut": "none"}, [0, 1, 2], trials, dataset="digits",
    )  # fmt: skip
    if reduced:
        spec.full_dataset, spec.full_iterations = "cifar10", 64_000
    return spec


def answer_items(page: str) -> tuple[str, list[tuple[str, str]]]:
    """The answer's basis and its (id, sentence) items."""
    section = re.search(r'<section class="[\w -]+" id="answer">.*?</section>', page, re.S)[0]
    basis = re.search(r'<p class="basis">(.*?)</p>', section)[1]
    return basis, re.findall(r'<li(?: id="([\w-]+)")?>(.*?)</li>', section)


def welch_text(deep: list[float], shallow: list[float]) -> str:
    from scipy import stats as sps

    from reports.stats import format_p

    return f"Welch {format_p(sps.ttest_ind(deep, shallow, equal_var=False).pvalue)}"


def test_the_depth_answer_tests_both_halves_after_the_interaction():
    _, items = answer_items(visible(render(depth_demo_study()).html))
    ids = [ident for ident, _ in items]
    assert ids == ["shortcut-depth-finding", "degradation-finding", "residual-depth-finding"]
    said = dict(items)
    assert said["shortcut-depth-finding"].startswith(
        "The benefit of shortcuts grows with depth, as the paper finds: shortcut A against "
        "none changes the test error by "
    )
    pct = {cell: [100 * v for v in values] for cell, values in DEMO_TRAIN.items()}
    mean = {cell: sum(v) / 3 for cell, v in pct.items()}
    plain = welch_text(pct[("none", 44)], pct[("none", 8)])
    assert said["degradation-finding"] == (
        f"Degradation appears: plain-44 ends with {mean[('none', 44)]:.2f}% training error "
        f"against {mean[('none', 8)]:.2f}% for plain-8 "
        f"({mean[('none', 44)] - mean[('none', 8)]:.2f} points higher; {plain}; 3 and 3 "
        "finished seeds). A deeper plain net optimizes worse."
    )
    residual = welch_text(pct[("A", 44)], pct[("A", 8)])
    assert residual.startswith("Welch p = 0.00") or residual == "Welch p < 0.001"
    assert said["residual-depth-finding"] == (
        f"The deeper residual net trains better: ResNet-44 ends with {mean[('A', 44)]:.2f}% "
        f"training error against {mean[('A', 8)]:.2f}% for ResNet-8 "
        f"({mean[('A', 8)] - mean[('A', 44)]:.2f} points lower; {residual}; 3 and 3 finished "
        "seeds)."
    )
    # Both factors interact: their main effects, averages over it, stay in their section.
    assert not any("on average over" in text for _, text in items)


def test_the_residual_half_says_when_it_is_not_clear_or_absent():
    noisy = {**DEMO_TRAIN, ("A", 44): [0.30, 0.40, 0.31]}
    said = dict(answer_items(visible(render(depth_demo_study(train=noisy)).html))[1])
    assert said["residual-depth-finding"].startswith(
        "No clear gain from depth for residual nets: ResNet-44 ends with 33.67% training error "
        "against 34.00% for ResNet-8 (0.33 points lower; Welch p = 0.9"
    )
    assert said["residual-depth-finding"].endswith("finished seeds), within seed noise.")
    worse = {**DEMO_TRAIN, ("A", 44): [0.44, 0.45, 0.46]}
    said = dict(answer_items(visible(render(depth_demo_study(train=worse)).html))[1])
    assert said["residual-depth-finding"] == (
        "No gain from depth for residual nets: no deeper residual net ends with a lower "
        "training error than a shallower one."
    )


def test_a_significant_interaction_leads_with_per_arm_comparisons_not_main_effects():
    # width x gate: the gate helps the narrow net only (report_synthetic.final_errors).
    _, items = answer_items(visible(render(rf.user_model_study()).html))
    first_id, first = items[0]
    assert first_id == "interaction-finding"
    assert first.startswith(
        "The effect of width depends on gate: width=32 against width=16 changes the test error by "
    )
    assert re.fullmatch(r".*, an interaction of \+[\d.]+ points \(95% CI .*, p [<=] .*\)\.", first)
    comparisons = [text for _, text in items[1:]]
    assert [text.split(":")[0] for text in comparisons] == ["At gate=False", "At gate=True"]
    assert comparisons[0].startswith("At gate=False: width=32 ends with ")
    assert "% test error against " in comparisons[0]
    assert comparisons[0].endswith("; 3 and 3 finished seeds).")
    # No main effect: the factors interact, so their averages would mislead.
    assert not any("on average over" in text or "No clear effect" in text for _, text in items)


def test_reduced_run_answer_describes_this_run_and_never_claims_evidence():
    for spec in (depth_demo_study(reduced=True), rf.complete_study(), rf.adaptive_study()):
        page = visible(render(spec).html)
        assert 'id="reduced-notice"' in page
        basis, items = answer_items(page)
        assert basis.endswith(
            "a reduced run: what it shows is no evidence for the study's question; tests at "
            "α = 0.05 describe this run only:"
        )
        for _, text in items:
            assert "the data show" not in text, text
            assert not re.search(r"(?<!no )(?<!not )evidence", text), text
            assert "A deeper plain net optimizes worse" not in text  # no generalising
    # The same numbers in a full run state the finding in general.
    full = dict(answer_items(visible(render(depth_demo_study()).html))[1])
    assert full["degradation-finding"].endswith("A deeper plain net optimizes worse.")


def test_an_all_failed_study_says_no_trial_finished_not_too_few_factors():
    spec = depth_demo_study()
    for trial in spec.trials:
        trial.status, trial.error, trial.stop_at = "failed", "RuntimeError: boom", 0
    page = visible(render(spec).html)
    effects = re.search(r'<section[^>]*id="effects".*?</section>', page, re.S)[0]
    assert "No factorial model: no trial has finished, so no test error to model." in effects
    assert "two or more scientific factors" not in effects
    # A trial that failed before its first evaluation has no iteration to name.
    problems = re.search(r'<table[^>]*id="problems".*?</table>', page, re.S)[0]
    assert problems.count(">before the first evaluation</td>") == 12
    assert ">–</td>" not in problems
