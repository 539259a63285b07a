"""The report's statistics against scipy and hand-computed examples, and the paper table."""

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sps

from reports import stats
from reports.data import decode
from reports.paper import paper_net, table6_points

SEED_ERRORS = [7.1, 6.8, 7.4, 7.0, 6.6]
OTHER_ERRORS = [6.5, 6.2, 6.9, 6.4]


def test_summary_matches_scipy_t_interval():
    s = stats.summarize(SEED_ERRORS)
    x = np.array(SEED_ERRORS)
    low, high = sps.t.interval(0.95, df=x.size - 1, loc=x.mean(), scale=sps.sem(x))
    assert s.n == 5
    assert s.mean == pytest.approx(x.mean())
    assert s.std == pytest.approx(x.std(ddof=1))
    assert (s.ci_low, s.ci_high) == pytest.approx((low, high))


def test_summary_by_hand():
    # 1, 2, 3, 4: mean 2.5, sd sqrt(5/3), sem 0.645497, t(0.975, 3) = 3.182446:
    # half-width 2.05426.
    s = stats.summarize([1, 2, 3, 4])
    assert s.std == pytest.approx(math.sqrt(5 / 3))
    assert (s.ci_low, s.ci_high) == pytest.approx((2.5 - 2.05426, 2.5 + 2.05426), abs=1e-5)


def test_summary_drops_non_finite_and_handles_one_seed():
    s = stats.summarize([7.0, math.nan, math.inf])
    assert (s.n, s.mean) == (1, 7.0)
    assert math.isnan(s.std) and math.isnan(s.ci_low)
    assert stats.summarize([]).n == 0


def test_welch_matches_scipy():
    w = stats.welch(SEED_ERRORS, OTHER_ERRORS)
    ref = sps.ttest_ind(SEED_ERRORS, OTHER_ERRORS, equal_var=False)
    assert w.t == pytest.approx(ref.statistic)
    assert w.p == pytest.approx(ref.pvalue)
    assert w.df == pytest.approx(ref.df)
    assert w.diff == pytest.approx(np.mean(SEED_ERRORS) - np.mean(OTHER_ERRORS))
    se = math.sqrt(np.var(SEED_ERRORS, ddof=1) / 5 + np.var(OTHER_ERRORS, ddof=1) / 4)
    assert w.se == pytest.approx(se)


def test_welch_needs_two_seeds_and_spread():
    assert math.isnan(stats.welch([7.0], OTHER_ERRORS).p)
    flat = stats.welch([7.0, 7.0], [6.0, 6.0])
    assert flat.diff == 1.0 and math.isnan(flat.p)


def test_holm_hand_example():
    # Sorted: 0.005*4 = 0.02; 0.01*3 = 0.03; 0.03*2 = 0.06; 0.04*1 -> max(0.06, 0.04) = 0.06.
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_skips_nan_and_caps_at_one():
    adjusted = stats.holm([0.01, math.nan, 0.04])
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.04)
    assert math.isnan(adjusted[1])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_holm_never_below_raw_and_monotone_in_rank():
    rng = np.random.default_rng(0)
    p = rng.random(12) ** 3
    adjusted = stats.holm(p)
    assert np.all(adjusted >= p)
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0)


@pytest.mark.parametrize(
    ("diff_sign", "p", "expected"),
    [
        (-1, 0.01, "shortcut=B beats shortcut=A by 0.42 ± 0.15 points, p = 0.01"),
        (1, 0.01, "shortcut=A beats shortcut=B by 0.42 ± 0.15 points, p = 0.01"),
        (-1, 0.3, "no significant difference with n = 3 seeds"),
    ],
)
def test_verdict_words(diff_sign, p, expected):
    test = stats.Welch(diff=diff_sign * 0.42, se=0.15, t=2.8, df=4.0, p=p)
    assert expected in stats.verdict("shortcut=B", "shortcut=A", test, p, 3, 3)


def test_verdict_with_one_seed_says_what_is_needed():
    test = stats.welch([7.0], [6.0, 6.5])
    text = stats.verdict("shortcut=B", "shortcut=A", test, math.nan, 1, 2)
    assert "needs ≥ 2 seeds per arm" in text


# The recorded (resolved) settings of the paper's CIFAR-10 and ImageNet nets.
CIFAR_NET = {
    "dataset": "cifar10",
    "shortcut": "A",
    "skip_length": 2,
    "bottleneck": False,
    "preactivation": False,
    "stem": "cifar",
    "width": 16,
}
IMAGENET_NET = {**CIFAR_NET, "dataset": "imagenet", "stem": "imagenet", "width": 64}


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({**CIFAR_NET, "depth": 20}, 8.75),
        ({**CIFAR_NET, "dataset": "CIFAR-10", "depth": 56}, 6.97),
        ({**CIFAR_NET, "depth": 110}, 6.61),
        ({**CIFAR_NET, "depth": 110, "skip_length": 1}, 9.90),
        ({**CIFAR_NET, "depth": 110, "shortcut": "C"}, 12.22),
        ({**CIFAR_NET, "depth": 164, "shortcut": "B", "bottleneck": True, "skip_length": 3}, 5.93),
        (
            {
                **CIFAR_NET,
                "depth": 164,
                "shortcut": "B",
                "bottleneck": True,
                "skip_length": 3,
                "preactivation": True,
            },
            5.46,
        ),
        ({**IMAGENET_NET, "depth": 34, "shortcut": "none"}, 28.54),
        ({**IMAGENET_NET, "depth": 34, "shortcut": "B"}, 24.52),
        (
            {**IMAGENET_NET, "depth": 50, "shortcut": "B", "bottleneck": True, "skip_length": 3},
            22.85,
        ),
        # The net only: whether the arm's recipe compares is paper_comparison's question
        # (tests/test_paper_column.py).
        ({**CIFAR_NET, "depth": 20, "lr": 0.05, "bn_batch": 64}, 8.75),
    ],
)
def test_paper_nets_match_their_settings(settings, expected):
    found = paper_net(settings)
    assert found is not None and found.result.test_error_pct == expected


@pytest.mark.parametrize(
    "settings",
    [
        {**CIFAR_NET, "dataset": "digits", "depth": 20},
        {**CIFAR_NET, "depth": 20, "shortcut": "B"},
        {**CIFAR_NET, "depth": 20, "shortcut": "none"},
        {**CIFAR_NET, "depth": 20, "preactivation": True},
        {**CIFAR_NET, "depth": 20, "width": 32},
        {**CIFAR_NET, "depth": 110, "stem": "imagenet"},
        # The 2016 bottleneck nets project where dimensions grow; option A is another net.
        {**CIFAR_NET, "depth": 164, "bottleneck": True, "skip_length": 3},
        # A bottleneck net records its 3-layer units; one that says 2 is no paper net.
        {**CIFAR_NET, "depth": 164, "shortcut": "B", "bottleneck": True},
        # A setting the arm does not record is not filled in with the paper's.
        {"dataset": "cifar10", "depth": 20, "shortcut": "A"},
        {k: v for k, v in CIFAR_NET.items() if k != "bottleneck"} | {"depth": 20},
        # Text is not a decoded value: "20" is not the depth 20.
        {**CIFAR_NET, "depth": "20"},
    ],
)
def test_paper_nets_need_every_setting_to_match(settings):
    assert paper_net(settings) is None


def test_table6_points_are_the_papers():
    assert dict(table6_points()) == {
        20: 8.75,
        32: 7.51,
        44: 7.17,
        56: 6.97,
        110: 6.61,
        1202: 7.93,
    }


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("int", "3", 3),
        ("int", "3.0", 3),
        ("int", "-12", -12),
        ("float", "1e-4", 1e-4),
        ("float", "0.1", 0.1),
        ("bool", "True", True),
        ("bool", "false", False),
        ("bool", "1", True),
        ("bool", "0", False),
        ("bool", "YES", True),
        ("bool", "no", False),
        ("str", "A", "A"),
        ("str", "none", "none"),  # the plain net's shortcut, not an unset one
        ("int", "None", None),
        ("bool", None, None),
    ],
)
def test_decode(kind, text, expected):
    value = decode(kind, text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("kind", "text"),
    [("int", "3.5"), ("int", "inf"), ("int", "nan"), ("int", "x"), ("float", "fast"),
     ("bool", "maybe"), ("bool", ""), ("bool", "2"), ("list", "[1]")],
)  # fmt: skip
def test_decode_refuses_junk(kind, text):
    with pytest.raises(ValueError):
        decode(kind, text)


def test_reports_import_no_training_stack():
    # The layering rule: reports -> mlflow, pandas, plotly, numpy, scipy, statsmodels;
    # never resnet, ray, torch or ablations. statsmodels (about 2 s to import) loads only
    # when a factorial model is fitted, not with every `ablate` command that imports
    # reports. A fresh interpreter, so modules other tests imported do not count.
    code = (
        "import sys, reports, reports.fetch, reports.page, reports.build\n"
        "banned = {'torch', 'torchvision', 'ray', 'optuna', 'resnet', 'ablations',\n"
        "          'statsmodels'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & banned))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# Power: the verdicts' test is Welch's, Holm-corrected over the arms compared. Its power
# is integrated over the two variance estimates (stats.welch_power); these pin it against
# a brute-force simulation, the textbook noncentral t where the two agree, and the
# integers the planners round to. tests/test_calibration.py checks it by simulation too.


def test_welch_power_matches_a_simulation_of_the_test():
    rng = np.random.default_rng(0)
    for n_a, n_b, sd_b in ((3, 3, 0.5), (3, 6, 1.0), (5, 5, 0.5)):
        x = 0.6 + 0.5 * rng.standard_normal((40000, n_a))
        y = sd_b * rng.standard_normal((40000, n_b))
        simulated = np.mean(sps.ttest_ind(x, y, axis=1, equal_var=False).pvalue < 0.05)
        assert stats.welch_power(0.6, 0.5, sd_b, n_a, n_b) == pytest.approx(simulated, abs=0.01)


def test_welch_power_is_below_the_pooled_t_power_at_few_seeds():
    # Welch's degrees of freedom are at most the pooled test's: the MDE the report printed
    # from the pooled t-test promised more than the verdicts' test delivers.
    from statsmodels.stats.power import TTestIndPower

    for n in (3, 5):
        pooled = TTestIndPower().power(1.5, nobs1=n, alpha=0.05, ratio=1.0)
        assert stats.welch_power(0.75, 0.5, 0.5, n, n) < pooled
    big = TTestIndPower().power(0.5, nobs1=200, alpha=0.05, ratio=1.0)
    assert stats.welch_power(0.25, 0.5, 0.5, 200, 200) == pytest.approx(big, abs=2e-3)


@pytest.mark.parametrize(("n_a", "n_b"), [(2, 2), (3, 3), (3, 5), (5, 5), (10, 7)])
@pytest.mark.parametrize("tests", [1, 3])
def test_power_at_the_mde_is_the_target(n_a, n_b, tests):
    d = stats.mde(n_a, n_b, 0.5, tests=tests)
    level = 0.05 / tests
    assert stats.welch_power(d, 0.5, 0.5, n_a, n_b, level) == pytest.approx(0.8, abs=1e-4)
    # More comparisons, a stricter level, a larger detectable difference.
    assert tests == 1 or d > stats.mde(n_a, n_b, 0.5)


def test_mde_scales_with_the_spread_and_needs_a_test():
    assert stats.mde(4, 6, 1.0) == pytest.approx(2 * stats.mde(4, 6, 0.5), rel=1e-6)
    assert stats.mde(4, 6, 0.5) == stats.mde(6, 4, 0.5)
    assert stats.mde(4, 6, 1.0, alpha=0.01, power=0.9) > stats.mde(4, 6, 1.0)
    assert math.isnan(stats.mde(1, 5, 0.5)) and math.isnan(stats.mde(3, 3, math.nan))


@pytest.mark.parametrize(
    ("effect", "sd"), [(0.3, 0.5), (0.5, 0.5), (1.0, 0.16), (0.2, 0.54), (2.0, 0.5), (0.05, 0.5)]
)
def test_seeds_needed_is_the_smallest_n_with_enough_power(effect, sd):
    n = stats.seeds_needed(effect, sd)
    assert stats.welch_power(effect, sd, sd, n, n) >= 0.8
    assert n == 2 or stats.welch_power(effect, sd, sd, n - 1, n - 1) < 0.8
    more = stats.seeds_needed(effect, sd, tests=4)
    assert more >= n and stats.welch_power(effect, sd, sd, more, more, 0.05 / 4) >= 0.8


def test_seeds_needed_refuses_nonsense():
    for effect, sd in ((0.0, 0.5), (-1.0, 0.5), (0.3, 0.0), (math.nan, 0.5)):
        with pytest.raises(ValueError):
            stats.seeds_needed(effect, sd)
    with pytest.raises(ValueError):
        stats.seeds_needed(0.3, 0.5, power=1.0)


def test_seeds_needed_is_at_least_two():
    assert stats.seeds_needed(50.0, 0.5) == 2  # detectable with any test at all


def test_prior_seed_sd_is_the_stated_half_point():
    assert stats.PRIOR_SEED_SD == 0.5
    assert "docs/paper.md §6" in stats.PRIOR_SEED_SD_SOURCE


def test_pooled_sd_by_hand():
    # a: squares 2 on 2 df; b: squares 2 on 1 df (NaN dropped); c: one value, no df.
    groups = {"a": [1.0, 2.0, 3.0], "b": [5.0, math.nan, 7.0], "c": [4.0]}
    sd, df = stats.pooled_sd(groups)
    assert df == 3 and sd == pytest.approx(math.sqrt(4 / 3))
    assert stats.pooled_sd({"c": [4.0], "d": [math.inf, 2.0]}) is None
    assert stats.pooled_sd({}) is None


def test_pooled_seed_spread_by_hand():
    import pandas as pd

    rows = [("a", v, "finished") for v in (1.0, 2.0, 3.0)]  # squares 2 on 2 df
    rows += [("b", v, "finished") for v in (5.0, 7.0)]  # squares 2 on 1 df
    rows += [("c", 4.0, "finished"), ("b", 50.0, "failed"), ("d", 9.0, "diverged")]
    frame = pd.DataFrame([{"arm": a, "test/error": v / 100, "status": s} for a, v, s in rows])
    sd, df = stats.seed_spread_of(frame)
    assert df == 3 and sd == pytest.approx(math.sqrt(4 / 3))
    assert stats.seed_spread_of(frame[frame["arm"] == "c"]) is None


@pytest.mark.parametrize(
    ("sd", "half_width", "confidence"),
    [(0.5, 0.25, 0.95), (0.5, 0.5, 0.95), (1.0, 0.1, 0.95), (0.16, 0.3, 0.95), (2.0, 0.5, 0.9)],
)
@pytest.mark.parametrize("probability", [0.5, 0.8, 0.9])
def test_seeds_for_ci_is_the_smallest_n_that_meets_the_target_often_enough(
    sd, half_width, confidence, probability
):
    def met(n: int) -> float:
        # P(t s / sqrt(n) <= h) with s^2 ~ sd^2 chi2(n-1) / (n-1)
        limit = half_width * math.sqrt(n) / (sps.t.ppf(0.5 + confidence / 2, n - 1) * sd)
        return sps.chi2.cdf((n - 1) * limit**2, n - 1)

    n = stats.seeds_for_ci(sd, half_width, confidence, probability)
    assert n >= 2 and met(n) >= probability
    assert n == 2 or met(n - 1) < probability


def test_seeds_for_ci_by_hand():
    # sd 0.5, +-0.5: planning on s = sd gives 7 seeds (2.447 * 0.5 / 2.646 = 0.462), but
    # s is estimated: 7 seeds meet the target with probability 0.68, 8 with 0.81, 9 with 0.91.
    assert stats.seeds_for_ci(0.5, 0.5) == 9
    assert stats.seeds_for_ci(0.5, 0.5, probability=0.8) == 8
    assert stats.seeds_for_ci(0.5, 0.5, probability=0.6) == 7
    assert stats.seeds_for_ci(0.0, 0.1) == 2  # no spread: two seeds to show it
    for sd, width in ((-1.0, 0.3), (math.nan, 0.3), (0.5, 0.0), (0.5, math.inf)):
        with pytest.raises(ValueError):
            stats.seeds_for_ci(sd, width)


# Adaptive replication: Stein's two-stage design (reports/replication.py).


def test_two_stage_total_by_hand():
    from reports import replication

    # s0 = 0.5 over 3 seeds, t(2) = 4.303: (4.303 * 0.5 / 0.4)^2 = 28.9 -> 29, capped at 10.
    first = [7.0, 7.5, 6.5]
    assert replication.needed_seeds(first, 0.4) == 29
    assert replication.total_seeds(first, 0.4, 10) == 10
    # A small spread needs no second stage: never fewer than the first stage.
    assert replication.total_seeds([7.0, 7.01, 7.02], 0.4, 10) == 3
    with pytest.raises(ValueError):
        replication.needed_seeds([7.0], 0.4)


def test_two_stage_interval_uses_the_first_stage_spread_and_every_seed():
    from reports import replication

    first, rest = [7.0, 7.5, 6.5], [7.2, 6.8, 7.1, 6.9, 7.0, 7.3, 6.7]
    found = replication.interval(first, rest)
    half = sps.t.ppf(0.975, 2) * 0.5 / math.sqrt(10)
    assert found.mean == pytest.approx(np.mean(first + rest))
    assert (found.first_sd, found.first_n, found.n) == (pytest.approx(0.5), 3, 10)
    assert found.half_width == pytest.approx(half)
    assert (found.ci_low, found.ci_high) == pytest.approx((found.mean - half, found.mean + half))
    assert math.isnan(replication.interval([7.0], rest).half_width)


def test_behrens_fisher_p_values_by_hand():
    from reports import replication

    # One weight zero: the statistic is the other arm's t variable.
    assert replication.behrens_fisher_sf(2.0, 1.0, 4, 2) == pytest.approx(
        2 * sps.t.sf(2.0, 4), abs=1e-3
    )
    assert replication.behrens_fisher_sf(2.0, 0.0, 4, 2) == pytest.approx(
        2 * sps.t.sf(2.0, 2), abs=1e-3
    )
    # Equal weights: a simulation of (Ta - Tb) / sqrt(2).
    rng = np.random.default_rng(0)
    t = (rng.standard_t(2, 400000) - rng.standard_t(2, 400000)) / math.sqrt(2)
    assert replication.behrens_fisher_sf(3.0, math.sqrt(0.5), 2, 2) == pytest.approx(
        np.mean(np.abs(t) >= 3.0), abs=2e-3
    )


def test_the_design_reads_back_from_its_description():
    from reports import replication

    design = replication.TwoStage(3, 0.25, 10)
    assert replication.parse(design.describe()) == design
    assert replication.parse("fixed seeds") is None
    assert replication.parse("adaptive: 95% CI half-width <= 0.3 points, at most 4") is None


def test_the_report_says_which_design_chose_the_seeds():
    import pandas as pd

    from reports import replication

    text = replication.design_text(replication.TwoStage(3, 0.25, 10).describe(), None)
    assert text.startswith("two-stage (Stein 1945): 3 seeds per arm first") and "t(n0 − 1)" in text
    old = "adaptive: 95% CI half-width <= 0.3 points, at most 4 seeds per arm"
    assert "cover less than stated" in replication.design_text(old, None)
    assert replication.design_text("fixed seeds", None) == "fixed seeds"
    # Seeds 0-2 created together; seeds 3 and 4 a day later, when trials of an hour had ended.
    runs = pd.DataFrame(
        {
            "role": "trial",
            "seed": [0, 1, 2, 0, 1, 2, 3, 4],
            "start_time": [0, 1, 2, 3, 4, 5, 86_400_000, 86_400_001],
            "wall_time_s": [3600.0] * 8,
        }
    )
    text = replication.design_text("fixed seeds", runs)
    assert "Seeds 3, 4 were added by a later run of the study" in text
    # Under the two-stage design the second stage comes later by design.
    assert "added by a later run" not in replication.design_text(
        replication.TwoStage(3, 0.25, 10).describe(), runs
    )
    assert "added" not in replication.design_text("fixed seeds", runs[runs["seed"] < 3])


def test_the_arm_table_judges_two_stage_arms_by_the_design():
    import report_fixtures as rf

    from reports import replication
    from reports.data import select_trials
    from reports.tables import arm_table

    spec = rf.adaptive_study()  # seeds 0 and 1 first, up to 4 per arm
    spec.replication = replication.TwoStage(2, 0.3, 4).describe()
    data = rf.study_data(spec)
    arms = arm_table(select_trials(data.runs), data.info).set_index("arm")

    def stages(arm: str) -> tuple[list[float], list[float]]:
        first, rest = [], []
        for trial in spec.trials:
            settings = rf.resolved(trial)
            if rf.arm_label(settings, spec.factors) == arm:
                value = 100 * rf.final_errors(settings)[1]
                (first if settings["seed"] < 2 else rest).append(value)
        return first, rest

    for arm, row in arms.iterrows():
        found = replication.interval(*stages(arm))
        assert row["ci_half_width_pct"] == pytest.approx(found.half_width), arm
        assert row["test_error_pct_ci_low"] == pytest.approx(max(0.0, found.ci_low)), arm
        if row["reference_arm"] not in ("", arm):
            test = replication.test(*stages(arm), *stages(row["reference_arm"]))
            assert row["p_value"] == pytest.approx(test.p), arm
            n_a, n_b = (sum(map(len, stages(a))) for a in (arm, row["reference_arm"]))
            tests = int(arms["p_value"].notna().sum())
            mde = replication.mde(n_a, n_b, 2, 2, row["mde_sd_pct"], tests=tests)
            assert row["mde_pct"] == pytest.approx(mde), arm
        needs = row["seeds_for_target"]
        assert math.isnan(needs) or needs == replication.needed_seeds(stages(arm)[0], 0.3)
