"""Sentences the report states about the degradation problem (docs/paper.md §1, Fig. 6)."""

from __future__ import annotations

import math

import pandas as pd

from reports import stats


def is_plain(shortcut: object) -> bool:
    return str(shortcut) == "none"


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


def _other_factors(arm_row: pd.Series, factors: list[str]) -> tuple:
    return tuple(str(arm_row[f]) for f in factors if f not in ("depth", "shortcut"))


def degradation_sentence(arms: pd.DataFrame, trials: pd.DataFrame, factors: list[str]) -> str:
    """Does a deeper plain net end with a higher training error than a shallower one
    (the degradation problem)? Compares final training error over finished seeds, with
    Welch's p (uncorrected: it is one descriptive contrast, not the study's family)."""
    if arms.empty or "depth" not in arms.columns or "shortcut" not in arms.columns:
        return "Degradation cannot be judged: the arms do not record depth and shortcut."
    plain = arms[arms["shortcut"].map(is_plain) & arms["train_error_pct_mean"].notna()]
    if plain["depth"].nunique() < 2:
        return (
            "Degradation cannot be judged: it needs finished plain nets (shortcut none) at "
            "two or more depths."
        )
    finished = trials[trials["status"] == "finished"]
    worst: tuple[float, pd.Series, pd.Series] | None = None
    for _, group in plain.groupby(plain.apply(lambda r: _other_factors(r, factors), axis=1)):
        group = group.sort_values("depth")
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                shallow, deep = group.iloc[i], group.iloc[j]
                if deep["depth"] == shallow["depth"]:
                    continue
                gap = deep["train_error_pct_mean"] - shallow["train_error_pct_mean"]
                if gap > 0 and (worst is None or gap > worst[0]):
                    worst = (gap, shallow, deep)
    if worst is None:
        return (
            "No degradation: no deeper plain net ends with a higher training error than a "
            "shallower one."
        )
    gap, shallow, deep = worst

    def errors(arm: str) -> pd.Series:
        return 100 * pd.to_numeric(
            finished.loc[finished["arm"] == arm, "train/error"], errors="coerce"
        )

    test = stats.welch(errors(deep["arm"]), errors(shallow["arm"]))
    p_text = f"Welch {stats.format_p(test.p)}" if math.isfinite(test.p) else "too few seeds to test"
    return (
        f"Degradation appears: plain-{deep['depth']} ends with {deep['train_error_pct_mean']:.2f}% "
        f"training error against {shallow['train_error_pct_mean']:.2f}% for plain-"
        f"{shallow['depth']} ({gap:.2f} points higher; {p_text}; {deep['finished']} and "
        f"{shallow['finished']} finished seeds). A deeper plain net optimizes worse."
    )
