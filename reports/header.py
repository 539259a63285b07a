"""The top of the page: what happened (the status banner), whether this run can answer its
question, what ran, and the facts a reader needs to trust or reproduce it."""

from __future__ import annotations

import importlib.metadata
import platform
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import plotly
import scipy

from reports import html
from reports.context import Reduction, Reproducibility, Settings, show
from reports.data import StudyInfo
from reports.html import duration, esc, link
from reports.tables import Counts, plural


def versions() -> list[tuple[str, str]]:
    try:
        ablate = importlib.metadata.version("ablate")
    except importlib.metadata.PackageNotFoundError:
        ablate = "not installed (run from a source tree)"
    try:
        statsmodels = importlib.metadata.version("statsmodels")
    except importlib.metadata.PackageNotFoundError:
        statsmodels = "not installed"
    return [
        ("ablate", ablate),
        ("mlflow", mlflow.__version__),
        ("pandas", pd.__version__),
        ("plotly", plotly.__version__),
        ("scipy", scipy.__version__),
        ("statsmodels", statsmodels),
        ("numpy", np.__version__),
        ("python", platform.python_version()),
    ]


def _status_tally(counts: Counts) -> str:
    """'8 of 8 failed', or several kinds: '5 failed, 3 still running (of 8)'."""
    parts = [
        (counts.failed, "failed"),
        (counts.diverged, "diverged"),
        (counts.running, "still running"),
        (counts.interrupted, "interrupted"),
        (counts.pending, "pending"),
        (counts.missing, "not started"),
    ]
    parts = [(n, word) for n, word in parts if n]
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
    planned = "planned" if counts.expected is not None else "recorded"
    return (
        '<div class="banner banner-green" id="complete-banner">Complete: all '
        f"{plural(counts.finished, f'{planned} trial')} finished.</div>"
    )


def reduced_notice(reduction: Reduction) -> str:
    if not reduction:
        return ""
    return (
        '<div class="banner banner-grey" id="reduced-notice" role="note">'
        f"<strong>{esc(reduction.sentence())}</strong></div>"
    )


def _counts_text(counts: Counts) -> str:
    parts = [
        f"{counts.finished} finished",
        f"{counts.diverged} diverged",
        f"{counts.failed} failed",
        f"{counts.running} running",
        f"{counts.interrupted} interrupted",
        f"{counts.pending} pending",
        f"{counts.missing} missing",
    ]
    text = " · ".join(parts)
    if counts.expected is not None:
        estimated = ", estimated as arms seen × seeds" if counts.expected_estimated else ""
        text += f" (of {counts.expected} planned{estimated})"
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


def _seeds(info: StudyInfo, trials: pd.DataFrame) -> str:
    if info.seeds:
        return ", ".join(map(str, info.seeds))
    if "seed" in trials.columns and not trials.empty:
        seen = sorted(trials["seed"].dropna().unique())
        return ", ".join(map(str, seen)) + " (seen in runs; the plan was not recorded)"
    return "–"


def experiment_url(links: dict[str, Any]) -> str | None:
    return html.experiment_url(links["ui"], links["exp"])


def header(
    info: StudyInfo,
    top: str,
    what_ran: str,
    settings: Settings,
    repro: Reproducibility,
    counts: Counts,
    trials: pd.DataFrame,
    runs: pd.DataFrame,
    factors: list[str],
    when: str,
    links: dict[str, Any],
) -> str:
    """`top`: the banner and reduced-run notice, rendered above the question."""
    fixed = ", ".join(f"{k} = {show(v)}" for k, v in settings.fixed) or "–"
    varying = "; ".join(
        f"{k}: {', '.join(show(v) for v in values)}" for k, values in settings.varying
    )
    reference = ", ".join(f"{k} = {v}" for k, v in info.reference.items()) or "not named"
    facts = [
        ("Data set", esc(info.dataset or "not recorded")),
        ("Preset", esc(info.preset or "–")),
        ("Scientific factors", esc(", ".join(factors) or "–")),
        ("Reference arm", esc(reference)),
        ("Fixed settings", f'<span id="fixed-settings">{esc(fixed)}</span>'),
    ]
    if varying:
        facts.append(("Varying, not a factor", esc(varying + " (tuned, or changed mid-study)")))
    facts += [
        ("Seeds", esc(_seeds(info, trials))),
        ("Replication rule", esc(info.replication or "not recorded")),
        ("Trials", _counts_text(counts)),
        ("Tuning runs", esc(f"{counts.tune_runs} (not part of the comparison)")),
        ("Total compute", _compute_time(runs)),
        ("Study fingerprint", esc(info.fingerprint or "–")),
        *((label, esc(text)) for label, text in repro.facts),
        ("Libraries (report)", esc(", ".join(f"{n} {v}" for n, v in versions()))),
        ("MLflow experiment", link(esc(info.experiment_id or "–"), experiment_url(links))),
        ("Generated", esc(when)),
    ]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    warnings = ""
    if repro.warnings:
        items = "".join(f"<li>{esc(w)}</li>" for w in repro.warnings)
        warnings = (
            '<div class="banner banner-amber" id="repro-warning" role="alert">'
            f"<strong>Reproducibility warning</strong><ul>{items}</ul></div>"
        )
    question = esc(info.question or "The study's question was not recorded.")
    return (
        f"<header><h1>{esc(info.name)}</h1>{top}"
        f'<p class="question">{question}</p><p class="ran" id="what-ran">{esc(what_ran)}</p>'
        f'{warnings}<dl class="facts">{dl}</dl></header>'
    )
