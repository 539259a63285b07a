"""The top of the page (what happened, whether this run can answer its question, the
answer, what ran) and, further down, the details a reader needs to trust or reproduce it:
settings, plan, code, libraries, devices and data."""

from __future__ import annotations

import importlib.metadata
import platform
from typing import Any

import pandas as pd

from reports.context import Reduction, reproducibility, settings_of, show, what_ran
from reports.data import StudyInfo
from reports.html import duration, esc, experiment_url, link
from reports.sections import section
from reports.study import Analysis
from reports.tables import Counts, per_arm, plural


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


def _reasons(failures: list[tuple[int, str]]) -> str:
    if not failures:
        return ""
    items = "".join(
        f"<li><strong>{esc(plural(n, 'trial'))}:</strong> {esc(reason)}</li>"
        for n, reason in failures
    )
    return f'<ul class="reasons" id="failure-reasons">{items}</ul>'


def banner(counts: Counts, failures: list[tuple[int, str]]) -> str:
    """Red when no trial finished, amber while more is to come or when some trials did not
    finish, green only when every planned trial finished. Failure reasons are grouped,
    each shown in full."""
    reasons = _reasons(failures)
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


def reduced_notice(reduction: Reduction) -> str:
    if not reduction:
        return ""
    return (
        '<div class="banner banner-grey" id="reduced-notice" role="note">'
        f"<strong>{esc(reduction.sentence())}</strong></div>"
    )


def _counts_text(counts: Counts) -> str:
    kinds = ("finished", "diverged", "failed", "running", "interrupted", "pending", "missing")
    text = " · ".join(f"{getattr(counts, k)} {k}" for k in kinds)
    text += f" (of {counts.expected} planned)"
    if counts.retried:
        text += f"; {plural(counts.retried, 'earlier attempt')} retried"
    return esc(text)


def _compute_time(runs: pd.DataFrame) -> str:
    if runs.empty or "wall_time_s" not in runs.columns:
        return "not recorded"
    wall = pd.to_numeric(runs["wall_time_s"], errors="coerce")
    trial = wall[runs["role"] == "trial"].sum()
    tune = wall[runs["role"] == "tune"].sum()
    text = f"{duration(trial + tune)} (trials {duration(trial)}, tuning {duration(tune)})"
    unmeasured = int(wall.isna().sum())
    if unmeasured:
        text += f"; {plural(unmeasured, 'run')} without wall_time_s (not ended) not counted"
    return esc(text)


def _seeds(info: StudyInfo) -> str:
    """Every planned seed, and how many each arm has: adaptive replication adds seeds to
    the arms whose mean is not yet precise enough."""
    if not info.seeds:
        return "–"
    each = per_arm([len(seeds) for seeds in info.planned.values()] or [len(info.seeds)])
    return f"{', '.join(map(str, info.seeds))} ({each})"


def _model(info: StudyInfo) -> str:
    builder = info.model + (" (the built-in ResNets)" if info.resnet else "")
    return f"{builder}; its settings: {', '.join(info.model_factors) or '–'}"


def header(a: Analysis, answer: str) -> str:
    """Title, status banner, reduced-run notice, question, the answer, what ran, and the
    reproducibility warnings; the rest of the facts are in details()."""
    top = banner(a.counts, a.failures) + reduced_notice(a.reduced)
    repro = reproducibility(a.trials, a.info)
    warnings = ""
    if repro.warnings:
        items = "".join(f"<li>{esc(w)}</li>" for w in repro.warnings)
        warnings = (
            '<div class="banner banner-amber" id="repro-warning" role="alert">'
            f"<strong>Reproducibility warning</strong><ul>{items}</ul></div>"
        )
    question = esc(a.info.question or "The study's question was not recorded.")
    ran = esc(what_ran(a.info, a.trials, a.factors))
    return (
        f'<header><h1>{esc(a.info.name)}</h1>{top}<p class="question">{question}</p>'
        f'{answer}<p class="ran" id="what-ran">{ran}</p>{warnings}</header>'
    )


def details(a: Analysis, when: str, links: dict[str, Any]) -> str:
    """Every fact behind the numbers: data set, model, settings, plan, counts, compute,
    code, libraries, devices and data digests."""
    info, settings = a.info, settings_of(a.trials, a.info, a.factors)
    ui = (links["ui"], links["exp"])
    fixed = ", ".join(f"{k} = {show(v)}" for k, v in settings.fixed) or "–"
    varying = "; ".join(
        f"{k}: {', '.join(show(v) for v in values)}" for k, values in settings.varying
    )
    reference = ", ".join(f"{k} = {v}" for k, v in info.reference.items()) or "not named"
    facts = [
        ("Data set", esc(info.dataset or "not recorded")),
        ("Preset", esc(info.preset or "–")),
        ("Model", esc(_model(info))),
        ("Scientific factors", esc(", ".join(a.factors) or "–")),
        ("Reference arm", esc(reference)),
        ("Fixed settings", f'<span id="fixed-settings">{esc(fixed)}</span>'),
    ]
    if varying:
        facts.append(("Varying, not a factor", esc(varying + " (tuned, or changed mid-study)")))
    facts += [
        ("Seeds", esc(_seeds(info))),
        ("Replication rule", esc(info.replication or "not recorded")),
        ("Trials", _counts_text(a.counts)),
        ("Tuning runs", esc(f"{a.counts.tune_runs} (not part of the comparison)")),
        ("Total compute", _compute_time(a.runs)),
        ("Study fingerprint", esc(info.fingerprint or "–")),
        *((label, esc(text)) for label, text in reproducibility(a.trials, info).facts),
        ("Libraries (report)", esc(", ".join(f"{n} {v}" for n, v in versions()))),
        ("MLflow experiment", link(esc(info.experiment_id or "–"), experiment_url(*ui))),
        ("Generated", esc(when)),
    ]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    return section("Study details", "", f'<dl class="facts">{dl}</dl>', "details")
