"""Seed statistics: mean and spread, t confidence intervals, Welch's test, Holm's correction.

PAPER.md section 6: seed noise (about 0.5 points on CIFAR-10) is as large as some of the
effects ablations look for, so every comparison is a test over seeds, never one run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof=1), count and a t confidence interval of the
    finite values. With n < 2 the spread and interval are NaN: one seed says nothing about
    the spread."""

    mean: float
    std: float
    n: int
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Welch:
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
    result = stats.ttest_ind(x, y, equal_var=False)
    # Welch-Satterthwaite degrees of freedom, reported beside the p-value.
    df = float((vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1)))
    return Welch(diff, se, float(result.statistic), df, float(result.pvalue))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order; NaN stays NaN and does not
    count towards the number of tests.

    Sorted ascending p(1) <= ... <= p(m), the adjusted p(i) is
    max over j <= i of min(1, (m - j + 1) * p(j)).
    """
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


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
) -> str:
    """One sentence on arm vs reference. Differences are in the unit of the inputs (the
    report passes error in percent, so 'points'); lower error wins."""
    if n_arm < 2 or n_reference < 2:
        return (
            f"the test needs ≥ 2 seeds per arm (have {n_arm} for {arm}, "
            f"{n_reference} for {reference})"
        )
    if not math.isfinite(p_adjusted):
        return f"no spread in either arm (n = {n_arm} and {n_reference}); cannot test"
    size = f"{abs(test.diff):.2f} ± {test.se:.2f} points, {format_p(p_adjusted)}"
    if p_adjusted < alpha:
        if test.diff < 0:
            return f"{arm} beats {reference} by {size}"
        return f"{reference} beats {arm} by {size}"
    seeds = f"n = {n_arm} seeds" if n_arm == n_reference else f"n = {n_arm} and {n_reference} seeds"
    return f"no significant difference with {seeds} ({size})"
