"""Factorial effects: a linear model of the seed-level final test errors (in points) on the
study's scientific factors, with main effects and two-factor interactions.

Fitted with statsmodels OLS; each term is tested with anova_lm's Type II sums of squares,
which stay meaningful when cells hold unequal numbers of seeds (a trial diverged or
failed): a main effect is tested after every term that does not contain it. The size of a
term is a contrast with a 95% t interval, estimated in that same Type II model, so the
interval and the p-value of a two-level term agree (t squared is the F statistic):
- a two-level factor: level 2 minus level 1 (levels in the paper's order);
- a factor with more levels: the F test over all levels, and the contrast between its
  extreme levels;
- an interaction: the difference of differences between the extreme levels of both
  factors (how much the effect of one changes from the lowest to the highest level of
  the other).
Three-factor and higher interactions are not modelled: ablation studies rarely have the
seeds to estimate them. Over 300 lines: the model, its contrasts and the handling of
unbalanced designs belong together (the words about them are in effect_words.py).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from reports.effect_words import (
    SHORTCUT_DEPTH,
    interaction_caveat,
    interaction_sentence,
    main_sentence,
    reduced_suffix,
    shortcut_depth_sentence,
)
from reports.stats import ALPHA
from reports.tables import level_key

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Effect:
    term: str  # "shortcut" or "depth × shortcut"
    factors: tuple[str, ...]
    levels: tuple[int, ...]  # number of levels of each factor
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
    """The models here are a few hundred rows by tens of columns, far below the size where
    BLAS threads help; on a busy 2-core machine OpenBLAS's threads made one 500-row fit
    take 1 s instead of 25 ms. threadpoolctl (installed with scikit-learn) caps them; it is
    optional."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def factorial_effects(
    trials: pd.DataFrame, factors: list[str], evidence: bool = True, paper: bool = False
) -> Effects:
    """The effects of `factors` on the final test error of the finished trials of `trials`
    (select_trials() rows). With `evidence` False (a reduced run) the sentences say that
    what they describe is no evidence; with `paper` (the built-in ResNets) the paper's
    shortcut × depth finding is judged too."""
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
    pairs = _estimable_pairs(design, trials, out)
    fitted = _fit(design, pairs, out)
    if fitted is None:
        return out
    full, anova, pairs = fitted
    scale, df = float(full.scale), int(full.df_resid)
    t_crit = float(sps.t.ppf(0.5 + CONFIDENCE / 2, df))
    for factor in design.factors:
        others = [p for p in pairs if factor not in p]
        model = full if len(others) == len(pairs) else _ols(design, others, [factor])
        name = _coef(design, factor, design.levels[factor][-1])
        est, se = _estimate(model, [name], scale)
        ci = _interval(est, se, t_crit)
        row = anova.loc[design.codes[factor]]
        contrast, sentence = _main(design, factor, est, ci, row, df)
        out.rows.append(_effect(factor, (factor,), design, contrast, est, ci, row, df, sentence))
    for pair in pairs:
        a, b = pair
        name = _coef(design, a, design.levels[a][-1]) + ":" + _coef(design, b, design.levels[b][-1])
        est, se = _estimate(full, [name], scale)
        ci = _interval(est, se, t_crit)
        row = anova.loc[f"{design.codes[a]}:{design.codes[b]}"]
        contrast, sentence = _interaction(design, pair, est, ci, row)
        out.rows.append(_effect(f"{a} × {b}", pair, design, contrast, est, ci, row, df, sentence))
    _add_caveats(out)
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
    if len(present) < 2 or trials.empty or "test/error" not in trials.columns:
        out.absent = (
            "Factorial effects need two or more scientific factors; this study has "
            f"{len(present) or 'no'} ({', '.join(present) or 'none recorded'}). The comparison "
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


def _cell_label(design: _Design, factors: tuple[str, ...], key: tuple[str, ...]) -> str:
    return " ".join(
        f"{f}={design.levels[f][int(k[1:])]}" for f, k in zip(factors, key, strict=True)
    )


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
        cells = design.data.groupby([design.codes[a], design.codes[b]]).size()
        wanted = list(itertools.product(
            [f"L{i:02d}" for i in range(len(design.levels[a]))],
            [f"L{i:02d}" for i in range(len(design.levels[b]))],
        ))  # fmt: skip
        missing = [k for k in wanted if k not in cells.index]
        if missing:
            names = "; ".join(_cell_label(design, (a, b), k) for k in missing)
            out.notes.append(
                f"The {a} × {b} interaction cannot be estimated: no finished seed in "
                f"{names}. It is left out of the model; the main effects are estimated "
                "without it."
            )
        else:
            pairs.append((a, b))
    return pairs


def _formula(design: _Design, pairs: list[tuple[str, str]], mains: list[str]) -> str:
    terms = [design.codes[f] for f in mains]
    terms += [f"{design.codes[a]}:{design.codes[b]}" for a, b in pairs]
    return "y ~ " + " + ".join(terms)


def _ols(design: _Design, pairs: list[tuple[str, str]], extra: list[str] | None = None):
    # Imported here: statsmodels takes about 2 s to import, which every `ablate`
    # command that touches reports/ would otherwise pay.
    import statsmodels.formula.api as smf

    mains = [f for f in design.factors if f not in (extra or [])] + (extra or [])
    return smf.ols(_formula(design, pairs, mains), design.data).fit()


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


def _code(design: _Design, factor: str, level: Any) -> str:
    """The coded level (L00 is the first, the reference of treatment coding)."""
    return f"L{[str(v) for v in design.levels[factor]].index(str(level)):02d}"


def _coef(design: _Design, factor: str, level: Any) -> str:
    """The patsy name of a level's treatment-coded coefficient."""
    return f"{design.codes[factor]}[T.{_code(design, factor, level)}]"


def _estimate(model, names: list[str], scale: float) -> tuple[float, float]:
    """A coefficient of `model` and its standard error with the full model's residual
    variance `scale` (the variance anova_lm's F tests divide by)."""
    params = model.params
    cov = model.normalized_cov_params
    name = next((n for n in _spellings(names[0]) if n in params.index), None)
    if name is None:
        return math.nan, math.nan
    return float(params[name]), math.sqrt(float(cov.loc[name, name]) * scale)


def _spellings(name: str) -> list[str]:
    parts = name.split(":")
    return [":".join(p) for p in itertools.permutations(parts)]


def _interval(est: float, se: float, t_crit: float) -> tuple[float, float]:
    return est - t_crit * se, est + t_crit * se


def _effect(
    term: str,
    factors: tuple[str, ...],
    design: _Design,
    contrast: str,
    est: float,
    ci: tuple[float, float],
    row: pd.Series,
    df: int,
    sentence: str,
) -> Effect:
    return Effect(
        term=term,
        factors=factors,
        levels=tuple(len(design.levels[f]) for f in factors),
        contrast=contrast,
        estimate=est,
        ci_low=ci[0],
        ci_high=ci[1],
        p=float(row["PR(>F)"]),
        f=float(row["F"]),
        df_num=int(row["df"]),
        df_den=df,
        sentence=sentence,
    )


def _main(
    design: _Design, factor: str, est: float, ci: tuple[float, float], row: pd.Series, df: int
) -> tuple[str, str]:
    """(contrast, sentence) of a main effect."""
    levels = design.levels[factor]
    others = [f for f in design.factors if f != factor]
    sentence = main_sentence(factor, levels, others, est, ci, float(row["PR(>F)"]))
    return f"{factor}={levels[-1]} − {factor}={levels[0]}", sentence


def _interaction(
    design: _Design, pair: tuple[str, str], est: float, ci: tuple[float, float], row: pd.Series
) -> tuple[str, str]:
    """(contrast, sentence) of a two-factor interaction."""
    a, b = pair
    levels = (design.levels[a], design.levels[b])
    contrast = (
        f"({a}={levels[0][-1]} − {a}={levels[0][0]}) at {b}={levels[1][-1]} − at {b}={levels[1][0]}"
    )
    return contrast, interaction_sentence(pair, levels, est, ci, float(row["PR(>F)"]))


def _shortcut_depth(out: Effects, trials: pd.DataFrame, factors: list[str]) -> str:
    """Does the benefit of shortcuts grow with depth, as the paper finds? Read from the
    shortcut × depth interaction row (its contrast, CI and p) with the effect of shortcuts
    at the shallowest and the deepest depth from the cell means; plain nets (`none`) are
    the first level of `shortcut`."""
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

    def effect(depth: Any) -> float:
        return float(means[(levels[-1], depth)] - means[("none", depth)])

    ends = (depths[0], depths[-1])
    return shortcut_depth_sentence(
        levels[-1],
        ends,
        (effect(ends[0]), effect(ends[1])),
        row.estimate,
        (row.ci_low, row.ci_high),
        row.p,
    )
