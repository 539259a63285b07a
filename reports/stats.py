"""Seed statistics: mean and spread, t confidence intervals, Welch's test, Holm's
correction, the power of the verdicts' test (Welch's at Holm's first level: minimum
detectable difference, seeds needed) and the seeds an arm needs for a confidence interval
of a given width with a stated probability. The runner and `ablate show` size studies with
these same functions; two-stage replication's own statistics are in reports/replication.py,
and tests/test_calibration.py checks what each promises by simulation.

Seed noise (about 0.5 points on CIFAR-10, docs/paper.md §6) is as large as some of the
effects ablations look for, so every comparison is a test over seeds, never one run.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import optimize, stats

ALPHA = 0.05
POWER = 0.8
# The seed-to-seed standard deviation of a final CIFAR-10 test error, in points, assumed
# when a study has measured none: others' six reruns of ResNet-56 spread from 6.89 to 8.42
# (sample std 0.54; docs/paper.md §6), while the 2015 paper's five ResNet-110 runs gave
# 6.61 +- 0.16 (its Table 6). The larger spread is the safe one to size a study with: a
# study planned on 0.16 would have about a tenth of the seeds it needs if the spread is 0.5.
PRIOR_SEED_SD = 0.5
PRIOR_SEED_SD_SOURCE = (
    "others' six reruns of ResNet-56 on CIFAR-10 spread about 0.5 points, docs/paper.md §6"
)


class Summary(NamedTuple):
    """Mean, sample standard deviation (ddof=1), count and a t confidence interval of the
    finite values. With n < 2 the spread and interval are NaN: one seed says nothing about
    the spread."""

    mean: float
    std: float
    n: int
    ci_low: float
    ci_high: float


class Welch(NamedTuple):
    """Welch's unequal-variance t-test of a against b. diff = mean(a) - mean(b); se is the
    standard error of that difference."""

    diff: float
    se: float
    t: float
    df: float
    p: float


def finite(values: Iterable[float]) -> np.ndarray:
    array = np.asarray(list(values), dtype=float)
    return array[np.isfinite(array)]


def summarize(values: Iterable[float], confidence: float = 0.95) -> Summary:
    x = finite(values)
    n = int(x.size)
    if n == 0:
        return Summary(math.nan, math.nan, 0, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return Summary(mean, math.nan, 1, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * std / math.sqrt(n)
    return Summary(mean, std, n, mean - half, mean + half)


def welch(a: Iterable[float], b: Iterable[float]) -> Welch:
    """NaN everywhere when either side has fewer than 2 finite values."""
    x, y = finite(a), finite(b)
    if x.size < 2 or y.size < 2:
        return Welch(math.nan, math.nan, math.nan, math.nan, math.nan)
    diff = float(x.mean() - y.mean())
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = float(math.sqrt(vx + vy))
    if se == 0.0:
        # Identical seeds on both sides: the t statistic is undefined, not infinite.
        return Welch(diff, 0.0, math.nan, math.nan, math.nan)
    result = stats.ttest_ind(x, y, equal_var=False)  # df: Welch-Satterthwaite's
    return Welch(diff, se, float(result.statistic), float(result.df), float(result.pvalue))


def welch_rows(x: np.ndarray, y: np.ndarray) -> Welch:
    """welch() of each row of `x` against the same row of `y` (2-D arrays of finite values,
    at least 2 columns each), as arrays: for simulations that check the test's level."""
    n_x, n_y = x.shape[-1], y.shape[-1]
    vx, vy = x.var(axis=-1, ddof=1) / n_x, y.var(axis=-1, ddof=1) / n_y
    diff, se = x.mean(axis=-1) - y.mean(axis=-1), np.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx * vx / (n_x - 1) + vy * vy / (n_y - 1))
    t = diff / se
    return Welch(diff, se, t, df, 2 * stats.t.sf(np.abs(t), df))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order; NaN stays NaN and does not
    count towards the number of tests. The i-th smallest of m p-values becomes the largest
    of min(1, (m - j + 1) p_(j)) over j <= i, as statsmodels' multipletests computes it
    (which calls the garbage collector every time: too slow for the calibration suite)."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    tested = np.isfinite(p)
    if tested.any():
        adjusted[tested] = holm_rows(p[tested][None, :])[0]
    return adjusted


def holm_rows(p: np.ndarray) -> np.ndarray:
    """holm() of each row of a 2-D array of finite p-values."""
    m = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1) * (m - np.arange(m))
    ranked = np.minimum(1.0, np.maximum.accumulate(ranked, axis=-1))
    out = np.empty_like(ranked)
    np.put_along_axis(out, order, ranked, axis=-1)
    return out


def format_p(p: float) -> str:
    if not math.isfinite(p):
        return "p = n/a"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.2g}" if p < 0.1 else f"p = {p:.2f}"


def verdict(
    arm: str,
    reference: str,
    test: Welch,
    p_adjusted: float,
    n_arm: int,
    n_reference: int,
    alpha: float = ALPHA,
    evidence: bool = True,
) -> str:
    """One sentence on arm vs reference, in points of error (lower wins). With `evidence`
    False (a reduced run) a difference is described, never declared a win."""
    if n_arm < 2 or n_reference < 2:
        return (
            f"the test needs ≥ 2 seeds per arm (have {n_arm} for {arm}, "
            f"{n_reference} for {reference})"
        )
    if not math.isfinite(p_adjusted):
        return f"no spread in either arm (n = {n_arm} and {n_reference}); cannot test"
    size = f"{abs(test.diff):.2f} ± {test.se:.2f} points, {format_p(p_adjusted)}"
    if p_adjusted < alpha:
        low, high = (arm, reference) if test.diff < 0 else (reference, arm)
        if not evidence:
            return f"{low} lower than {high} by {size} in this reduced run (not evidence)"
        return f"{low} beats {high} by {size}"
    seeds = f"n = {n_arm} seeds" if n_arm == n_reference else f"n = {n_arm} and {n_reference} seeds"
    return f"no significant difference with {seeds} ({size})"


_GRID = 96  # quantile nodes per variance estimate in welch_power's integral


@functools.lru_cache(maxsize=64)
def variance_nodes(df: int) -> np.ndarray:
    """Midpoint quantiles of chi2(df) / df: a variance estimate over the true variance."""
    u = (np.arange(_GRID) + 0.5) / _GRID
    return stats.chi2.ppf(u, df) / df


def welch_power(
    diff: float, sd_a: float, sd_b: float, n_a: int, n_b: int, alpha: float = ALPHA,
    df_a: int | None = None, df_b: int | None = None,
) -> float:  # fmt: skip
    """The probability that Welch's two-sided test at level `alpha` (the verdicts' test)
    rejects when the means of `n_a` and `n_b` seeds differ by `diff` and seeds spread with
    `sd_a` and `sd_b` under normal noise. Exact up to quadrature: the means are normal and
    independent of the variance estimates (on `df_a`, `df_b` degrees of freedom, by default
    n - 1), over which it integrates; Welch-Satterthwaite's degrees of freedom and the
    critical value vary with them, as in the test."""
    k_a, k_b = df_a or n_a - 1, df_b or n_b - 1
    va = sd_a * sd_a / n_a * variance_nodes(k_a)[:, None]
    vb = sd_b * sd_b / n_b * variance_nodes(k_b)[None, :]
    se = np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va * va / k_a + vb * vb / k_b)
    crit = stats.t.ppf(1 - alpha / 2, df) * se
    spread = math.sqrt(sd_a * sd_a / n_a + sd_b * sd_b / n_b)
    reject = stats.norm.sf((crit - diff) / spread) + stats.norm.cdf((-crit - diff) / spread)
    return float(reject.mean())


def _check_levels(alpha: float, power: float) -> None:
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must lie between 0 and 1, not {alpha} and {power}")


def mde(
    n_a: int, n_b: int, sd_points: float, alpha: float = ALPHA, power: float = POWER,
    tests: int = 1,
) -> float:  # fmt: skip
    """Minimum detectable difference, in points: the smallest true difference between arms
    of `n_a` and `n_b` seeds that the verdicts' test, Welch's, detects with probability
    `power` at seed spread `sd_points`, when Holm's correction runs over `tests`
    comparisons. Holm rejects whatever Bonferroni does, so the difference is computed at
    level alpha / tests: at it the power is at least `power` (equal to it when the other
    comparisons find nothing). NaN below 2 seeds a side (no test)."""
    if n_a < 2 or n_b < 2 or not math.isfinite(sd_points) or sd_points <= 0:
        return math.nan
    _check_levels(alpha, power)
    return _detectable(min(n_a, n_b), max(n_a, n_b), alpha / max(1, tests), power) * sd_points


@functools.lru_cache(maxsize=1024)
def _detectable(n_a: int, n_b: int, alpha: float, power: float) -> float:
    """The standardized difference (effect / sd) Welch's test detects with probability
    `power`; cached: the arms of a study mostly share their seed counts."""

    def short(d: float) -> float:
        return welch_power(d, 1.0, 1.0, n_a, n_b, alpha) - power

    high = 1.0
    while short(high) < 0:
        high *= 2
    return float(optimize.brentq(short, 0.0, high, xtol=1e-6))


def seeds_needed(
    effect_points: float, sd_points: float, alpha: float = ALPHA, power: float = POWER,
    tests: int = 1,
) -> int:  # fmt: skip
    """Seeds per arm for the verdicts' test (Welch's, two-sided, at level alpha / tests:
    Holm over `tests` comparisons, bounded by Bonferroni) to detect a true difference of
    `effect_points` with probability at least `power`, when seeds spread with standard
    deviation `sd_points` (at least 2: one seed has no spread to test with)."""
    if not (math.isfinite(effect_points) and effect_points > 0):
        raise ValueError(f"the effect must be a positive number of points, not {effect_points}")
    if not (math.isfinite(sd_points) and sd_points > 0):
        raise ValueError(f"the seed spread must be a positive number of points, not {sd_points}")
    _check_levels(alpha, power)
    level = alpha / max(1, tests)

    def enough(n: int) -> bool:
        return welch_power(effect_points, sd_points, sd_points, n, n, level) >= power

    # The normal approximation is a lower bound: start there, settle the integer.
    z = stats.norm.ppf(1 - level / 2) + stats.norm.ppf(power)
    n = max(2, math.ceil(2 * (z * sd_points / effect_points) ** 2))
    while not enough(n):
        n += 1
    while n > 2 and enough(n - 1):
        n -= 1
    return n


def pooled_sd(groups: Mapping[str, Sequence[float]]) -> tuple[float, int] | None:
    """The pooled within-group standard deviation of the finite values of `groups` and its
    degrees of freedom (the sum over groups of values - 1); None when no group has 2."""
    squares, df = 0.0, 0
    for values in groups.values():
        x = finite(values)
        if x.size >= 2:
            squares += float(((x - x.mean()) ** 2).sum())
            df += x.size - 1
    return (math.sqrt(squares / df), df) if df else None


def seeds_for_ci(
    sd: float, half_width: float, confidence: float = 0.95, probability: float = 0.9
) -> int:
    """The smallest n >= 2 whose t interval of a mean, t_{(1+c)/2, n-1} * s / sqrt(n), is
    no wider than +-`half_width` with probability at least `probability` when values
    spread with standard deviation `sd`: s is estimated, s^2 ~ sd^2 chi2(n-1) / (n-1), so
    planning on s = sd (probability 0.5, near enough) misses the target about half the
    time."""
    if not (math.isfinite(sd) and sd >= 0):
        raise ValueError(f"the standard deviation must be a finite number >= 0, not {sd}")
    if not (math.isfinite(half_width) and half_width > 0):
        raise ValueError(f"the half-width must be a positive number, not {half_width}")
    if not 0 < confidence < 1 or not 0 < probability < 1:
        raise ValueError(
            f"the confidence and probability must lie between 0 and 1, not {confidence} "
            f"and {probability}"
        )
    q = 0.5 + confidence / 2
    if sd == 0:
        return 2

    def reached(n: int) -> float:
        # P(t s / sqrt(n) <= h) = P(chi2(n-1) <= (n-1) (h sqrt(n) / (t sd))^2)
        limit = half_width * math.sqrt(n) / (stats.t.ppf(q, n - 1) * sd)
        return float(stats.chi2.cdf((n - 1) * limit * limit, n - 1))

    # The normal quantile is below every t quantile: start there and step up.
    n = max(2, math.ceil((stats.norm.ppf(q) * sd / half_width) ** 2))
    while reached(n) < probability:
        n += 1
    while n > 2 and reached(n - 1) >= probability:
        n -= 1
    return n


def seed_spread_of(trials: pd.DataFrame) -> tuple[float, int] | None:
    """pooled_sd() of the final test error in points of the finished trials of `trials`
    (one row per trial) within their arms."""
    if trials.empty or "test/error" not in trials.columns:
        return None
    done = trials[trials["status"] == "finished"]
    errors = 100.0 * pd.to_numeric(done["test/error"], errors="coerce")
    return pooled_sd({arm: list(group) for arm, group in errors.groupby(done["arm"])})
