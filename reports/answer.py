"""The study's answer, first on the page: the findings the report computes, in a few
sentences with their numbers, said to be evidence or not, with the sign convention every
effect on the page follows."""

from __future__ import annotations

from reports.comparison import target_text
from reports.findings import degradation_applies, degradation_sentence
from reports.html import esc
from reports.stats import ALPHA
from reports.study import Analysis
from reports.tables import plural

# Sentences about effects, comparisons or arms off target in the answer; the rest are in
# their sections further down.
MAX_ITEMS = 4
SIGN_CONVENTION = (
    "Every effect on this page is a change in test error in points, the later level minus "
    "the earlier: negative means lower error (better), positive higher."
)


def answer(a: Analysis) -> str:
    items = findings(a)
    head = _basis(a)
    cls = "answer" if a.evidence else "answer answer-reduced"
    body = "".join(
        f'<li id="{ident}">{esc(text)}</li>' if ident else f"<li>{esc(text)}</li>"
        for ident, text in items
    )
    body += _target(a)
    sign = f'<p class="muted" id="sign-convention">{SIGN_CONVENTION}</p>' if a.effects.rows else ""
    return (
        f'<section class="{cls}" id="answer"><h2>Answer</h2><p class="basis">{esc(head)}</p>'
        f"<ul>{body}</ul>{sign}</section>"
    )


def _basis(a: Analysis) -> str:
    """What the sentences rest on."""
    counts = a.counts
    if counts.finished == 0:
        return "No trial has finished: there is no answer yet."
    basis = f"From {plural(counts.finished, 'finished trial')}"
    if counts.partial:
        basis += " (the study is not complete; this may change)"
    if not a.evidence:
        return basis + ", a reduced run: what it shows is no evidence for the study's question."
    return basis + "; tests at α = 0.05:"


def findings(a: Analysis) -> list[tuple[str, str]]:
    """(id, sentence) of the answer, most telling first: the paper's findings where they
    apply (each said here only), then the clear effects or comparisons, then precision."""
    if a.counts.finished == 0:
        return []
    items = []
    if a.effects.shortcut_depth:
        items.append(("shortcut-depth-finding", a.effects.shortcut_depth))
    if a.info.resnet and degradation_applies(a.trials)[0]:
        sentence = degradation_sentence(a.arms, a.trials, a.factors)
        if not sentence.startswith("Degradation cannot be judged"):
            items.append(("degradation-finding", sentence))
    rest = _effects(a) if a.effects.rows else _comparisons(a)
    return items + [("", text) for text in rest]


def _capped(sentences: list[str], where: str) -> list[str]:
    if len(sentences) <= MAX_ITEMS:
        return sentences
    return [*sentences[:MAX_ITEMS], f"{len(sentences) - MAX_ITEMS} more under {where}."]


def _effects(a: Analysis) -> list[str]:
    # The paper's shortcut x depth finding above already states that interaction.
    said = {"shortcut", "depth"} if a.effects.shortcut_depth else set()
    clear = sorted(
        (e for e in a.effects.rows if e.p < ALPHA and set(e.factors) != said), key=lambda e: e.p
    )
    if not clear:
        return [
            "No factor and no interaction changes the test error clearly: every term has "
            "p ≥ 0.05 (see Factorial effects)."
        ]
    return _capped([e.sentence for e in clear], "Factorial effects")


def _comparisons(a: Analysis) -> list[str]:
    if a.arms.empty:
        return []
    tested = a.arms[a.arms["p_holm"].notna()]
    clear = tested[tested["p_holm"] < ALPHA].sort_values("p_holm")
    if tested.empty:
        return ["No arm could be tested against its reference yet (see Comparison)."]
    if clear.empty:
        return [
            "No arm differs clearly from its reference (Welch, Holm-corrected; see Comparison)."
        ]
    return _capped([f"{v} (Welch, Holm-corrected)." for v in clear["verdict"]], "Comparison")


def _target(a: Analysis) -> str:
    """The precision target, with every arm that misses it; more than MAX_ITEMS of them
    are listed under a summary the reader opens, to keep the answer on the first screen."""
    target = a.info.target_ci
    if not target or a.arms.empty or a.counts.finished == 0:
        return ""
    missed = a.arms[a.arms["target_status"] == "not met"]
    goal = f"Precision target (95% CI of each arm's mean within ±{target:g} points)"
    if missed.empty:
        return f'<li id="target">{esc(goal)}: met by all {len(a.arms)} arms.</li>'
    each = [f"{r['arm']}: {target_text(r, a.info)}" for _, r in missed.iterrows()]
    said = f"{goal}: not met by {len(missed)} of {len(a.arms)} arms"
    met = f"{len(a.arms) - len(missed)} met it"
    if len(each) <= MAX_ITEMS:
        listed = "; ".join(each)
        return f'<li id="target">{esc(f"{said} ({listed}); {met}.")}</li>'
    arms = "".join(f"<li>{esc(text)}</li>" for text in each)
    return (
        f'<li id="target"><details><summary>{esc(f"{said}; {met}.")}</summary>'
        f"<ul>{arms}</ul></details></li>"
    )
