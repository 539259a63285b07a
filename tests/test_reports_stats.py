"""The report's statistics against scipy and hand-computed examples, and the paper table."""

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sps

from reports import stats
from reports.data import trial_status
from reports.paper import paper_result, table6_points

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


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"dataset": "cifar10", "depth": 20, "shortcut": "A"}, 8.75),
        ({"dataset": "CIFAR-10", "depth": "56", "shortcut": "A", "width": "16"}, 6.97),
        ({"dataset": "cifar10", "depth": 110, "shortcut": "A"}, 6.61),
        ({"dataset": "cifar10", "depth": 110, "shortcut": "A", "skip_length": 1}, 9.90),
        ({"dataset": "cifar10", "depth": 110, "shortcut": "C"}, 12.22),
        ({"dataset": "cifar10", "depth": 164, "shortcut": "B", "bottleneck": "True"}, 5.93),
        (
            {
                "dataset": "cifar10",
                "depth": 164,
                "shortcut": "B",
                "bottleneck": True,
                "preactivation": True,
            },
            5.46,
        ),
        ({"dataset": "imagenet", "depth": 34, "shortcut": "none"}, 28.54),
        ({"dataset": "imagenet", "depth": 34, "shortcut": "B"}, 24.52),
    ],
)
def test_paper_numbers_match_their_settings(settings, expected):
    found = paper_result(settings)
    assert found is not None and found.test_error_pct == expected


@pytest.mark.parametrize(
    "settings",
    [
        {"dataset": "digits", "depth": 20, "shortcut": "A"},
        {"dataset": "cifar10", "depth": 20, "shortcut": "B"},
        {"dataset": "cifar10", "depth": 20, "shortcut": "none"},
        {"dataset": "cifar10", "depth": 20, "shortcut": "A", "preactivation": True},
        {"dataset": "cifar10", "depth": 20, "shortcut": "A", "width": 32},
        {"dataset": "cifar10", "depth": 110, "shortcut": "A", "stem": "imagenet"},
        # The 2016 bottleneck nets project where dimensions grow; option A is another net.
        {"dataset": "cifar10", "depth": 164, "shortcut": "A", "bottleneck": True},
    ],
)
def test_paper_numbers_need_every_setting_to_match(settings):
    assert paper_result(settings) is None


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
    ("tag", "mlflow_status", "expected"),
    [
        ("finished", "FINISHED", "finished"),
        ("diverged", "FINISHED", "diverged"),
        ("failed", "FAILED", "failed"),
        ("running", "RUNNING", "running"),
        ("interrupted", "KILLED", "interrupted"),  # stopped, resumable: not a failure
        ("pending", "SCHEDULED", "pending"),
        # A store from before `interrupted`: a stopped trial kept the tag `running`.
        ("running", "KILLED", "interrupted"),
        (None, "FAILED", "failed"),
        (None, "KILLED", "interrupted"),
        (None, "SCHEDULED", "pending"),
        (None, "FINISHED", "finished"),
        (None, "RUNNING", "running"),
    ],
)
def test_trial_status(tag, mlflow_status, expected):
    assert trial_status(tag, mlflow_status) == expected


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


# Power: reports.stats computes it exactly from the noncentral t distribution; statsmodels'
# TTestIndPower (a separate implementation) is the reference.


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
    assert stats.t_test_power(stats.mde(4, 6, 0.5), 4, 6, 0.5) == pytest.approx(0.8)


def test_prior_seed_sd_is_the_stated_half_point():
    assert stats.PRIOR_SEED_SD == 0.5
    assert "docs/paper.md §6" in stats.PRIOR_SEED_SD_SOURCE


def test_pooled_seed_spread_by_hand():
    import pandas as pd

    rows = [("a", v, "finished") for v in (1.0, 2.0, 3.0)]  # squares 2 on 2 df
    rows += [("b", v, "finished") for v in (5.0, 7.0)]  # squares 2 on 1 df
    rows += [("c", 4.0, "finished"), ("b", 50.0, "failed"), ("d", 9.0, "diverged")]
    frame = pd.DataFrame([{"arm": a, "test/error": v / 100, "status": s} for a, v, s in rows])
    sd, df = stats.seed_spread_of(frame)
    assert df == 3 and sd == pytest.approx(math.sqrt(4 / 3))
    assert stats.seed_spread_of(frame[frame["arm"] == "c"]) is None
