"""The top of the page: what happened (the status banner), whether this run can answer its
question, the answer (the findings, among them the degradation problem of docs/paper.md
§1, in a few sentences with their numbers) and what ran; and the details at the end of
the page, what a reader needs to trust or reproduce it, from the trials' params and tags."""

from __future__ import annotations

import importlib.metadata
import math
import platform
from collections import Counter
from typing import Any

import pandas as pd

from reports import stats
from reports.data import StudyInfo, parse_json, setting_names
from reports.effects import Effect, ci_text, signed
from reports.html import duration, esc, experiment_url, link, section
from reports.replication import design_text
from reports.stats import ALPHA
from reports.study import Analysis, max_iterations
from reports.tables import Counts, is_plain, level_key, per_arm, plural

# Sentences about effects, comparisons or arms off target in the answer; the rest are in
# their sections further down.
MAX_ITEMS = 4
SIGN_CONVENTION = (
    "Every effect on this page is a change in test error in points, the later level minus "
    "the earlier: negative means lower error (better), positive higher."
)


def show(value: Any) -> str:
    if pd.isna(value):
        return "unset"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1000:
        return f"{value:,.0f}"
    return str(value)


def _distinct(column: pd.Series) -> list[Any]:
    """Distinct values in the paper's order, None (unset) included once."""
    values: dict[str, Any] = {}
    for value in column:
        values.setdefault(show(value), None if show(value) == "unset" else value)
    return sorted(values.values(), key=lambda v: (v is None, level_key(v) if v is not None else ()))


def settings_of(trials: pd.DataFrame, info: StudyInfo, factors: list[str]) -> tuple[list, list]:
    """(name, value) of the settings fixed for all trials, and (name, values) of those that
    vary though no scientific factor (tuned, or the study edited mid-way)."""
    fixed, varying = [], []
    for name in setting_names(info):
        if name == "seed" or name not in trials.columns:
            continue
        values = _distinct(trials[name])
        if len(values) == 1:
            fixed.append((name, values[0]))
        elif name not in factors:
            varying.append((name, values))
    return fixed, varying


def what_ran(info: StudyInfo, trials: pd.DataFrame, factors: list[str]) -> str:
    """One line: the factors and levels, data set, the model builder's fixed settings,
    iterations and seeds this run actually trained."""
    if trials.empty:
        return "No trial has been recorded yet."
    parts = []
    levels = [
        f"{f} ({', '.join(show(v) for v in _distinct(trials[f]))})"
        for f in factors
        if f in trials.columns
    ]
    if levels:
        parts.append(" × ".join(levels))
    if info.dataset:
        parts.append(f"on {info.dataset}")
    fixed = [
        f"{name} {show(trials[name].iloc[0])}"
        for name in info.model_factors
        if name in trials.columns and name not in factors and len(_distinct(trials[name])) == 1
    ]
    if fixed:
        parts.append("fixed " + ", ".join(fixed))
    iterations = max_iterations(trials)
    if iterations is not None:
        varied = trials["iterations"].nunique() > 1
        parts.append(f"{'up to ' if varied else ''}{iterations:,} iterations per trial")
    seeds = sorted({*info.seeds, *_distinct(trials["seed"].dropna())}, key=level_key)
    if seeds:
        each = per_arm(list(trials.groupby("arm").size()))
        parts.append(f"seeds {', '.join(map(str, seeds))} ({each})")
    return "Ran here: " + "; ".join(parts) + "."


def _tally(values: pd.Series, label: str = "") -> str:
    """'x' when every trial recorded x, else each value with its count of trials."""
    counts = Counter(values)
    if not counts:
        return "not recorded"
    if len(counts) == 1:
        return f"{next(iter(counts))}{label}"
    return "; ".join(f"{v} ({plural(n, 'trial')})" for v, n in counts.most_common())


def _versions(text: str) -> str:
    value = parse_json(text, text)
    return ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else text


def _recorded(trials: pd.DataFrame, column: str) -> pd.Series:
    if column not in trials.columns:
        return pd.Series(dtype=object)
    values = trials[column].fillna("").astype(str).str.strip()
    return values[values != ""]


def reproducibility(trials: pd.DataFrame, info: StudyInfo) -> tuple[list, list[str]]:
    """(label, text) of the code, libraries, devices, precision and data of the trials that
    ran, and warnings where the trials of one study differ in code or data."""
    ran = trials[trials["status"] != "pending"]
    warnings = []
    commits = _recorded(ran, "git_commit")
    dirty = _recorded(ran, "git_dirty").str.lower().eq("true").reindex(ran.index, fill_value=False)
    if commits.empty:
        driver = f"; driver at {info.git_commit[:12]}" if info.git_commit else ""
        code = f"not recorded by the trials{driver}"
    else:
        labels = commits.str[:12] + dirty[commits.index].map(
            {True: " with uncommitted changes", False: ""}
        )
        code = _tally(labels, "" if dirty.any() else " (clean checkout)")
        if commits.nunique() > 1:
            warnings.append(
                f"The trials ran on {commits.nunique()} different code versions "
                f"({_tally(commits.str[:12])}): a difference between arms may come "
                "from the code, not the factors."
            )
    if dirty.any():
        warnings.append(
            f"{plural(int(dirty.sum()), 'trial')} ran from a checkout with uncommitted "
            "changes (ablate.git_dirty): the commit alone does not recover their code."
        )
    versions = _recorded(ran, "versions").map(_versions)
    if versions.nunique() > 1:
        warnings.append(
            f"The trials ran with {versions.nunique()} different sets of library versions."
        )
    digests = _recorded(ran, "data_digest")
    data = ran.loc[digests.index, "dataset"].astype(str) if not digests.empty else digests
    several = data.nunique() > 1
    for name, group in digests.groupby(data):
        if group.nunique() > 1:
            warnings.append(
                f"The trials trained on {group.nunique()} different versions of the data "
                f"{name} ({_tally(group)}): their results are not comparable as one study."
            )
    facts = [
        ("Code version", code),
        ("Libraries (training)", _tally(versions)),
        ("Devices", _tally(_recorded(ran, "device"))),
        ("Precision", _tally(_recorded(ran, "precision"))),
        ("Data digest", _tally(digests + " (" + data + ")" if several else digests)),
    ]
    return facts, warnings


def degradation_applies(trials: pd.DataFrame) -> tuple[bool, str]:
    """Whether the degradation plots mean anything here, and if not, why they are absent."""
    depths = trials.get("depth", pd.Series()).dropna().unique()
    kinds = {is_plain(s) for s in trials.get("shortcut", pd.Series()).dropna()}
    if len(depths) > 1 or len(kinds) == 2:
        return True, ""
    depth_text = f"a single depth ({depths[0]})" if len(depths) == 1 else "no recorded depth"
    kind_text = "only plain nets" if kinds == {True} else "only residual nets"
    return False, (
        f"The degradation plots are absent: this study has {depth_text} and {kind_text}, "
        "so there is no deeper-vs-shallower or plain-vs-residual comparison to draw."
    )


def _depth_pair(arms: pd.DataFrame, factors: list[str], plain: bool) -> tuple | None:
    """Of the plain (or residual) arms with finished seeds, the deeper-vs-shallower pair
    with the same other factors that most favours the question (the largest rise in
    training error for plain nets, the largest fall for residual ones): (the pair's merged
    row, its gap in points, the other factors that vary among these arms). None without
    two depths of that kind."""
    kind = arms[(arms["shortcut"].map(is_plain) == plain) & arms["train_error_pct_mean"].notna()]
    if kind["depth"].nunique() < 2:
        return None
    others = [f for f in factors if f != "depth"]
    kind = kind.assign(_same=kind[others].astype(str).agg(" ".join, axis=1) if others else "")
    pairs = kind.merge(kind, on="_same", suffixes=("_shallow", "_deep"))
    pairs = pairs[pairs["depth_deep"] > pairs["depth_shallow"]]
    if pairs.empty:
        return None
    # A pair Welch's test can judge (two finished seeds a side) before one it cannot.
    testable = (pairs["finished_deep"] >= 2) & (pairs["finished_shallow"] >= 2)
    pairs = pairs[testable] if testable.any() else pairs
    gaps = pairs["train_error_pct_mean_deep"] - pairs["train_error_pct_mean_shallow"]
    best = gaps.idxmax() if plain else gaps.idxmin()
    varying = [f for f in others if kind[f].astype(str).nunique() > 1]
    return pairs.loc[best], float(gaps[best]), varying


def _welch_text(test: stats.Welch) -> str:
    return f"Welch {stats.format_p(test.p)}" if math.isfinite(test.p) else "too few seeds to test"


def depth_sentence(
    arms: pd.DataFrame, trials: pd.DataFrame, factors: list[str], plain: bool, evidence: bool
) -> str:
    """One half of the depth question, on training error, with Welch's p (uncorrected: one
    descriptive contrast). Plain nets: does a deeper one end higher than a shallower one
    with the same other factors (the degradation problem)? Residual nets: does a deeper one
    end lower? "" without finished nets of that kind at two or more depths."""
    if not {"depth", "shortcut"} <= set(arms.columns):
        return ""
    found = _depth_pair(arms, factors, plain)
    if found is None:
        return ""
    pair, gap, varying = found
    if gap <= 0 if plain else gap >= 0:
        if plain:
            return (
                "No degradation: no deeper plain net ends with a higher training error than a "
                "shallower one."
            )
        return (
            "No gain from depth for residual nets: no deeper residual net ends with a lower "
            "training error than a shallower one."
        )

    def name(end: str) -> str:
        given = ", ".join(f"{f}={pair[f'{f}_{end}']}" for f in varying)
        net = f"{'plain' if plain else 'ResNet'}-{pair[f'depth_{end}']}"
        return net + (f" ({given})" if given else "")

    finished = trials[trials["status"] == "finished"]
    deep, shallow = (
        100 * pd.to_numeric(finished.loc[finished["arm"] == pair[f"arm_{end}"], "train/error"])
        for end in ("deep", "shallow")
    )
    test = stats.welch(deep, shallow)
    numbers = (
        f"{name('deep')} ends with {pair['train_error_pct_mean_deep']:.2f}% training error "
        f"against {pair['train_error_pct_mean_shallow']:.2f}% for {name('shallow')} "
        f"({abs(gap):.2f} points {'higher' if plain else 'lower'}; {_welch_text(test)}; "
        f"{pair['finished_deep']} and {pair['finished_shallow']} finished seeds)"
    )
    what = "degradation" if plain else "gain from depth for residual nets"
    if not math.isfinite(test.p):
        return f"No test of {what}: {numbers}."
    if test.p >= ALPHA:
        return f"No clear {what}: {numbers}, within seed noise."
    if not plain:
        return f"The deeper residual net trains better: {numbers}."
    # Only a full run generalises from its nets to deeper plain nets at large.
    general = " A deeper plain net optimizes worse." if evidence else ""
    return f"Degradation appears: {numbers}.{general}"


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
        # The sentences below then describe this run, never the study's question.
        return (
            basis + ", a reduced run: what it shows is no evidence for the study's question; "
            "tests at α = 0.05 describe this run only:"
        )
    return basis + "; tests at α = 0.05:"


def findings(a: Analysis) -> list[tuple[str, str]]:
    """(id, sentence) of the answer, most telling first: a significant interaction leads,
    with the per-arm comparisons that show it (for the paper's ResNets, the two halves of
    the depth question: deeper plain nets train worse, deeper residual nets better); then
    the clear effects that no significant interaction qualifies, or the comparisons."""
    if a.counts.finished == 0:
        return []
    interactions = sorted(
        (e for e in a.effects.rows if len(e.factors) == 2 and e.p < ALPHA), key=lambda e: e.p
    )
    items = [_interaction_finding(a, e, i) for i, e in enumerate(interactions)]
    halves = []
    if a.info.resnet and degradation_applies(a.trials)[0]:
        for plain, ident in ((True, "degradation-finding"), (False, "residual-depth-finding")):
            if sentence := depth_sentence(a.arms, a.trials, a.factors, plain, a.evidence):
                halves.append((ident, sentence))
    items += halves
    if interactions and not (halves and _is_paper(a, interactions[0])):
        items += [("", text) for text in _simple_effects(a, interactions[0])]
    paper = next((e for e in a.effects.rows if _is_paper(a, e)), None)
    if paper is not None and paper.p >= ALPHA:
        items.append(("shortcut-depth-finding", _paper_sentence(a, paper)))
    elif paper is None and _paper_applies(a) and not a.effects.absent:
        items.append(
            (
                "shortcut-depth-finding",
                "The paper's finding, that the benefit of shortcuts grows with depth, cannot "
                "be judged here: the shortcut × depth interaction is not estimable.",
            )
        )
    if a.effects.rows:
        rest = _effects(a, interactions)
    else:
        rest = _comparisons(a)
    return items + [("", text) for text in rest]


def _paper_applies(a: Analysis) -> bool:
    """A ResNet study of shortcut (none among its finished levels) and depth: the paper's
    finding that the benefit of shortcuts grows with depth can be judged."""
    if not (a.info.resnet and {"shortcut", "depth"} <= set(a.factors)):
        return False
    done = a.trials[a.trials["status"] == "finished"]
    return any(is_plain(v) for v in done["shortcut"].dropna())


def _is_paper(a: Analysis, e: Effect) -> bool:
    return set(e.factors) == {"shortcut", "depth"} and _paper_applies(a)


def _cells(a: Analysis, first: str, second: str) -> tuple[pd.Series, list, list]:
    """Finished seeds' final test errors in points by (first, second) levels as text,
    pooled over any other factor, and each factor's levels in the paper's order."""
    done = a.trials[a.trials["status"] == "finished"]
    errors = 100 * pd.to_numeric(done["test/error"], errors="coerce")
    done, errors = done[errors.notna()], errors[errors.notna()]
    levels = [sorted(done[f].dropna().unique(), key=level_key) for f in (first, second)]
    return errors.groupby([done[first].astype(str), done[second].astype(str)]), *levels


def _paper_sentence(a: Analysis, e: Effect) -> str:
    """The paper's finding, that the benefit of shortcuts (against none) grows with depth,
    from the shortcut × depth interaction and the cell means at the extreme depths."""
    numbers, deepest = _interaction_numbers(a, e, ("shortcut", "depth"))
    if e.p >= ALPHA:
        return (
            "The paper's finding, that the benefit of shortcuts grows with depth, is not clear "
            f"here: {numbers}, within seed noise."
        )
    if e.estimate > 0:
        return (
            "Shortcuts fare worse against plain nets as depth grows, unlike the paper's "
            f"finding: {numbers}."
        )
    if deepest < 0:
        return f"The benefit of shortcuts grows with depth, as the paper finds: {numbers}."
    return (
        "Shortcuts fare better against plain nets as depth grows, as in the paper, though "
        f"they do not lower the test error even at the deepest depth here: {numbers}."
    )


def _interaction_numbers(a: Analysis, e: Effect, order: tuple[str, str]) -> tuple[str, float]:
    """How the effect of order[0] (its extreme levels) differs between the extreme levels of
    order[1], in cell means, and the interaction with its interval and p-value; and that
    effect at the highest level of order[1]."""
    first, second = order
    cells, levels, others = _cells(a, first, second)
    means = cells.mean()
    low, high = str(levels[0]), str(levels[-1])
    at = [float(means[(high, str(v))] - means[(low, str(v))]) for v in (others[0], others[-1])]
    against = "none" if first == "shortcut" and is_plain(low) else f"{first}={low}"
    name = f"shortcut {high}" if first == "shortcut" else f"{first}={high}"
    where = [f"{second} {v}" if second == "depth" else f"{second}={v}" for v in others]
    f_test = "; F test over all their levels" if len(levels) > 2 or len(others) > 2 else ""
    return (
        f"{name} against {against} changes the test error by {signed(at[0])} points at "
        f"{where[0]} and by {signed(at[1])} at {where[-1]}, an interaction of "
        f"{signed(e.estimate)} points ({ci_text(e.ci_low, e.ci_high)}, {stats.format_p(e.p)}"
        f"{f_test})"
    ), at[1]


def _interaction_finding(a: Analysis, e: Effect, index: int) -> tuple[str, str]:
    """A significant interaction, which leads the answer: the paper's, or any other."""
    if _is_paper(a, e):
        return "shortcut-depth-finding", _paper_sentence(a, e)
    first, second = e.factors
    numbers = _interaction_numbers(a, e, (first, second))[0]
    return ("" if index else "interaction-finding"), (
        f"The effect of {first} depends on {second}: {numbers}."
    )


def _simple_effects(a: Analysis, e: Effect) -> list[str]:
    """The per-arm comparisons behind an interaction: the extreme levels of its first
    factor against each other at each extreme level of the second, Welch's t-test on the
    finished seeds' final test errors (uncorrected: descriptive contrasts)."""
    first, second = e.factors
    cells, levels, others = _cells(a, first, second)
    groups = dict(iter(cells))
    pooled = [f for f in a.factors if f not in e.factors]
    over = f", pooled over {', '.join(pooled)}" if pooled else ""
    out = []
    for level in dict.fromkeys((others[0], others[-1])):
        high, low = (
            groups.get((str(v), str(level)), pd.Series(dtype=float))
            for v in (levels[-1], levels[0])
        )
        if high.empty or low.empty:
            continue
        test, diff = stats.welch(high, low), high.mean() - low.mean()
        out.append(
            f"At {second}={level}: {first}={levels[-1]} ends with {high.mean():.2f}% test error "
            f"against {low.mean():.2f}% for {first}={levels[0]} ({abs(diff):.2f} points "
            f"{'lower' if diff < 0 else 'higher'}; {_welch_text(test)}; {len(high)} and "
            f"{len(low)} finished seeds{over})."
        )
    return out


def _capped(sentences: list[str], where: str) -> list[str]:
    if len(sentences) <= MAX_ITEMS:
        return sentences
    return [*sentences[:MAX_ITEMS], f"{len(sentences) - MAX_ITEMS} more under {where}."]


def _effects(a: Analysis, interactions: list[Effect]) -> list[str]:
    """The clear effects the sentences above have not said: a main effect whose factor
    takes part in a significant interaction is an average that hides it, so it is left to
    the Factorial effects section."""
    qualified = {f for e in interactions for f in e.factors}
    clear = sorted(
        (
            e
            for e in a.effects.rows
            if e.p < ALPHA and len(e.factors) == 1 and e.factors[0] not in qualified
        ),
        key=lambda e: e.p,
    )
    if not clear and not interactions:
        return [
            "No factor and no interaction changes the test error clearly: every term has "
            "p ≥ 0.05 (see Factorial effects)."
        ]
    return _capped([e.sentence for e in clear], "Factorial effects")


def _comparisons(a: Analysis) -> list[str]:
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
    if not target or a.counts.finished == 0:
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


def target_text(row: pd.Series, info: StudyInfo) -> str:
    """An arm against the precision target, in words; past the study's seed limit when
    the seeds it needs are more than adaptive replication may add."""
    half, n = row["ci_half_width_pct"], row["test_error_pct_n"]
    width = "no interval (fewer than 2 seeds)" if pd.isna(half) else f"±{half:.2f}"
    if row["target_status"] == "met":
        return f"met ({width})"
    needs = int(row["seeds_for_target"])
    limit = f", more than the {info.max_seeds} allowed" if needs > (info.max_seeds or needs) else ""
    return f"target not met: {width} with {plural(n, 'seed')}; needs {needs} seeds{limit}"


def versions() -> list[tuple[str, str]]:
    """The versions of what builds the report."""
    out = []
    for name in ("ablate", "mlflow", "pandas", "plotly", "scipy", "statsmodels", "numpy"):
        try:
            out.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            out.append((name, "not installed"))
    return [*out, ("python", platform.python_version())]


def _status_tally(counts: Counts) -> str:
    """'8 of 8 failed', or several kinds: '5 failed, 3 still running (of 8)'."""
    words = {"running": "still running", "missing": "not started"}
    kinds = ("failed", "diverged", "running", "interrupted", "pending", "missing")
    parts = [(getattr(counts, k), words.get(k, k)) for k in kinds if getattr(counts, k)]
    if len(parts) == 1:
        n, word = parts[0]
        return f"{n} of {counts.total} {word}"
    return ", ".join(f"{n} {word}" for n, word in parts) + f" (of {counts.total})"


def banner(counts: Counts, failures: list[tuple[int, str]]) -> str:
    """Red when no trial finished, amber while more is to come or some trials did not
    finish, green when every planned trial finished; failure reasons grouped, in full."""
    items = "".join(
        f"<li><strong>{esc(plural(n, 'trial'))}:</strong> {esc(reason)}</li>"
        for n, reason in failures
    )
    reasons = f'<ul class="reasons" id="failure-reasons">{items}</ul>' if failures else ""
    state = counts.state
    if state == "none":
        yet = " yet" if counts.partial else ""
        return (
            '<div class="banner banner-red" id="failed-banner" role="alert">'
            f"<strong>No trial finished{yet}: {esc(_status_tally(counts))}.</strong> "
            f"There are no results to compare.{reasons}</div>"
        )
    if state == "partial":
        text = "; ".join(counts.partial_reasons)
        return (
            '<div class="banner banner-amber" id="partial-banner" role="alert">'
            "<strong>Partial study: this report shows only what exists so far.</strong> "
            f"{esc(text)}. Means, tests and plots cover finished trials only and may "
            f"change when the study completes.{reasons}</div>"
        )
    if state == "problems":
        return (
            '<div class="banner banner-amber" id="problems-banner" role="alert">'
            f"<strong>Ended, but not every trial finished: {counts.finished} of "
            f"{counts.total} finished; {esc(_status_tally(counts))}.</strong> Means and "
            f"tests cover the finished trials only.{reasons}</div>"
        )
    return (
        '<div class="banner banner-green" id="complete-banner">Complete: all '
        f"{plural(counts.finished, 'planned trial')} finished.</div>"
    )


def _counts_text(counts: Counts) -> str:
    kinds = ("finished", "diverged", "failed", "running", "interrupted", "pending", "missing")
    text = " · ".join(f"{getattr(counts, k)} {k}" for k in kinds)
    text += f" (of {counts.expected} planned)"
    if counts.retried:
        text += f"; {plural(counts.retried, 'earlier attempt')} retried"
    return esc(text)


def _compute_time(runs: pd.DataFrame) -> str:
    if "wall_time_s" not in runs.columns:
        return "not recorded"
    wall = pd.to_numeric(runs["wall_time_s"], errors="coerce")
    trial = wall[runs["role"] == "trial"].sum()
    tune = wall[runs["role"] == "tune"].sum()
    text = f"{duration(trial + tune)} (trials {duration(trial)}, tuning {duration(tune)})"
    unmeasured = int(wall.isna().sum())
    if unmeasured:
        text += f"; {plural(unmeasured, 'run')} without wall_time_s (not ended) not counted"
    return esc(text)


def header(a: Analysis) -> str:
    """Title, status banner, reduced-run notice, question, the answer, what ran, and the
    reproducibility warnings; the rest of the facts are in details()."""
    top = banner(a.counts, a.failures)
    if a.reduced:
        top += (
            '<div class="banner banner-grey" id="reduced-notice" role="note">'
            f"<strong>{esc(a.reduced.sentence())}</strong></div>"
        )
    warnings = ""
    if notes := reproducibility(a.trials, a.info)[1]:
        items = "".join(f"<li>{esc(w)}</li>" for w in notes)
        warnings = (
            '<div class="banner banner-amber" id="repro-warning" role="alert">'
            f"<strong>Reproducibility warning</strong><ul>{items}</ul></div>"
        )
    question = esc(a.info.question or "The study's question was not recorded.")
    ran = esc(what_ran(a.info, a.trials, a.factors))
    return (
        f'<header><h1>{esc(a.info.name)}</h1>{top}<p class="question">{question}</p>'
        f'{answer(a)}<p class="ran" id="what-ran">{ran}</p>{warnings}</header>'
    )


def details(a: Analysis, when: str, links: dict[str, Any]) -> str:
    """Every fact behind the numbers: data set, model, settings, plan, counts, compute,
    code, libraries, devices and data digests."""
    info, (fixed, varying) = a.info, settings_of(a.trials, a.info, a.factors)
    ui = (links["ui"], links["exp"])
    fixed = ", ".join(f"{k} = {show(v)}" for k, v in fixed) or "–"
    varying = "; ".join(f"{k}: {', '.join(show(v) for v in values)}" for k, values in varying)
    reference = ", ".join(f"{k} = {v}" for k, v in info.reference.items()) or "not named"
    model = info.model + (" (the built-in ResNets)" if info.resnet else "")
    model += f"; its settings: {', '.join(info.model_factors) or '–'}"
    # Every planned seed, and how many each arm has: adaptive replication adds seeds to
    # the arms whose mean is not yet precise enough.
    each = per_arm([len(seeds) for seeds in info.planned.values()] or [len(info.seeds)])
    seeds = f"{', '.join(map(str, info.seeds))} ({each})" if info.seeds else "–"
    facts = [
        ("Data set", esc(info.dataset or "not recorded")),
        ("Preset", esc(info.preset or "–")),
        ("Model", esc(model)),
        ("Scientific factors", esc(", ".join(a.factors) or "–")),
        ("Reference arm", esc(reference)),
        ("Fixed settings", f'<span id="fixed-settings">{esc(fixed)}</span>'),
    ]
    if varying:
        facts.append(("Varying, not a factor", esc(varying + " (tuned, or changed mid-study)")))
    facts += [
        ("Seeds", esc(seeds)),
        ("Replication rule", esc(design_text(info.replication, a.runs))),
        ("Trials", _counts_text(a.counts)),
        ("Tuning runs", esc(f"{a.counts.tune_runs} (not part of the comparison)")),
        ("Total compute", _compute_time(a.runs)),
        ("Study fingerprint", esc(info.fingerprint or "–")),
        *((label, esc(text)) for label, text in reproducibility(a.trials, info)[0]),
        ("Libraries (report)", esc(", ".join(f"{n} {v}" for n, v in versions()))),
        ("MLflow experiment", link(esc(info.experiment_id or "–"), experiment_url(*ui))),
        ("Generated", esc(when)),
    ]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    return section("Study details", "", f'<dl class="facts">{dl}</dl>', "details")
