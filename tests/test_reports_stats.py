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


# Power: reports.stats asks statsmodels' TTestIndPower; these pin the questions it asks
# (sides, seeds, levels) and the integer answers it rounds to.


@pytest.mark.parametrize(("n_a", "n_b"), [(2, 2), (3, 3), (3, 5), (5, 5), (10, 7)])
@pytest.mark.parametrize("sd", [0.16, 0.5])
def test_mde_agrees_with_statsmodels(n_a, n_b, sd):
    from statsmodels.stats.power import TTestIndPower

    d = TTestIndPower().solve_power(
        effect_size=None, nobs1=n_a, ratio=n_b / n_a, alpha=0.05, power=0.8
    )
    assert stats.mde(n_a, n_b, sd) == pytest.approx(d * sd, rel=1e-4)


def test_mde_at_other_levels_and_without_a_test():
    from statsmodels.stats.power import TTestIndPower

    d = TTestIndPower().solve_power(nobs1=4, ratio=1.5, alpha=0.01, power=0.9)
    assert stats.mde(4, 6, 1.0, alpha=0.01, power=0.9) == pytest.approx(d, rel=1e-4)
    assert math.isnan(stats.mde(1, 5, 0.5)) and math.isnan(stats.mde(3, 3, math.nan))


@pytest.mark.parametrize(
    ("effect", "sd"), [(0.3, 0.5), (0.5, 0.5), (1.0, 0.16), (0.2, 0.54), (2.0, 0.5), (0.05, 0.5)]
)
def test_seeds_needed_is_the_smallest_n_with_enough_power(effect, sd):
    from statsmodels.stats.power import TTestIndPower

    power = TTestIndPower()
    n = stats.seeds_needed(effect, sd)
    assert power.power(effect / sd, nobs1=n, alpha=0.05, ratio=1.0) >= 0.8
    if n > 2:
        assert power.power(effect / sd, nobs1=n - 1, alpha=0.05, ratio=1.0) < 0.8
        exact = power.solve_power(effect_size=effect / sd, alpha=0.05, power=0.8, ratio=1.0)
        assert n == math.ceil(exact)


def test_seeds_needed_refuses_nonsense():
    for effect, sd in ((0.0, 0.5), (-1.0, 0.5), (0.3, 0.0), (math.nan, 0.5)):
        with pytest.raises(ValueError):
            stats.seeds_needed(effect, sd)
    with pytest.raises(ValueError):
        stats.seeds_needed(0.3, 0.5, power=1.0)


def test_power_at_the_mde_is_the_target():
    from statsmodels.stats.power import TTestIndPower

    d = stats.mde(4, 6, 0.5) / 0.5
    assert TTestIndPower().power(d, nobs1=4, ratio=1.5, alpha=0.05) == pytest.approx(0.8)
    # By hand: the noncentral t of a two-sided test on 8 degrees of freedom.
    crit, nc = sps.t.ppf(0.975, 8), d * math.sqrt(4 * 6 / 10)
    assert sps.nct.sf(crit, 8, nc) + sps.nct.cdf(-crit, 8, nc) == pytest.approx(0.8)


def test_seeds_needed_is_at_least_two():
    assert stats.seeds_needed(5.0, 0.5) == 2  # detectable with any test at all


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
def test_seeds_for_ci_is_the_smallest_n_that_is_precise_enough(sd, half_width, confidence):
    def half(n: int) -> float:
        return sps.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)

    n = stats.seeds_for_ci(sd, half_width, confidence)
    assert n >= 2 and half(n) <= half_width
    assert n == 2 or half(n - 1) > half_width


def test_seeds_for_ci_by_hand():
    # sd 0.5, +-0.5: n = 7 gives 2.447 * 0.5 / 2.646 = 0.462; n = 6, 2.571 * 0.5 / 2.449 = 0.525.
    assert stats.seeds_for_ci(0.5, 0.5) == 7
    assert stats.seeds_for_ci(0.0, 0.1) == 2  # no spread: two seeds to show it
    for sd, width in ((-1.0, 0.3), (math.nan, 0.3), (0.5, 0.0), (0.5, math.inf)):
        with pytest.raises(ValueError):
            stats.seeds_for_ci(sd, width)
