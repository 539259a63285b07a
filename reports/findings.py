"""Sentences the report states about the degradation problem (docs/paper.md §1, Fig. 6)."""

from __future__ import annotations

import math

import pandas as pd

from reports import stats
from reports.tables import is_plain


def degradation_applies(trials: pd.DataFrame) -> tuple[bool, str]:
    """Whether the degradation plots mean anything here, and if not, why they are absent."""
    depths = trials["depth"].dropna().unique() if "depth" in trials.columns else []
    kinds = (
        {is_plain(s) for s in trials["shortcut"].dropna()}
        if "shortcut" in trials.columns
        else set()
    )
    if len(depths) > 1 or len(kinds) == 2:
        return True, ""
    depth_text = f"a single depth ({depths[0]})" if len(depths) == 1 else "no recorded depth"
    kind_text = "only plain nets" if kinds == {True} else "only residual nets"
    return False, (
        f"The degradation plots are absent: this study has {depth_text} and {kind_text}, "
        "so there is no deeper-vs-shallower or plain-vs-residual comparison to draw."
    )


def degradation_sentence(arms: pd.DataFrame, trials: pd.DataFrame, factors: list[str]) -> str:
    """Does a deeper plain net end with a higher training error than a shallower one with
    the same other factors (the degradation problem)? The largest such gap in final
    training error over finished seeds, with Welch's p (uncorrected: it is one descriptive
    contrast, not the study's family)."""
    if arms.empty or "depth" not in arms.columns or "shortcut" not in arms.columns:
        return "Degradation cannot be judged: the arms do not record depth and shortcut."
    plain = arms[arms["shortcut"].map(is_plain) & arms["train_error_pct_mean"].notna()]
    if plain["depth"].nunique() < 2:
        return (
            "Degradation cannot be judged: it needs finished plain nets (shortcut none) at "
            "two or more depths."
        )
    others = [f for f in factors if f not in ("depth", "shortcut")]
    plain = plain.assign(_same=plain[others].astype(str).agg(" ".join, axis=1) if others else "")
    pairs = plain.merge(plain, on="_same", suffixes=("_shallow", "_deep"))
    pairs = pairs[pairs["depth_deep"] > pairs["depth_shallow"]]
    gaps = pairs["train_error_pct_mean_deep"] - pairs["train_error_pct_mean_shallow"]
    if pairs.empty or gaps.max() <= 0:
        return (
            "No degradation: no deeper plain net ends with a higher training error than a "
            "shallower one."
        )
    worst = pairs.loc[gaps.idxmax()]
    deep, shallow = (
        {k: worst[f"{k}_{end}"] for k in ("arm", "depth", "train_error_pct_mean", "finished")}
        for end in ("deep", "shallow")
    )
    finished = trials[trials["status"] == "finished"]
    deep_err, shallow_err = (
        100 * pd.to_numeric(finished.loc[finished["arm"] == a["arm"], "train/error"])
        for a in (deep, shallow)
    )
    test = stats.welch(deep_err, shallow_err)
    p_text = f"Welch {stats.format_p(test.p)}" if math.isfinite(test.p) else "too few seeds to test"
    return (
        f"Degradation appears: plain-{deep['depth']} ends with {deep['train_error_pct_mean']:.2f}% "
        f"training error against {shallow['train_error_pct_mean']:.2f}% for plain-"
        f"{shallow['depth']} ({gaps.max():.2f} points higher; {p_text}; {deep['finished']} and "
        f"{shallow['finished']} finished seeds). A deeper plain net optimizes worse."
    )
