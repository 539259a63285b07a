"""Read one study from MLflow into a StudyData (docs/tracking.md is the contract): its
runs, their metric histories and JSON artifacts. The only module of reports/ that reads
MLflow's tracking store; everything after it works on DataFrames.
"""

from __future__ import annotations

import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from reports.data import (
    FINAL_METRICS,
    HISTORY_METRICS,
    REPRO_TAGS,
    StudyData,
    StudyInfo,
    decode,
    empty_runs,
    parse_json,
)
from reports.errors import ReportError
from reports.layout import Role, Tag, redact, server_problem

ROLES = tuple(Role)
# Most runs of a deterministic LR policy share one trace; plateau traces differ by run.
LR_TRACES_PER_SETTING = {"plateau": 3}
LR_SETTINGS = ("lr_policy", "lr", "warmup", "warmup_lr", "iterations")


def _check_sqlite_exists(uri: str) -> None:
    # MLflow creates an empty database for a sqlite path that does not exist; a report
    # must never write a store, and a typo deserves a clear message instead.
    if not uri.startswith("sqlite:///"):
        return
    path = uri[len("sqlite:///") :]
    if path and path != ":memory:" and not Path(unquote(path)).exists():
        raise ReportError(f"no MLflow store at {path} (from tracking URI {redact(uri)})")


def probe_server(uri: str) -> None:
    """Raise ReportError at once when an http(s) tracking URI has no server answering
    (ablations.tracking.server_problem)."""
    problem = server_problem(uri)
    if problem:
        raise ReportError(problem)


def connect(tracking_uri: str | None) -> MlflowClient:
    if tracking_uri:
        _check_sqlite_exists(tracking_uri)
        probe_server(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def _read(experiment_name: str, tracking_uri: str | None):
    """The client, the study's info, its trial runs, the frame of all its child runs and
    the notes made reading them; no histories or artifacts."""
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
    ours = [r for r in runs if r.data.tags.get(Tag.ROLE) in ROLES]
    if not ours:
        raise ReportError(
            f"experiment {experiment_name} in {uri} has no ablate runs (no ablate.role tags)"
        )
    parents = [r for r in ours if r.data.tags[Tag.ROLE] == Role.PARENT]
    if not parents:
        raise ReportError(f"experiment {experiment_name} in {uri} has no parent run")
    parent = max(parents, key=lambda r: r.info.start_time or 0)
    info = _study_info(experiment_name, experiment.experiment_id, parent)
    children = [r for r in ours if r.data.tags[Tag.ROLE] != Role.PARENT]
    notes: list[str] = []
    frame = _runs_frame(children, info.settings, notes)
    trials = [r for r in children if r.data.tags[Tag.ROLE] == Role.TRIAL]
    return client, info, trials, frame, notes


def fetch_study(experiment_name: str, tracking_uri: str | None = None) -> StudyData:
    """Everything the report shows about one study: runs, histories, artifacts. Raises
    ReportError when the store cannot be read or has no such study."""
    client, info, trials, runs, notes = _read(experiment_name, tracking_uri)
    scheme = urlparse(tracking_uri or mlflow.get_tracking_uri()).scheme
    history = histories(client, trials, remote=scheme in ("http", "https", "databricks"))
    lr_traces, layers = artifacts(client, trials, runs, notes)
    return StudyData(info, runs, history, lr_traces, layers, notes)


def _search_all(client: MlflowClient, experiment_id: str) -> list[Run]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs += page
        if not (token := page.token):
            return runs


# Parent tags the report cannot do without (docs/tracking.md); a store that lacks one was
# written before them and is refused rather than guessed at.
REQUIRED_TAGS = (Tag.SETTINGS, Tag.MODEL, Tag.MODEL_FACTORS, Tag.SEEDS, Tag.EXPECTED_TRIALS,
                 Tag.PLANNED)  # fmt: skip


def _study_info(name: str, experiment_id: str, parent: Run) -> StudyInfo:
    params, tags = parent.data.params, parent.data.tags
    missing = [t for t in REQUIRED_TAGS if t not in tags]
    if missing:
        raise ReportError(
            f"the parent run of {name} lacks the tag{'s' * (len(missing) > 1)} "
            f"{', '.join(missing)}: the store was written by an older ablate; run the study "
            "again with this one"
        )
    target = tags.get(Tag.TARGET_CI)
    return StudyInfo(
        name=name,
        experiment_id=experiment_id,
        parent_run_id=parent.info.run_id,
        parent_status=parent.info.status,
        question=params.get("question") or tags.get(Tag.NOTE, ""),
        dataset=params.get("dataset", ""),
        reference=parse_json(params.get("reference"), {}),
        factors=parse_json(params.get("factors"), []),
        seeds=parse_json(tags[Tag.SEEDS], []),
        planned=parse_json(tags[Tag.PLANNED], {}),
        preset=params.get("preset", ""),
        fingerprint=tags.get(Tag.FINGERPRINT, ""),
        expected_trials=_int_or_none(tags[Tag.EXPECTED_TRIALS]),
        git_commit=tags.get(Tag.GIT_COMMIT, ""),
        git_dirty=tags.get(Tag.GIT_DIRTY, ""),
        settings={str(k): str(v) for k, v in parse_json(tags[Tag.SETTINGS], {}).items()},
        replication=tags.get(Tag.REPLICATION, ""),
        full_dataset=params.get("full_dataset", ""),
        full_iterations=_int_or_none(params.get("full_iterations")),
        model=tags[Tag.MODEL],
        model_factors=parse_json(tags[Tag.MODEL_FACTORS], []),
        target_ci=float(target) if target else None,
        max_seeds=_int_or_none(tags.get(Tag.MAX_SEEDS)),
    )


def _runs_frame(runs: list[Run], types: dict[str, str], notes: list[str]) -> pd.DataFrame:
    rows, untyped = [], set()
    for run in runs:
        tags = run.data.tags
        row: dict[str, Any] = {
            "run_id": run.info.run_id,
            "role": tags.get(Tag.ROLE),
            "arm": tags.get(Tag.ARM, ""),
            "trial_key": tags.get(Tag.TRIAL_KEY, run.info.run_id),
            "status": tags.get(Tag.STATUS),
            "mlflow_status": run.info.status,
            "diverged_at": _int_or_none(tags.get(Tag.DIVERGED_AT)),
            "reason": tags.get(Tag.ERROR, ""),
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
    return pd.DataFrame(rows) if rows else empty_runs()


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(float(text)) if text is not None else None
    except ValueError:
        return None


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def histories(client: MlflowClient, runs: list[Run], remote: bool) -> pd.DataFrame:
    """Long frame of the plotted metrics' histories (run_id, key, step, value)."""
    run_ids = [run.info.run_id for run in runs]
    rows = _bulk_histories(client, run_ids)
    if rows is None:
        rows = _per_run_histories(client, run_ids, remote)
    # Each point is logged once (docs/tracking.md); a trial resumed into a new run is
    # joined up by trial in reports.study.
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])


Rows = list[tuple[str, str, int, float]]
# Runs per bulk query, as the tracking server's get-history-bulk endpoint allows.
BULK_RUNS = 100
# The SQL store applies no page size of its own; this only guards against truncation.
BULK_LIMIT = 50_000_000


def _bulk_histories(client: MlflowClient, run_ids: list[str]) -> Rows | None:
    """Histories in one SQL query per 100 runs and key, or None where the store cannot.

    MlflowClient's one-run-one-key get_metric_history took 5.4 s for a 500-run study on a
    busy 2-core machine, this path 1.6 s. The SQL store's get_metric_history_bulk (behind
    the MLflow UI's charts) is reached through the client's private `_tracking_client`, so
    this path is optional and falls back to the public API; test_reports_mlflow pins that
    both agree."""
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    bulk = getattr(store, "get_metric_history_bulk", None)
    if bulk is None:
        return None
    rows: Rows = []
    try:
        for key in HISTORY_METRICS:
            for i in range(0, len(run_ids), BULK_RUNS):
                metrics = bulk(run_ids[i : i + BULK_RUNS], key, BULK_LIMIT)
                if len(metrics) >= BULK_LIMIT:
                    return None
                rows.extend((m.run_id, key, m.step, m.value) for m in metrics)
    except (TypeError, NotImplementedError, MlflowException):
        return None
    return rows


def _per_run_histories(client: MlflowClient, run_ids: list[str], remote: bool) -> Rows:
    """The public API: one call per run and key. Against a tracking server the calls
    wait on the network, so they run in threads; on SQLite threads only add lock
    contention (measured 3.0 s vs 2.6 s sequential for 1000 calls)."""
    jobs = [(run_id, key) for run_id in run_ids for key in HISTORY_METRICS]

    def one(job: tuple[str, str]) -> Rows:
        run_id, key = job
        return [(run_id, key, m.step, m.value) for m in client.get_metric_history(run_id, key)]

    if remote and len(jobs) > 1:
        with ThreadPoolExecutor(max_workers=8) as pool:
            parts = list(pool.map(one, jobs))
    else:
        parts = [one(job) for job in jobs]
    return [row for part in parts for row in part]


def read_json_artifact(client: MlflowClient, run: Run, path: str) -> Any:
    """A run's JSON artifact, or None when it is absent. Local artifact stores are read in
    place (a download per run costs about 9 ms; 500 runs add seconds)."""
    location = urlparse(run.info.artifact_uri)
    if location.scheme in ("", "file"):
        local = Path(url2pathname(location.path)) / path
        if not local.is_file():
            return None
        return json.loads(local.read_text())
    # MLflow draws a progress bar per download; hundreds of them bury the CLI's output.
    # patch.dict restores the variable, or its absence, afterwards.
    quiet = mock.patch.dict(os.environ, {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
    with quiet, tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run.info.run_id, path, tmp)
        except (MlflowException, OSError):
            return None
        return json.loads(Path(local).read_text())


def _lr_trace_runs(runs: list[Run], frame: pd.DataFrame) -> list[Run]:
    """A few runs per distinct LR setting, finished ones first."""
    by_id = {r.info.run_id: r for r in runs}
    trials = frame[frame["run_id"].isin(by_id)]
    trials = trials.assign(_order=trials["status"] != "finished").sort_values(
        ["_order", "start_time"]
    )
    chosen = []
    for _, group in trials.groupby([trials[k].astype(str) for k in LR_SETTINGS]):
        policy = str(group["lr_policy"].iloc[0])
        # One per arm at most, so plateau traces come from different arms.
        group = group.drop_duplicates("arm")
        chosen.extend(group["run_id"].head(LR_TRACES_PER_SETTING.get(policy, 1)))
    return [by_id[i] for i in chosen]


def artifacts(
    client: MlflowClient, runs: list[Run], frame: pd.DataFrame, notes: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    lr_rows: list[tuple[str, int, float]] = []
    for run in _lr_trace_runs(runs, frame):
        trace = _safe_read(client, run, "lr_trace.json", notes)
        if trace:
            pairs = zip(trace["iteration"], trace["lr"], strict=True)
            lr_rows += [(run.info.run_id, int(i), float(v)) for i, v in pairs]
    finished = set(frame.loc[frame["status"] == "finished", "run_id"])
    layer_rows: list[tuple[str, int, str, float]] = []
    missing = 0
    for run in (r for r in runs if r.info.run_id in finished):
        responses = _safe_read(client, run, "layer_responses.json", notes)
        if not responses:
            missing += 1
            continue
        pairs = zip(responses["names"], responses["std"], strict=True)
        layer_rows += [(run.info.run_id, i, n, float(std)) for i, (n, std) in enumerate(pairs, 1)]
    if missing and layer_rows:  # a model that records none has no layer responses to miss
        notes.append(f"{missing} finished trials have no readable layer_responses.json")
    return (
        pd.DataFrame(lr_rows, columns=["run_id", "iteration", "lr"]),
        pd.DataFrame(layer_rows, columns=["run_id", "layer", "name", "std"]),
    )


def _safe_read(client: MlflowClient, run: Run, path: str, notes: list[str]) -> Any:
    try:
        value = read_json_artifact(client, run, path)
    except (ValueError, OSError) as error:
        notes.append(f"{path} of run {run.info.run_id} is unreadable: {first_line(error)}")
        return None
    return value
