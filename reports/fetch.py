"""Read one study from MLflow into a StudyData (docs/tracking.md is the contract).

The only module of reports/ that finds runs in MLflow's tracking store (reports.runfiles
reads their histories and artifacts); everything after it works on DataFrames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlparse, urlsplit, urlunsplit
from urllib.request import urlopen

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run

from reports import stats
from reports.data import (
    FINAL_METRICS,
    REPRO_TAGS,
    STATUSES,
    StudyData,
    StudyInfo,
    decode,
    parse_json,
    select_trials,
)
from reports.errors import ReportError
from reports.runfiles import artifacts, first_line, histories

ROLES = ("parent", "trial", "tune")


def redact(uri: str) -> str:
    """The URI without a password, for messages (database URIs often carry one)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _check_sqlite_exists(uri: str) -> None:
    # MLflow creates an empty database for a sqlite path that does not exist; a report
    # must never write a store, and a typo deserves a clear message instead.
    if not uri.startswith("sqlite:///"):
        return
    path = uri[len("sqlite:///") :]
    if path and path != ":memory:" and not Path(unquote(path)).exists():
        raise ReportError(f"no MLflow store at {path} (from tracking URI {redact(uri)})")


def probe_server(uri: str) -> None:
    """Raise ReportError at once when an http(s) tracking URI has no server answering.

    MLflow retries a dead server with backoff for minutes; one quick probe of the
    server's /health endpoint turns a typo into an immediate, clear error. Other URIs
    pass. `ablate run` calls it too, before it writes anything."""
    if urlparse(uri).scheme not in ("http", "https"):
        return
    parts = urlsplit(uri)
    # urllib cannot take credentials in the URL; the probe needs none.
    probe = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    try:
        with urlopen(f"{probe.rstrip('/')}/health", timeout=10):
            pass
    except HTTPError:
        return  # it answered; MLflow's own calls will say what is wrong, if anything
    except (URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ReportError(f"cannot reach MLflow server {redact(uri)}: {reason}") from error


def connect(tracking_uri: str | None) -> MlflowClient:
    if tracking_uri:
        _check_sqlite_exists(tracking_uri)
        probe_server(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


@dataclass
class _Read:
    client: MlflowClient
    uri: str
    info: StudyInfo
    children: list[Run]
    runs: pd.DataFrame
    notes: list[str]


def _read(experiment_name: str, tracking_uri: str | None) -> _Read:
    """The study's parent and child runs, without histories or artifacts."""
    uri = redact(tracking_uri or mlflow.get_tracking_uri())
    try:
        client = connect(tracking_uri)
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            names = [e.name for e in client.search_experiments(max_results=1000)]
            there = ", ".join(sorted(n for n in names if n != "Default")) or "none"
            raise ReportError(
                f"no study named {experiment_name} in store {uri}; studies there: {there}"
            )
        runs = _search_all(client, experiment.experiment_id)
    except ReportError:
        raise
    except Exception as error:
        # The store's driver raises its own types (SQLAlchemy for a file that is not a
        # database, requests for a server): all mean the same thing to the user.
        raise ReportError(
            f"cannot read MLflow store {uri}: {type(error).__name__}: {first_line(error)}"
        ) from error
    ours = [r for r in runs if r.data.tags.get("ablate.role") in ROLES]
    if not ours:
        raise ReportError(
            f"experiment {experiment_name} in {uri} has no ablate runs (no ablate.role tags)"
        )
    parents = sorted(
        (r for r in ours if r.data.tags["ablate.role"] == "parent"),
        key=lambda r: r.info.start_time or 0,
    )
    if not parents:
        raise ReportError(f"experiment {experiment_name} in {uri} has no parent run")
    info = _study_info(experiment_name, experiment.experiment_id, parents[-1])
    children = [r for r in ours if r.data.tags["ablate.role"] in ("trial", "tune")]
    notes: list[str] = []
    frame = _runs_frame(children, info.settings, notes)
    return _Read(client, uri, info, children, frame, notes)


def fetch_study(experiment_name: str, tracking_uri: str | None = None) -> StudyData:
    """Everything the report shows about one study: runs, histories, artifacts.

    Raises ReportError when the store cannot be read or has no such study.
    """
    read = _read(experiment_name, tracking_uri)
    trial_runs = [r for r in read.children if r.data.tags.get("ablate.role") == "trial"]
    history = histories(read.client, trial_runs, remote=_is_remote(read.uri))
    lr_traces, layers = artifacts(read.client, trial_runs, read.runs, read.notes)
    return StudyData(
        info=read.info,
        runs=read.runs,
        history=history,
        lr_traces=lr_traces,
        layer_responses=layers,
        notes=read.notes,
    )


def seed_spread(experiment_name: str, tracking_uri: str | None = None) -> tuple[float, int] | None:
    """The seed-to-seed spread of study `experiment_name`: the pooled within-arm standard
    deviation of the final test error, in points (percent), over its finished trials, with
    its degrees of freedom; None when no arm has 2 finished seeds.

    For sizing studies (`ablate show NAME --effect`, `ablate run --target-ci`): pass the
    result to reports.stats.seeds_needed / mde. Reads runs only, no histories or
    artifacts. Raises ReportError as fetch_study does.
    """
    trials = select_trials(_read(experiment_name, tracking_uri).runs)
    return stats.seed_spread_of(trials)


def _search_all(client: MlflowClient, experiment_id: str) -> list[Run]:
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


# Parent tags the report cannot do without (docs/tracking.md); a store that lacks one was
# written before them and is refused rather than guessed at.
REQUIRED_TAGS = ("ablate.settings", "ablate.model", "ablate.model_factors", "ablate.seeds",
                 "ablate.expected_trials", "ablate.planned")  # fmt: skip


def _study_info(name: str, experiment_id: str, parent: Run) -> StudyInfo:
    params, tags = parent.data.params, parent.data.tags
    missing = [t for t in REQUIRED_TAGS if t not in tags]
    if missing:
        raise ReportError(
            f"the parent run of {name} lacks the tag{'s' * (len(missing) > 1)} "
            f"{', '.join(missing)}: the store was written by an older ablate; run the study "
            "again with this one"
        )
    target = tags.get("ablate.target_ci")
    return StudyInfo(
        name=name,
        experiment_id=experiment_id,
        parent_run_id=parent.info.run_id,
        parent_status=parent.info.status,
        question=params.get("question") or tags.get("mlflow.note.content", ""),
        dataset=params.get("dataset", ""),
        reference=parse_json(params.get("reference"), {}),
        factors=parse_json(params.get("factors"), []),
        seeds=parse_json(tags["ablate.seeds"], []),
        planned=parse_json(tags["ablate.planned"], {}),
        preset=params.get("preset", ""),
        fingerprint=tags.get("ablate.fingerprint", ""),
        expected_trials=_int_or_none(tags["ablate.expected_trials"]),
        git_commit=tags.get("mlflow.source.git.commit", ""),
        git_dirty=tags.get("ablate.git_dirty", ""),
        settings={str(k): str(v) for k, v in parse_json(tags["ablate.settings"], {}).items()},
        replication=tags.get("ablate.replication", ""),
        full_dataset=params.get("full_dataset", ""),
        full_iterations=_int_or_none(params.get("full_iterations")),
        model=tags["ablate.model"],
        model_factors=parse_json(tags["ablate.model_factors"], []),
        target_ci=float(target) if target else None,
        max_seeds=_int_or_none(tags.get("ablate.max_seeds")),
    )


# docs/tracking.md's MLflow run statuses, for a run without a valid `ablate.status`.
_FROM_MLFLOW = {"FAILED": "failed", "FINISHED": "finished", "SCHEDULED": "pending",
                "KILLED": "interrupted"}  # fmt: skip


def _runs_frame(runs: list[Run], types: dict[str, str], notes: list[str]) -> pd.DataFrame:
    rows, untyped = [], set()
    for run in runs:
        tags = run.data.tags
        status = tags.get("ablate.status")
        if status not in STATUSES:
            status = _FROM_MLFLOW.get(run.info.status, "running")
        row: dict[str, Any] = {
            "run_id": run.info.run_id,
            "role": tags.get("ablate.role"),
            "arm": tags.get("ablate.arm", ""),
            "trial_key": tags.get("ablate.trial_key", run.info.run_id),
            "status": status,
            "mlflow_status": run.info.status,
            "diverged_at": _int_or_none(tags.get("ablate.diverged_at")),
            "reason": tags.get("ablate.error", ""),
            "start_time": run.info.start_time or 0,
            **{column: tags.get(tag, "") for column, tag in REPRO_TAGS.items()},
        }
        for key, text in run.data.params.items():
            if key not in types:
                untyped.add(key)
                row.setdefault(key, text)
                continue
            try:
                row.setdefault(key, decode(types[key], text))
            except ValueError as error:
                raise ReportError(
                    f"run {run.info.run_id} ({row['trial_key']}): param {key} = {text!r} is "
                    f"not a valid {types[key]}, the type ablate.settings gives it"
                ) from error
        # Only the documented final metrics: `lr` is both a param and a metric, and the
        # param (the configured rate) is the one the report means by `lr`.
        row.update({k: v for k, v in run.data.metrics.items() if k in FINAL_METRICS})
        rows.append(row)
    if untyped:
        names = ", ".join(sorted(untyped))
        notes.append(f"params missing from the parent's ablate.settings, read as text: {names}")
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["run_id", "role", "arm", "trial_key", "status", "start_time"])
    return frame


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(float(text)) if text is not None else None
    except ValueError:
        return None


def _is_remote(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https", "databricks")
