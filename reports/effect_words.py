"""The sentences of the factorial effects (reports.effects): numbers in, plain words out.
Every number is a change in test error in points, later level minus earlier (negative:
lower error), the same sign as in the effects table."""

from __future__ import annotations

from typing import Any

from reports.stats import format_p


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


def main_sentence(
    factor: str,
    levels: list[Any],
    others: list[str],
    est: float,
    ci: tuple[float, float],
    p: float,
) -> str:
    """A main effect: level 2 minus level 1, or the F test and the extreme levels' contrast
    for a factor with more levels; averaged over the `others`."""
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


def interaction_sentence(
    pair: tuple[str, str],
    levels: tuple[list[Any], list[Any]],
    est: float,
    ci: tuple[float, float],
    p: float,
) -> str:
    """A two-factor interaction: how the effect of the first factor (its extreme levels)
    changes from the lowest to the highest level of the second."""
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


SHORTCUT_DEPTH = "The paper's finding, that the benefit of shortcuts grows with depth: "


def shortcut_depth_sentence(
    shortcut: str,
    depths: tuple[Any, Any],
    effects: tuple[float, float],
    change: float,
    ci: tuple[float, float],
    p: float,
) -> str:
    """Whether the data show shortcuts lowering the test error more at the deepest depth
    than at the shallowest: `effects` are shortcut minus none at each, `change` the
    shortcut × depth interaction (deep minus shallow; negative is a growing benefit). No
    reduced-run caveat here: the answer that states it says whether it is evidence."""
    numbers = (
        f"shortcut {shortcut} changes the test error by {signed(effects[0])} points against "
        f"none at depth {depths[0]} and by {signed(effects[1])} at depth {depths[1]}, an "
        f"interaction of {signed(change)} points ({ci_text(*ci)}, {format_p(p)})"
    )
    if ci[1] < 0:
        verdict = f"the data show it: {numbers}."
    elif ci[0] > 0:
        verdict = f"the data show the opposite, a benefit that shrinks with depth: {numbers}."
    else:
        verdict = (
            f"the data do not show it (nor its opposite): {numbers}, within what seed noise allows."
        )
    return SHORTCUT_DEPTH + verdict
