"""Calibration: every inference the report prints, checked by simulation on synthetic seed
errors (no training) through the functions the report and the runner call.

Each check states its nominal rate and allows 3 binomial standard errors of the number of
repeats around it (one-sided where the promise is one-sided: "at most alpha", "at least
95%"). Noise: normal; t with 4 degrees of freedom (heavier tails); and unequal spreads
between arms (0.5 and 1.0 points). Fixed seeds: the figures are reproducible, and
docs/tracking.md quotes them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from reports import replication, stats
from reports.effects import factorial_effects

ALPHA, SD = 0.05, 0.5
NOISES = ("normal", "t4", "unequal")


def slack(p: float, repeats: int) -> float:
    """3 binomial standard errors of a rate p measured over `repeats`."""
    return 3 * math.sqrt(p * (1 - p) / repeats)


def noise(rng: np.random.Generator, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    """Unit-variance seed noise: normal, or t(4) scaled to variance 1."""
    if kind == "t4":
        return rng.standard_t(4, shape) / math.sqrt(2)
    return rng.standard_normal(shape)


def spreads(kind: str, arms: int) -> np.ndarray:
    """Each arm's seed SD in points: 0.5, or alternately 0.5 and 1.0 for `unequal`."""
    if kind == "unequal":
        return np.where(np.arange(arms) % 2 == 0, SD, 2 * SD)
    return np.full(arms, SD)


# Per-arm tests: Welch's test of each arm against the reference, Holm over the arms.


@pytest.mark.parametrize("kind", NOISES)
@pytest.mark.parametrize("arms", [2, 4, 6])
def test_welch_with_holm_keeps_the_familywise_error(arms, kind):
    repeats, seeds = 2000, 3
    rng = np.random.default_rng(100 + arms)
    errors = 7.0 + spreads(kind, arms)[None, :, None] * noise(rng, kind, (repeats, arms, seeds))
    tests = [stats.welch_rows(errors[:, i], errors[:, 0]) for i in range(1, arms)]
    p = np.stack([t.p for t in tests], axis=1)
    familywise = float(np.mean((stats.holm_rows(p) < ALPHA).any(axis=1)))
    assert familywise <= ALPHA + slack(ALPHA, repeats), familywise


def test_the_vectorised_welch_and_holm_are_the_reports():
    rng = np.random.default_rng(1)
    x, y = rng.normal(7, 0.5, (20, 3)), rng.normal(7, 1.0, (20, 5))
    rows = stats.welch_rows(x, y)
    for i in range(20):
        one = stats.welch(x[i], y[i])
        assert (rows.diff[i], rows.se[i], rows.df[i], rows.p[i]) == pytest.approx(
            (one.diff, one.se, one.df, one.p), rel=1e-9
        )
    p = rng.uniform(size=(20, 5)) ** 3
    assert np.array_equal(stats.holm_rows(p), np.stack([stats.holm(row) for row in p]))


# Intervals: of an arm's mean (the table's 95% CI) and of a difference (diff ± se).


@pytest.mark.parametrize("kind", NOISES)
@pytest.mark.parametrize("seeds", [3, 5])
def test_intervals_of_means_and_differences_cover(seeds, kind):
    repeats = 2000
    rng = np.random.default_rng(200 + seeds)
    sd = spreads(kind, 2)
    a = 7.0 + sd[0] * noise(rng, kind, (repeats, seeds))
    b = 6.5 + sd[1] * noise(rng, kind, (repeats, seeds))
    covered = []
    for row in a:
        s = stats.summarize(row)
        covered.append(s.ci_low <= 7.0 <= s.ci_high)
    mean_cover = float(np.mean(covered))
    t = stats.welch_rows(a, b)
    half = sps.t.ppf(0.975, t.df) * t.se
    diff_cover = float(np.mean(np.abs(t.diff - 0.5) <= half))
    floor = 0.95 - slack(0.95, repeats)
    assert mean_cover >= floor and diff_cover >= floor, (mean_cover, diff_cover)


# Two-factor interactions: the effects table's interval, 2 x 2 design, 3 seeds a cell.


def _cells(rng, kind: str, repeats: int, seeds: int) -> np.ndarray:
    """(repeats, 4 cells, seeds) errors; true interaction 0.3 points."""
    means = np.array([7.0, 6.5, 6.0, 5.2])  # (d20,none) (d20,A) (d56,none) (d56,A)
    sd = spreads(kind, 4)
    return means[None, :, None] + sd[None, :, None] * noise(rng, kind, (repeats, 4, seeds))


def _frame(y: np.ndarray) -> pd.DataFrame:
    seeds = y.shape[1]
    return pd.DataFrame(
        {
            "depth": np.repeat([20, 20, 56, 56], seeds),
            "shortcut": np.repeat(["none", "A", "none", "A"], seeds),
            "status": "finished",
            "test/error": y.ravel() / 100,
        }
    )


TRUE_INTERACTION = (5.2 - 6.0) - (6.5 - 7.0)


def _closed_form(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The interaction and its 95% half-width as reports/effects.py computes them for two
    factors: the difference of differences of cell means, each cell's own variance,
    Welch-Satterthwaite's degrees of freedom."""
    seeds = y.shape[-1]
    means, parts = y.mean(axis=-1), y.var(axis=-1, ddof=1) / seeds
    estimate = (means[..., 3] - means[..., 2]) - (means[..., 1] - means[..., 0])
    se = np.sqrt(parts.sum(axis=-1))
    df = se**4 / (parts * parts / (seeds - 1)).sum(axis=-1)
    return estimate, sps.t.ppf(0.975, df) * se


def test_the_effects_interval_is_the_closed_form():
    rng = np.random.default_rng(300)
    y = _cells(rng, "unequal", 20, 3)
    estimate, half = _closed_form(y)
    for i in range(len(y)):
        row = factorial_effects(_frame(y[i]), ["depth", "shortcut"]).rows[-1]
        assert row.term == "depth × shortcut"
        assert (row.estimate, row.ci_high - row.estimate) == pytest.approx(
            (estimate[i], half[i]), rel=1e-7
        )


@pytest.mark.parametrize("kind", NOISES)
def test_interaction_intervals_cover(kind):
    repeats = 4000
    estimate, half = _closed_form(_cells(np.random.default_rng(301), kind, repeats, 3))
    cover = float(np.mean(np.abs(estimate - TRUE_INTERACTION) <= half))
    assert cover >= 0.95 - slack(0.95, repeats), cover


# The MDE column: the verdicts' test (Welch, Holm over the arms compared) at the printed
# difference detects it with the stated power.


@pytest.mark.parametrize(("arms", "seeds"), [(2, 3), (4, 5), (6, 5)])
def test_power_at_the_printed_mde_is_the_stated_power(arms, seeds):
    repeats, tests = 3000, arms - 1
    rng = np.random.default_rng(400 + arms)
    mde = stats.mde(seeds, seeds, SD, tests=tests)
    errors = 7.0 + SD * rng.standard_normal((repeats, arms, seeds))
    errors[:, 1] -= mde  # one arm differs by the MDE, the others not at all
    p = np.stack([stats.welch_rows(errors[:, i], errors[:, 0]).p for i in range(1, arms)], axis=1)
    found = float(np.mean(stats.holm_rows(p)[:, 0] < ALPHA))
    assert abs(found - stats.POWER) <= slack(stats.POWER, repeats), (mde, found)


@pytest.mark.parametrize(("arms", "first", "seeds"), [(2, 3, 10), (4, 5, 8)])
def test_power_at_the_printed_two_stage_mde_is_the_stated_power(arms, first, seeds):
    # Arms at their totals (here the cap), first stages of `first` seeds: the two-stage
    # test's power at the MDE the report prints for it.
    repeats, tests = 3000, arms - 1
    rng = np.random.default_rng(450 + arms)
    mde = replication.mde(seeds, seeds, first, first, SD, tests=tests)
    errors = 7.0 + SD * rng.standard_normal((repeats, arms, seeds))
    errors[:, 1] -= mde
    s0, means = errors[:, :, :first].std(axis=2, ddof=1), errors.mean(axis=2)
    p = np.stack(
        [
            replication.compare(
                means[:, i] - means[:, 0], s0[:, i], seeds, first, s0[:, 0], seeds, first
            ).p
            for i in range(1, arms)
        ],
        axis=1,
    )
    found = float(np.mean(stats.holm_rows(p)[:, 0] < ALPHA))
    assert abs(found - stats.POWER) <= slack(stats.POWER, repeats), (mde, found)


# The seed planners: planned seeds meet the target with the stated probability.


@pytest.mark.parametrize("target", [0.25, 0.4])
def test_seeds_for_ci_meet_the_target_with_the_stated_probability(target):
    repeats, probability = 4000, 0.9
    n = stats.seeds_for_ci(SD, target, probability=probability)
    rng = np.random.default_rng(500)
    s = (SD * rng.standard_normal((repeats, n))).std(axis=1, ddof=1)
    met = float(np.mean(sps.t.ppf(0.975, n - 1) * s / math.sqrt(n) <= target))
    assert met >= probability - slack(probability, repeats), (n, met)
    fewer = SD * rng.standard_normal((repeats, n - 1))
    below = np.mean(sps.t.ppf(0.975, n - 2) * fewer.std(1, ddof=1) / math.sqrt(n - 1) <= target)
    assert below < probability + slack(probability, repeats), below  # n is the smallest


@pytest.mark.parametrize("target", [0.25, 0.4])
def test_two_stage_planner_covers_the_seeds_the_design_will_run(target):
    repeats, probability, first = 4000, 0.9, 3
    planned = replication.planned_seeds(SD, first, target, probability=probability)
    rng = np.random.default_rng(501)
    runs = [replication.needed_seeds(x, target) for x in SD * rng.standard_normal((repeats, 3))]
    within = float(np.mean(np.array(runs) <= planned))
    assert within >= probability - slack(probability, repeats), (planned, within)


# The replication rule: two-stage (Stein) arms, 3 seeds first, at most 10.


def _two_stage(rng, kind: str, target: float, repeats: int, first=3, most=10):
    """Two arms with equal true means run by the two-stage design; each arm's interval
    and the test between them, through reports.replication's vectorised functions (the
    ones its per-arm functions call, checked equal below)."""
    sd = spreads(kind, 2)
    draws = 7.0 + sd[None, :, None] * noise(rng, kind, (repeats, 2, most))
    s0 = draws[:, :, :first].std(axis=2, ddof=1)
    n = np.minimum(most, replication.totals(s0, first, target))
    used = np.arange(most)[None, None, :] < n[:, :, None]
    means = (draws * used).sum(axis=2) / n
    half = replication.half_widths(s0[:, 0], first, n[:, 0])
    covered = np.abs(means[:, 0] - 7.0) <= half
    p = replication.compare(
        means[:, 0] - means[:, 1], s0[:, 0], n[:, 0], first, s0[:, 1], n[:, 1], first
    ).p
    return float(np.mean(covered)), float(np.mean(p < ALPHA)), (draws, n, half, p)


def test_the_vectorised_two_stage_is_the_runners_and_reports():
    _, _, (draws, n, half, p) = _two_stage(np.random.default_rng(7), "normal", 0.4, 30)
    for i in range(30):
        a, b = draws[i]
        assert [replication.total_seeds(x[:3], 0.4, 10) for x in (a, b)] == list(n[i])
        found = replication.interval(a[:3], a[3 : n[i, 0]])
        assert found.half_width == pytest.approx(half[i], rel=1e-12)
        test = replication.test(a[:3], a[3 : n[i, 0]], b[:3], b[3 : n[i, 1]])
        assert test.p == pytest.approx(p[i], rel=1e-12)


@pytest.mark.parametrize("kind", NOISES)
@pytest.mark.parametrize("target", [0.25, 0.4])
def test_two_stage_replication_keeps_its_level_and_coverage(target, kind):
    repeats = 20000
    cover, alpha, _ = _two_stage(np.random.default_rng(600), kind, target, repeats)
    assert alpha <= ALPHA + slack(ALPHA, repeats), alpha
    assert cover >= 0.95 - slack(0.95, repeats), cover


def _sequential(rng, kind: str, target: float, repeats: int, first=3, most=10):
    """The rule before the two-stage one: add a seed to an arm while t s / sqrt(n) of its
    seeds so far exceeds the target; then Welch's test and the t interval of all seeds."""
    sd = spreads(kind, 2)
    draws = 7.0 + sd[None, :, None] * noise(rng, kind, (repeats, 2, most))
    n = np.full((repeats, 2), first)
    for _ in range(most - first):
        for arm in range(2):
            seen = np.arange(most)[None, :] < n[:, arm, None]
            x = draws[:, arm]
            mean = (x * seen).sum(1) / n[:, arm]
            s = np.sqrt((((x - mean[:, None]) * seen) ** 2).sum(1) / (n[:, arm] - 1))
            wide = sps.t.ppf(0.975, n[:, arm] - 1) * s / np.sqrt(n[:, arm]) > target
            n[:, arm] += wide & (n[:, arm] < most)
    covered, p = [], []
    for i in range(repeats):  # the report's functions, on each repeat's seeds
        a, b = draws[i, 0, : n[i, 0]], draws[i, 1, : n[i, 1]]
        s = stats.summarize(a)
        covered.append(s.ci_low <= 7.0 <= s.ci_high)
        p.append(stats.welch(a, b).p)
    return float(np.mean(covered)), float(np.mean(np.array(p) < ALPHA))


@pytest.mark.xfail(
    strict=True,
    reason="adding a seed while the CI is wider than the target stops arms on chance small "
    "spreads: type I error about 0.08 to 0.11 and coverage about 0.91 at nominal 0.05 and 0.95",
)
@pytest.mark.parametrize("target", [0.25, 0.4])
def test_the_sequential_rule_keeps_its_level_and_coverage(target):
    repeats = 1000
    cover, alpha = _sequential(np.random.default_rng(600), "normal", target, repeats)
    assert alpha <= ALPHA + slack(ALPHA, repeats), alpha
    assert cover >= 0.95 - slack(0.95, repeats), cover


# The runner's rounds are the design's: two rounds, never more.


def test_the_runner_adds_the_second_stage_once_and_reports_its_intervals(tmp_path):
    from conftest import plan_of

    from ablations.ledger import Ledger, TrialState
    from ablations.runner import next_round, targets
    from reports.layout import Role, TrialStatus

    study = tmp_path / "s.yaml"
    study.write_text(
        "name: two_stage\nquestion: Does the first stage set the total?\ndataset: digits\n"
        "scientific:\n  shortcut: [none, A]\n"
        "fixed: {depth: 8, iterations: 30, eval_every: 15, batch_size: 32}\nseeds: [0, 1, 2]\n"
    )
    plan = plan_of(str(study), target_ci=0.4, max_seeds=10)
    errors = {"shortcut=none": [7.0, 7.5, 6.5, 7.1, 6.9, 7.2, 6.8, 7.0, 7.3, 6.7],
              "shortcut=A": [6.0, 6.01, 6.02]}  # fmt: skip

    def ledger_of(plan, ended: int) -> Ledger:
        states = {}
        for trial in plan.trials:
            value = errors[trial.arm][trial.seed] if trial.seed < len(errors[trial.arm]) else 7
            done = trial.seed < ended or trial.seed >= 3
            states[trial.key] = TrialState(
                trial.key, trial.arm, Role.TRIAL, f"r{trial.key}",
                TrialStatus.FINISHED if done else TrialStatus.RUNNING,
                {"seed": str(trial.seed)}, {"test/error": value / 100},
            )  # fmt: skip
        return Ledger(trials=states)

    assert next_round(plan, ledger_of(plan, 2)) == {}  # the first stage has not ended
    more = next_round(plan, ledger_of(plan, 3))
    # s0 = 0.5 over 3 seeds: (4.303 * 0.5 / 0.4)^2 = 28.9, capped at 10; the other arm's
    # spread of 0.01 needs no second stage.
    assert more == {"shortcut=none": list(range(3, 10))}
    grown = plan.with_seeds(more)
    assert next_round(grown, ledger_of(grown, 3)) == {}  # never a third round
    found = targets(grown, ledger_of(grown, 3))
    wide = replication.interval(errors["shortcut=none"][:3], errors["shortcut=none"][3:])
    assert found["shortcut=none"].half_width == pytest.approx(wide.half_width)
    assert (found["shortcut=none"].seeds, found["shortcut=none"].needed) == (10, 29)
    assert not found["shortcut=none"].met(0.4) and found["shortcut=A"].met(0.4)
