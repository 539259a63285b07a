"""Factorial effects: a linear model (statsmodels OLS) of the seed-level final test errors,
in points, on the study's scientific factors, with main effects and two-factor
interactions, and the sentences that state them.

Each term is tested with anova_lm's Type II sums of squares, which stay meaningful when
cells hold unequal numbers of seeds (a trial diverged or failed). Its size is a contrast
with a 95% t interval in that same Type II model, so interval and p-value agree for a
two-level term: level 2 minus level 1 (levels in the paper's order); for more levels, the
extreme levels; for an interaction, the difference of differences between the extreme
levels of both factors. Higher interactions are not modelled: ablation studies rarely have
the seeds to estimate them. Every number is later level minus earlier (negative: lower
error), the sign of the effects table.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from reports.stats import ALPHA, format_p
from reports.tables import level_key

CONFIDENCE = 0.95
SHORTCUT_DEPTH = "The paper's finding, that the benefit of shortcuts grows with depth: "


@dataclass(frozen=True)
class Effect:
    term: str  # "shortcut" or "depth × shortcut"
    factors: tuple[str, ...]
    contrast: str  # what `estimate` is, in words
    estimate: float  # points
    ci_low: float
    ci_high: float
    p: float  # Type II F test of the whole term
    f: float
    df_num: int
    df_den: int
    sentence: str


@dataclass
class Effects:
    rows: list[Effect] = field(default_factory=list)
    # How the design was handled: balance, missing cells, terms left out.
    notes: list[str] = field(default_factory=list)
    # Why no model was fitted ("" when one was).
    absent: str = ""
    # The paper's finding (the benefit of shortcuts grows with depth), when a ResNet
    # study varies both; "" otherwise.
    shortcut_depth: str = ""
    evidence: bool = True  # False in a reduced run: the sentences are no evidence

    def frame(self) -> pd.DataFrame:
        columns = ["term", "contrast", "estimate_pct", "ci_low_pct", "ci_high_pct", "p", "F"]
        columns += ["df_num", "df_den", "sentence"]
        return pd.DataFrame(
            [
                [e.term, e.contrast, e.estimate, e.ci_low, e.ci_high, e.p, e.f]
                + [e.df_num, e.df_den, e.sentence + reduced_suffix(self.evidence)]
                for e in self.rows
            ],
            columns=columns,
        )


@dataclass(frozen=True)
class _Design:
    data: pd.DataFrame  # y (points) and one coded column per factor: f0, f1, ...
    factors: list[str]
    codes: dict[str, str]  # factor -> column
    levels: dict[str, list[Any]]  # factor -> levels in order; coded L00, L01, ...


def _one_blas_thread() -> contextlib.AbstractContextManager:
    """BLAS threads do not help models of a few hundred rows: on a busy 2-core machine they
    made one 500-row fit take 1 s instead of 25 ms. threadpoolctl, if installed, caps them."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def factorial_effects(
    trials: pd.DataFrame, factors: list[str], evidence: bool = True, paper: bool = False
) -> Effects:
    """The effects of `factors` on the final test error of the finished select_trials()
    rows. With `evidence` False (a reduced run) the sentences say they are no evidence;
    with `paper` (the built-in ResNets) the paper's shortcut × depth finding is judged."""
    with _one_blas_thread():
        out = _effects(trials, factors)
    out.evidence = evidence
    if paper and not out.absent:
        out.shortcut_depth = _shortcut_depth(out, trials, factors)
    return out


def _effects(trials: pd.DataFrame, factors: list[str]) -> Effects:
    out = Effects()
    design = _design(trials, factors, out)
    if design is None:
        return out
    fitted = _fit(design, _estimable_pairs(design, trials, out), out)
    if fitted is None:
        return out
    full, anova, pairs = fitted
    t_crit = float(sps.t.ppf(0.5 + CONFIDENCE / 2, full.df_resid))

    def effect(term: tuple[str, ...], model, contrast: str, words: Callable) -> Effect:
        # The coefficient of the extreme levels, its SE with the full model's residual
        # variance (the variance anova_lm's F tests divide by).
        name = ":".join(f"{design.codes[f]}[T.L{len(design.levels[f]) - 1:02d}]" for f in term)
        est = float(model.params[name])
        se = math.sqrt(float(model.normalized_cov_params.loc[name, name]) * full.scale)
        row = anova.loc[":".join(design.codes[f] for f in term)]
        e = Effect(
            " × ".join(term), term, contrast, est, est - t_crit * se, est + t_crit * se,
            float(row["PR(>F)"]), float(row["F"]), int(row["df"]), int(full.df_resid), "",
        )  # fmt: skip
        return replace(e, sentence=words(e))

    for factor in design.factors:
        levels, others = design.levels[factor], [f for f in design.factors if f != factor]
        # Type II: the main effect in the model without the interactions that contain it.
        kept = [p for p in pairs if factor not in p]
        model = full if len(kept) == len(pairs) else _ols(design, kept, [factor])
        contrast = f"{factor}={levels[-1]} − {factor}={levels[0]}"
        words = partial(main_sentence, factor, levels, others)
        out.rows.append(effect((factor,), model, contrast, words))
    for a, b in pairs:
        la, lb = design.levels[a], design.levels[b]
        contrast = f"({a}={la[-1]} − {a}={la[0]}) at {b}={lb[-1]} − at {b}={lb[0]}"
        words = partial(interaction_sentence, (a, b), (la, lb))
        e = effect((a, b), full, contrast, words)
        cell = _cell_interaction(design, e) if len(design.factors) == 2 else None
        out.rows.append(replace(cell, sentence=words(cell)) if cell else e)
    _add_caveats(out)
    return out


def _cell_interaction(design: _Design, e: Effect) -> Effect | None:
    """With two factors the model holds every cell's mean, and the interaction is the
    contrast of the four extreme cells' means. Its interval (and, for two levels each, its
    test) then takes each cell's own variance, with Welch-Satterthwaite's degrees of
    freedom: the pooled residual variance of the model covered 93% instead of 95% when
    cells spread unequally (0.5 and 1.0 points, 3 seeds a cell; tests/test_calibration.py).
    None when a cell has fewer than two seeds."""
    a, b = (design.codes[f] for f in e.factors)
    la, lb = (f"L{len(design.levels[f]) - 1:02d}" for f in e.factors)
    cells = design.data.groupby([a, b])["y"]
    means, variances, counts = cells.mean(), cells.var(ddof=1), cells.size()
    signs = {(la, lb): 1, (la, "L00"): -1, ("L00", lb): -1, ("L00", "L00"): 1}
    if any(counts.get(cell, 0) < 2 for cell in signs):
        return None
    estimate = sum(sign * means[cell] for cell, sign in signs.items())
    parts = [variances[cell] / counts[cell] for cell in signs]
    se = math.sqrt(sum(parts))
    if se == 0:
        return None
    df = se**4 / sum(v * v / (counts[cell] - 1) for v, cell in zip(parts, signs, strict=True))
    half = float(sps.t.ppf(0.5 + CONFIDENCE / 2, df)) * se
    out = replace(e, estimate=float(estimate), ci_low=estimate - half, ci_high=estimate + half)
    if all(len(design.levels[f]) == 2 for f in e.factors):
        t = estimate / se
        out = replace(out, p=float(2 * sps.t.sf(abs(t), df)), f=float(t * t), df_den=int(df))
    return out


def _add_caveats(out: Effects) -> None:
    """A main effect is an average over the other factors; where its factor takes part in
    a significant interaction that average hides how the effect differs, so it says so."""
    significant = [e for e in out.rows if len(e.factors) == 2 and e.p < ALPHA]
    for i, main in enumerate(out.rows):
        if len(main.factors) != 1:
            continue
        factor = main.factors[0]
        partners = [
            (e.factors[1 - e.factors.index(factor)], e.p)
            for e in significant
            if factor in e.factors
        ]
        if partners:
            out.rows[i] = replace(
                main, sentence=main.sentence + interaction_caveat(factor, partners)
            )


def _design(trials: pd.DataFrame, factors: list[str], out: Effects) -> _Design | None:
    present = [f for f in factors if f in trials.columns]
    errors = "test/error" in trials.columns and (trials["status"] == "finished").any()
    if len(factors) >= 2 and not errors:
        # Not the factors' fault: a study whose every trial failed has no error to model.
        out.absent = "No factorial model: no trial has finished, so no test error to model."
        return None
    if len(present) < 2:
        named = present or factors  # no trial yet: the study's own factors
        out.absent = (
            "Factorial effects need two or more scientific factors; this study has "
            f"{len(named) or 'no'} ({', '.join(named) or 'none recorded'}). The comparison "
            "table tests each arm against its reference."
        )
        return None
    done = trials[trials["status"] == "finished"].copy()
    done["y"] = 100.0 * pd.to_numeric(done["test/error"], errors="coerce")
    done = done[np.isfinite(done["y"])]
    used, levels = [], {}
    for factor in present:
        seen = sorted(done[factor].dropna().unique(), key=level_key)
        if len(seen) >= 2:
            used.append(factor)
            levels[factor] = seen
        else:
            planned = sorted(trials[factor].dropna().unique(), key=level_key)
            out.notes.append(
                f"{factor} is left out of the model: its finished seeds cover "
                f"{len(seen)} of its levels ({', '.join(map(str, planned))})."
            )
    if len(used) < 2:
        out.absent = (
            "No factorial model: fewer than two factors have finished seeds at two or more levels."
        )
        return None
    codes = {f: f"f{i}" for i, f in enumerate(used)}
    data = pd.DataFrame({"y": done["y"].to_numpy(dtype=float)})
    for factor in used:
        index = {str(v): i for i, v in enumerate(levels[factor])}
        data[codes[factor]] = [f"L{index[str(v)]:02d}" for v in done[factor]]
    return _Design(data, used, codes, levels)


def _estimable_pairs(design: _Design, trials: pd.DataFrame, out: Effects) -> list[tuple[str, str]]:
    """Two-factor interactions whose every cell holds a finished seed; the others cannot
    be estimated and are said so. Also states how unbalanced the cells are."""
    codes = [design.codes[f] for f in design.factors]
    counts = design.data.groupby(codes).size()
    full = math.prod(len(design.levels[f]) for f in design.factors)
    lost = trials[trials["status"] != "finished"]["status"].value_counts()
    lost_text = ", ".join(f"{n} {s}" for s, n in lost.items())
    if len(counts) < full or counts.nunique() > 1:
        out.notes.append(
            f"The design is unbalanced: {len(counts)} of {full} cells hold finished seeds, "
            f"{counts.min()} to {counts.max()} each"
            + (f" (trials not finished: {lost_text})" if lost_text else "")
            + ". Sums of squares are Type II: each main effect is tested after the other "
            "factors (and the interactions not involving it), so unequal cells do not "
            "confound it with them."
        )
    pairs = []
    for a, b in itertools.combinations(design.factors, 2):
        seen = set(zip(design.data[design.codes[a]], design.data[design.codes[b]], strict=True))
        missing = [
            f"{a}={x} {b}={y}"
            for i, x in enumerate(design.levels[a])
            for j, y in enumerate(design.levels[b])
            if (f"L{i:02d}", f"L{j:02d}") not in seen
        ]
        if not missing:
            pairs.append((a, b))
            continue
        out.notes.append(
            f"The {a} × {b} interaction cannot be estimated: no finished seed in "
            f"{'; '.join(missing)}. It is left out of the model; the main effects are "
            "estimated without it."
        )
    return pairs


def _ols(design: _Design, pairs: list[tuple[str, str]], last: list[str] | None = None):
    """OLS of y on the main effects (those in `last` at the end) and the `pairs`."""
    # Imported here: statsmodels takes about 2 s to import, which every `ablate`
    # command that touches reports/ would otherwise pay.
    import statsmodels.formula.api as smf

    mains = [f for f in design.factors if f not in (last or [])] + (last or [])
    terms = [design.codes[f] for f in mains] + [
        f"{design.codes[a]}:{design.codes[b]}" for a, b in pairs
    ]
    return smf.ols("y ~ " + " + ".join(terms), design.data).fit()


def _fit(design: _Design, pairs: list[tuple[str, str]], out: Effects):
    from statsmodels.stats.anova import anova_lm

    full = _ols(design, pairs)
    if full.df_resid < 1 and pairs:
        out.notes.append(
            "The interactions are left out: with them the model has no residual degrees of "
            "freedom (one finished seed per cell)."
        )
        pairs = []
        full = _ols(design, pairs)
    if full.df_resid < 1:
        out.absent = "No factorial model: too few finished seeds to estimate the seed spread."
        return None
    if np.linalg.matrix_rank(full.model.exog) < full.model.exog.shape[1]:
        out.absent = "No factorial model: the finished cells do not separate the factors."
        return None
    return full, anova_lm(full, typ=2), pairs


def _shortcut_depth(out: Effects, trials: pd.DataFrame, factors: list[str]) -> str:
    """Does the benefit of shortcuts (against `none`) grow with depth, as the paper finds?
    From the shortcut × depth interaction (negative: a growing benefit) and the cell means
    at the shallowest and deepest depth. The answer that states it says if it is evidence."""
    if not {"shortcut", "depth"} <= set(factors):
        return ""
    row = next((e for e in out.rows if set(e.factors) == {"shortcut", "depth"}), None)
    done = trials[trials["status"] == "finished"]
    levels = sorted(done["shortcut"].dropna().unique(), key=level_key)
    if not levels or levels[0] != "none":
        return ""
    if row is None:
        return (
            SHORTCUT_DEPTH
            + "cannot be judged here: the shortcut × depth interaction is not estimable."
        )
    depths = sorted(done["depth"].dropna().unique(), key=level_key)
    means = (
        (100 * pd.to_numeric(done["test/error"])).groupby([done["shortcut"], done["depth"]]).mean()
    )
    shallow, deep = depths[0], depths[-1]
    low, high = (float(means[(levels[-1], d)] - means[("none", d)]) for d in (shallow, deep))
    numbers = (
        f"shortcut {levels[-1]} changes the test error by {signed(low)} points against "
        f"none at depth {shallow} and by {signed(high)} at depth {deep}, an "
        f"interaction of {signed(row.estimate)} points ({ci_text(row.ci_low, row.ci_high)}, "
        f"{format_p(row.p)})"
    )
    if row.ci_high < 0:
        verdict = f"the data show it: {numbers}."
    elif row.ci_low > 0:
        verdict = f"the data show the opposite, a benefit that shrinks with depth: {numbers}."
    else:
        verdict = (
            f"the data do not show it (nor its opposite): {numbers}, within what seed noise allows."
        )
    return SHORTCUT_DEPTH + verdict


def signed(value: float) -> str:
    """Signed, two decimals; a value that rounds to zero is +0.00, never -0.00."""
    text = f"{value:+.2f}"
    return "+0.00" if text == "-0.00" else text


def ci_text(low: float, high: float) -> str:
    return f"95% CI {signed(low)} to {signed(high)}"


def reduced_suffix(evidence: bool) -> str:
    return "" if evidence else " In this reduced run that is no evidence for the study's question."


def _clear(ci: tuple[float, float]) -> bool:
    return ci[0] > 0 or ci[1] < 0


def main_sentence(factor: str, levels: list[Any], others: list[str], e: Effect) -> str:
    """A main effect: level 2 minus level 1, or the F test and the extreme levels' contrast
    for a factor with more levels; averaged over the `others`."""
    est, ci, p = e.estimate, (e.ci_low, e.ci_high), e.p
    low, high = levels[0], levels[-1]
    over = ", ".join(others)
    size = f"{signed(est)} points ({ci_text(*ci)}), {format_p(p)}"
    if len(levels) > 2:
        return (
            f"{factor} has {len(levels)} levels; the F test over all of them gives "
            f"{format_p(p)}. From {low} to {high} the test error changes by {signed(est)} points "
            f"({ci_text(*ci)}), on average over {over}."
        )
    if _clear(ci):
        verb = "raises" if est > 0 else "lowers"
        return (
            f"{factor}={high} {verb} the test error by {abs(est):.2f} points against "
            f"{factor}={low}, on average over {over}: {size}."
        )
    return (
        f"No clear effect of {factor} ({high} − {low} = {size}): the data allow "
        f"anything from {signed(ci[0])} to {signed(ci[1])} points."
    )


def interaction_sentence(pair: tuple[str, str], levels: tuple[list, list], e: Effect) -> str:
    """A two-factor interaction: how the effect of the first factor (its extreme levels)
    changes from the lowest to the highest level of the second."""
    est, ci, p = e.estimate, (e.ci_low, e.ci_high), e.p
    (a, b), (a_levels, b_levels) = pair, levels
    change = (
        f"the effect of {a} ({a_levels[-1]} − {a_levels[0]}) changes by {signed(est)} points "
        f"from {b}={b_levels[0]} to {b}={b_levels[-1]} ({ci_text(*ci)})"
    )
    if len(a_levels) > 2 or len(b_levels) > 2:
        return (
            f"{a} × {b}: the F test over all level combinations gives {format_p(p)}; "
            f"between the extreme levels, {change}."
        )
    if _clear(ci):
        return f"{a} × {b}: the effect of {a} depends on {b}: {change}, {format_p(p)}."
    return (
        f"{a} × {b}: no clear interaction: {change}, {format_p(p)}; the data do not "
        f"show the effect of {a} changing with {b}."
    )


def interaction_caveat(factor: str, partners: list[tuple[str, float]]) -> str:
    """Said after a main effect whose factor takes part in significant interactions."""
    which = " and ".join(f"{other} ({format_p(p)})" for other, p in partners)
    return f" But {factor} interacts with {which}: read the per-arm numbers, not this average."
