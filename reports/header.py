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
from reports.html import duration, esc, experiment_url, link, section
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


def degradation_sentence(arms: pd.DataFrame, trials: pd.DataFrame, factors: list[str]) -> str:
    """Does a deeper plain net end with a higher training error than a shallower one with
    the same other factors? The largest such gap, with Welch's p (uncorrected: one
    descriptive contrast); "" without finished plain nets at two or more depths."""
    if not {"depth", "shortcut"} <= set(arms.columns):
        return ""
    plain = arms[arms["shortcut"].map(is_plain) & arms["train_error_pct_mean"].notna()]
    if plain["depth"].nunique() < 2:
        return ""
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
        if sentence := degradation_sentence(a.arms, a.trials, a.factors):
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
        ("Replication rule", esc(info.replication or "not recorded")),
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
