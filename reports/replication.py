"""Adaptive replication whose error rates hold: Stein's two-stage fixed-width procedure
(Stein, C. (1945) "A two-sample test for a linear hypothesis whose power is independent of
the variance", Ann. Math. Statist. 16:243-258).

An arm first runs n0 seeds (the first stage); their standard deviation s0 alone sets its
total, N = max(n0, ceil((t * s0 / d)^2)) capped at the study's maximum, where t is the
t quantile on n0 - 1 degrees of freedom and d the wanted half-width; the remaining seeds run
in one second round, never more. Under normal seed noise the mean of all N seeds, given s0,
is normal around the true mean with variance sigma^2 / N, independent of s0, so

    mean +- t * s0 / sqrt(N)

covers the true mean with exactly the stated confidence for every N chosen from s0, the cap
included, and the mean is unbiased. Its half-width is at most d unless the cap binds.

Adding a seed while the interval of all seeds so far is wider than d (the rule before this
one) lets chance small spreads stop an arm: the final spread is biased low, its intervals
cover less than stated and its tests reject more often than their level.

Between two arms so chosen, the test takes each arm's variance from its first stage,
se^2 = s0a^2 / Na + s0b^2 / Nb, and judges (mean_a - mean_b) / se against the
Behrens-Fisher distribution of wa * Ta - wb * Tb, Ta and Tb independent t variables on the
first stages' degrees of freedom and wa^2 = (s0a^2 / Na) / se^2: conservative, where
Welch's test on all seeds, or on the first-stage variances with Welch's degrees of freedom,
rejects more often than its level (tests/test_calibration.py measures both).

Pure functions of the errors: the runner sizes arms with them, the report judges with them.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
from scipy import optimize
from scipy import stats as sps

from reports import stats

CONFIDENCE = 0.95
PROBABILITY = 0.9  # what the seed planners plan for: the target met this often
_NODES = 400  # quadrature nodes of the Behrens-Fisher distribution


class TwoStage(NamedTuple):
    """The design: `first` seeds per arm, then a total from their spread for a CI
    half-width of at most `target` points, at most `max_seeds` seeds per arm."""

    first: int
    target: float
    max_seeds: int

    def describe(self) -> str:
        """The design in words, as the store's `ablate.replication` tag holds it."""
        return (
            f"two-stage (Stein 1945): {self.first} seeds per arm first, then each arm's "
            f"total from their spread for a 95% CI half-width <= {self.target:g} points, "
            f"at most {self.max_seeds} seeds per arm"
        )


_TWO_STAGE = re.compile(
    r"two-stage \(Stein 1945\): (\d+) seeds per arm first.*half-width <= ([0-9.eE+-]+) "
    r"points, at most (\d+) seeds"
)
SEQUENTIAL = "adaptive: "  # how the rule before the two-stage one described itself


def parse(text: str) -> TwoStage | None:
    """The design an `ablate.replication` tag describes; None for fixed seeds and for the
    older sequential rule."""
    found = _TWO_STAGE.search(text or "")
    if not found:
        return None
    return TwoStage(int(found[1]), float(found[2]), int(found[3]))


def _quantile(confidence: float, df: int) -> float:
    return float(sps.t.ppf(0.5 + confidence / 2, df))


def totals(first_sd, first_n, target: float, confidence=CONFIDENCE):
    """Stein's total from a first stage of `first_n` seeds with standard deviation
    `first_sd`, without a cap: max(n0, ceil((t_{n0-1} * s0 / target)^2)). Vectorised."""
    ratio = sps.t.ppf(0.5 + confidence / 2, np.asarray(first_n) - 1) * first_sd / target
    # A hair of slack: (t * s / d)^2 that is an integer in exact arithmetic stays one.
    return np.maximum(first_n, np.ceil(ratio * ratio - 1e-9)).astype(int)


def needed_seeds(first_stage: Iterable[float], target: float, confidence=CONFIDENCE) -> int:
    """totals() of an arm's first-stage errors. Needs 2 finite first-stage values."""
    x = stats.finite(first_stage)
    if x.size < 2:
        raise ValueError(f"the first stage needs 2 finished seeds to size an arm, not {x.size}")
    if not (math.isfinite(target) and target > 0):
        raise ValueError(f"the target must be a positive number of points, not {target}")
    return int(totals(float(x.std(ddof=1)), int(x.size), target, confidence))


def total_seeds(
    first_stage: Iterable[float], target: float, max_seeds: int, confidence=CONFIDENCE
) -> int:
    """Seeds an arm runs in all under the two-stage design: needed_seeds() capped at
    `max_seeds` (never below the first stage itself)."""
    x = stats.finite(first_stage)
    return max(int(x.size), min(max_seeds, needed_seeds(x, target, confidence)))


class Interval(NamedTuple):
    """The two-stage interval of an arm's mean: mean of all n seeds +- t_{n0-1} s0/sqrt(n)."""

    mean: float
    first_sd: float  # s0
    first_n: int  # n0
    n: int
    ci_low: float
    ci_high: float
    half_width: float


def interval(
    first_stage: Iterable[float], second_stage: Iterable[float], confidence=CONFIDENCE
) -> Interval:
    """The interval of an arm whose total was chosen from `first_stage`; NaN below two
    finished first-stage seeds (no spread to size or judge with)."""
    x, y = stats.finite(first_stage), stats.finite(second_stage)
    every = np.concatenate([x, y])
    mean = float(every.mean()) if every.size else math.nan
    if x.size < 2:
        return Interval(mean, math.nan, int(x.size), int(every.size), *[math.nan] * 3)
    s0 = float(x.std(ddof=1))
    half = float(half_widths(s0, x.size, every.size, confidence))
    return Interval(mean, s0, int(x.size), int(every.size), mean - half, mean + half, half)


def half_widths(first_sd, first_n, n, confidence=CONFIDENCE):
    """The two-stage interval's half-width t_{n0-1} s0 / sqrt(n). Vectorised."""
    return sps.t.ppf(0.5 + confidence / 2, np.asarray(first_n) - 1) * first_sd / np.sqrt(n)


def behrens_fisher_sf(x, w_a, df_a, df_b):
    """P(|w_a Ta - w_b Tb| >= x), Ta ~ t(df_a), Tb ~ t(df_b) independent, w_a^2 + w_b^2 = 1:
    the two-sided p-value of a statistic x. Vectorised over x and w_a; quadrature over the
    quantiles of the arm with the smaller weight."""
    x = np.abs(np.asarray(x, dtype=float))
    w_a = np.clip(np.asarray(w_a, dtype=float), 0.0, 1.0)
    w_b = np.sqrt(np.clip(1.0 - w_a**2, 0.0, 1.0))
    big_a = w_a >= w_b
    w_big, w_small = np.where(big_a, w_a, w_b), np.where(big_a, w_b, w_a)
    df_big, df_small = np.where(big_a, df_a, df_b), np.where(big_a, df_b, df_a)
    u = (np.arange(_NODES) + 0.5) / _NODES
    small = sps.t.ppf(u, np.expand_dims(df_small, -1))  # quantiles of the lighter-weighted t
    z = (np.expand_dims(x, -1) + np.expand_dims(w_small, -1) * small) / np.expand_dims(w_big, -1)
    one_side = sps.t.sf(z, np.expand_dims(df_big, -1)).mean(axis=-1)
    return np.clip(2.0 * one_side, 0.0, 1.0)


def test(
    a_first: Iterable[float],
    a_second: Iterable[float],
    b_first: Iterable[float],
    b_second: Iterable[float],
) -> stats.Welch:
    """Arm a against arm b when both chose their seeds by the two-stage design: the
    difference of the means of all seeds, its standard error from the first stages'
    variances, and the Behrens-Fisher p-value (df: Welch-Satterthwaite's on the first
    stages' degrees of freedom, for information). NaN below two first-stage seeds a side."""
    a, b = interval(a_first, a_second), interval(b_first, b_second)
    if a.first_n < 2 or b.first_n < 2:
        return stats.Welch(math.nan, math.nan, math.nan, math.nan, math.nan)
    if a.first_sd == 0 and b.first_sd == 0:
        return stats.Welch(a.mean - b.mean, 0.0, math.nan, math.nan, math.nan)
    found = compare(a.mean - b.mean, a.first_sd, a.n, a.first_n, b.first_sd, b.n, b.first_n)
    return stats.Welch(*(float(v) for v in found))


def compare(diff, s_a, n_a, k_a, s_b, n_b, k_b) -> stats.Welch:
    """The two-stage test from its numbers: the difference of the means of n_a and n_b
    seeds, the first stages' standard deviations s and sizes k. Vectorised."""
    va, vb = s_a * s_a / n_a, s_b * s_b / n_b
    se = np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va * va / (k_a - 1) + vb * vb / (k_b - 1))
    t = diff / se
    p = behrens_fisher_sf(t, np.sqrt(va) / se, np.asarray(k_a) - 1, np.asarray(k_b) - 1)
    return stats.Welch(diff, se, t, df, p)


@functools.lru_cache(maxsize=256)
def _critical(alpha: float, k_a: int, k_b: int) -> tuple[np.ndarray, np.ndarray]:
    """The Behrens-Fisher critical values on a grid of the angle arctan(w_b / w_a)."""
    angles = np.linspace(0.0, math.pi / 2, 33)
    values = []
    for angle in angles:
        w_a = math.cos(angle)

        def excess(c: float, w_a: float = w_a) -> float:
            return float(behrens_fisher_sf(c, w_a, k_a - 1, k_b - 1)) - alpha

        high = 4.0
        while excess(high) > 0:
            high *= 2
        values.append(optimize.brentq(excess, 0.1, high, xtol=1e-6))
    return angles, np.array(values)


def power(
    diff: float, sd_a: float, sd_b: float, n_a: int, n_b: int, k_a: int, k_b: int,
    alpha: float = stats.ALPHA,
) -> float:  # fmt: skip
    """The probability that the two-stage test (test()) rejects at level `alpha` when arms
    of n_a and n_b seeds, first stages of k_a and k_b, differ by `diff` and seeds spread
    with sd_a and sd_b under normal noise; n held at the totals the arms reached.
    Integrated over the first stages' variance estimates, as stats.welch_power is."""
    va = sd_a * sd_a / n_a * stats.variance_nodes(k_a - 1)[:, None]
    vb = sd_b * sd_b / n_b * stats.variance_nodes(k_b - 1)[None, :]
    se = np.sqrt(va + vb)
    angles, values = _critical(alpha, k_a, k_b)
    crit = np.interp(np.arctan2(np.sqrt(vb), np.sqrt(va)), angles, values) * se
    spread = math.sqrt(sd_a * sd_a / n_a + sd_b * sd_b / n_b)
    reject = sps.norm.sf((crit - diff) / spread) + sps.norm.cdf((-crit - diff) / spread)
    return float(reject.mean())


def mde(
    n_a: int, n_b: int, k_a: int, k_b: int, sd: float, alpha: float = stats.ALPHA,
    target_power: float = stats.POWER, tests: int = 1,
) -> float:  # fmt: skip
    """stats.mde() for two-stage arms: the true difference the two-stage test detects with
    probability `target_power` at level alpha / tests (Holm over `tests` comparisons,
    bounded by Bonferroni), arms of n seeds with first stages of k. NaN below 2 first-stage
    seeds a side."""
    if min(k_a, k_b) < 2 or not math.isfinite(sd) or sd <= 0:
        return math.nan
    return _mde(n_a, n_b, k_a, k_b, alpha / max(1, tests), target_power) * sd


@functools.lru_cache(maxsize=1024)
def _mde(n_a: int, n_b: int, k_a: int, k_b: int, alpha: float, target: float) -> float:
    def short(d: float) -> float:
        return power(d, 1.0, 1.0, n_a, n_b, k_a, k_b, alpha) - target

    high = 1.0
    while short(high) < 0:
        high *= 2
    return float(optimize.brentq(short, 0.0, high, xtol=1e-6))


def planned_seeds(
    sd: float, first: int, target: float, max_seeds: int | None = None,
    probability: float = PROBABILITY, confidence: float = CONFIDENCE,
) -> int:  # fmt: skip
    """The seeds an arm will run under the two-stage design with probability at least
    `probability`, when seeds spread with standard deviation `sd`: the `probability`
    quantile of N = max(n0, ceil((t s0 / d)^2)), s0^2 ~ sd^2 chi2(n0 - 1) / (n0 - 1);
    capped at `max_seeds` when given (the cap then holds the interval's width instead)."""
    if first < 2:
        raise ValueError(f"the first stage needs at least 2 seeds, not {first}")
    if not (math.isfinite(sd) and sd >= 0 and math.isfinite(target) and target > 0):
        raise ValueError(f"need a spread >= 0 and a positive target, not {sd} and {target}")
    s2 = sd * sd * float(sps.chi2.ppf(probability, first - 1)) / (first - 1)
    n = max(first, math.ceil(_quantile(confidence, first - 1) ** 2 * s2 / target**2 - 1e-9))
    return min(n, max_seeds) if max_seeds is not None else n


# The report: which design chose each arm's seeds, in words.

SEQUENTIAL_CAVEAT = (
    "the sequential rule of earlier ablate versions (a seed added while an arm's interval "
    "was wider than the target): its intervals cover less than stated and its tests reject "
    "more often than their level (about 91% and 8 to 11% at nominal 95% and 5% in "
    "simulation); run the study with this version's two-stage design for exact ones"
)


def design_text(replication: str, runs) -> str:
    """The design that chose the seeds (the parent's `ablate.replication`) and what the
    report's intervals and tests assume of it; then, from the trial runs' creation times
    (`runs`: the report's runs frame), seeds added by a later run of the study."""
    design = parse(replication)
    if design is not None:
        text = (
            f"{design.describe()}. Each arm's 95% CI is its mean ± t(n0 − 1) s0 / √n, s0 "
            "the spread of its first-stage seeds; arms are compared by the Behrens-Fisher "
            "test on those spreads; both keep their stated error rates under normal seed "
            "noise (docs/tracking.md)"
        )
    elif replication.startswith(SEQUENTIAL):
        text = f"{replication}: {SEQUENTIAL_CAVEAT}"
    else:
        text = replication or "not recorded"
    late = added_later(runs, design.first if design else None)
    return f"{text}. {late}" if late else text


def added_later(runs, first: int | None = None) -> str:
    """A sentence naming the seeds whose first run was created by a later run of the study,
    when a trial created before them could already have finished (the earliest creation
    plus the shortest training time); "" when none. The two-stage design's second-stage
    seeds (beyond the first `first`) come later by design and are not named."""
    import pandas as pd

    if runs is None or runs.empty or "seed" not in runs.columns:
        return ""
    trials = runs[(runs["role"] == "trial") & runs["seed"].notna()]
    created = pd.to_numeric(trials["start_time"], errors="coerce").groupby(trials["seed"]).min()
    wall = pd.to_numeric(trials.get("wall_time_s", pd.Series(dtype=float)), errors="coerce")
    if created.empty or not (wall > 0).any():
        return ""
    ready = created.min() + 1000.0 * float(wall[wall > 0].min())
    ordered = sorted(created.index, key=lambda s: (created[s], str(s)))
    late = [s for s in ordered if created[s] > ready]
    if first is not None:
        late = [s for s in late if ordered.index(s) < first]
    if not late:
        return ""
    seeds = ", ".join(str(s) for s in sorted(late, key=str))
    return (
        f"Seed{'s' * (len(late) > 1)} {seeds} {'were' if len(late) > 1 else 'was'} added by a "
        "later run of the study, after trials of the first seeds could have finished: if "
        "results were looked at before adding them, the number of seeds depended on the "
        "data, which the intervals and tests here do not allow for (they assume the seeds "
        "were fixed in advance, or chosen by the two-stage design)."
    )
