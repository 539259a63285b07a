"""Synthetic ablate studies written to a real MLflow store, following docs/tracking.md.

The pipeline in ablations/ writes the real thing; this writer lets the reports be tested
(and benchmarked) without training anything. The numbers come from report_synthetic:
every value is a pure function of the trial's settings and seed, so tests can recompute
what they expect.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

# Re-exported: the tests reach the studies and their numbers as rf.complete_study(),
# rf.final_errors(...) and so on.
from report_synthetic import (  # noqa: F401
    COMMIT,
    DATA_ERROR,
    DEVICE,
    MLFLOW_STATUS,
    NOT_ENDED,
    RECIPE,
    RESNET,
    RESNET_MODEL,
    USER_MODEL,
    USER_SETTINGS,
    VERSIONS,
    StudySpec,
    TrialSpec,
    adaptive_study,
    arm_label,
    complete_study,
    curves,
    data_digest,
    expected_trials,
    failed_study,
    final_errors,
    fingerprint,
    full_study,
    grid_trials,
    last_point,
    layer_responses,
    lr_at,
    lr_trace,
    model_factors,
    param_count,
    parent_tags,
    partial_study,
    planned,
    resolved,
    setting_types,
    trial_tags,
    user_model_study,
)

from reports.data import FINAL_METRICS, StudyData, StudyInfo, decode, empty_runs


def _now_ms() -> int:
    return int(time.time() * 1000)


def write_study(tracking_uri: str, spec: StudySpec, artifact_root: Path | None = None) -> str:
    """Write `spec` into the store at `tracking_uri` as docs/tracking.md says; returns the
    experiment id. `artifact_root` keeps artifacts out of the working directory."""
    client = MlflowClient(tracking_uri=tracking_uri)
    location = None
    if artifact_root is not None:
        location = (Path(artifact_root) / spec.name).resolve().as_uri()
    exp_id = client.create_experiment(spec.name, artifact_location=location)
    t0 = _now_ms()
    parent = client.create_run(
        exp_id,
        start_time=t0,
        run_name=spec.name,
        tags=parent_tags(spec),
    )
    parent_id = parent.info.run_id
    full_dataset, full_iterations = full_study(spec)
    # The params hold the first plan; the tags (parent_tags) the plan as it grew.
    initial = spec.initial_seeds or spec.seeds
    params = {
        "question": spec.question,
        "dataset": spec.dataset,
        "reference": json.dumps(spec.reference),
        "factors": json.dumps(spec.factors),
        "seeds": json.dumps(initial),
        "preset": spec.preset,
        "source": f"built-in study {spec.name.split('@')[0]}",
        "expected_trials": str(len(planned(spec)) * len(initial)),
        "full_dataset": full_dataset,
        "full_iterations": str(full_iterations),
    }
    client.log_batch(parent_id, params=[Param(k, v) for k, v in params.items()])
    with tempfile.TemporaryDirectory() as tmp:
        for index, trial in enumerate(spec.trials):
            _write_trial(client, exp_id, parent_id, spec, trial, t0 + index, Path(tmp))
    if spec.parent_status != "RUNNING":
        client.log_batch(parent_id, metrics=_parent_metrics(spec, t0))
        client.set_terminated(parent_id, status=spec.parent_status)
    return exp_id


def _parent_metrics(spec: StudySpec, t0: int) -> list[Metric]:
    """`mean_test_error/<arm>` and `mean_train_error/<arm>` (step = finished seeds), which
    the report must ignore."""
    finished: dict[str, list[tuple[float, float]]] = {}
    for trial in spec.trials:
        if trial.role == "trial" and trial.status == "finished":
            settings = resolved(trial)
            arm = arm_label(settings, spec.factors).replace("=", ":")
            finished.setdefault(arm, []).append(final_errors(settings))
    out = []
    for arm, errors in finished.items():
        train, test = (float(np.mean(e)) for e in zip(*errors, strict=True))
        out.append(Metric(f"mean_test_error/{arm}", test, t0, len(errors)))
        out.append(Metric(f"mean_train_error/{arm}", train, t0, len(errors)))
    return out


def _write_trial(
    client: MlflowClient,
    exp_id: str,
    parent_id: str,
    spec: StudySpec,
    trial: TrialSpec,
    start_ms: int,
    tmp: Path,
) -> str:
    settings = resolved(trial)
    arm = arm_label(settings, spec.factors)
    tags = {
        "mlflow.parentRunId": parent_id,
        "ablate.role": trial.role,
        "ablate.study": spec.name,
        "ablate.trial_key": f"{arm} seed={settings['seed']}",
        "ablate.arm": arm,
        "ablate.status": trial.status,
        **trial_tags(spec, trial),
    }
    if trial.status != "pending":
        tags["ablate.resumed_from"] = "0"
    if trial.status == "diverged":
        tags["ablate.diverged_at"] = str(trial.diverged_at)
    if trial.status == "failed":
        tags["ablate.error"] = trial.error or "failed"
    run = client.create_run(
        exp_id, start_time=start_ms, tags=tags, run_name=tags["ablate.trial_key"]
    )
    run_id = run.info.run_id

    metrics: list[Metric] = []
    stop = last_point(trial)
    last_step = 0
    for key, points in curves(settings).items():
        for step, value in points:
            if stop is not None and step > stop:
                break
            if trial.status == "diverged" and step == stop and key.endswith("loss"):
                value = float("nan")
            metrics.append(Metric(key, value, start_ms + step, step))
            last_step = max(last_step, step)
    for key, value in trial.final_override.items():
        metrics.append(Metric(key, value, start_ms + last_step + 1, last_step))
    if trial.status not in NOT_ENDED:
        wall = settings["macs"] * last_step / 2e9
        metrics.append(Metric("wall_time_s", wall, start_ms + last_step + 2, last_step))
    # log_batch takes at most 1000 metrics per call.
    for i in range(0, max(1, len(metrics)), 1000):
        client.log_batch(
            run_id,
            metrics=metrics[i : i + 1000],
            params=[Param(k, str(v)) for k, v in settings.items()] if i == 0 else (),
            tags=(),
        )
    if trial.with_artifacts and trial.status != "pending":
        folder = tmp / run_id
        folder.mkdir()
        (folder / "trial_config.json").write_text(json.dumps(settings))
        (folder / "lr_trace.json").write_text(json.dumps(lr_trace(settings)))
        responses = layer_responses(settings)
        if trial.status == "finished" and responses:
            (folder / "layer_responses.json").write_text(json.dumps(responses))
        client.log_artifacts(run_id, str(folder))
    if trial.status == "pending":
        client.update_run(run_id, status="SCHEDULED")
    elif trial.status != "running":
        client.set_terminated(run_id, status=MLFLOW_STATUS.get(trial.status, "FINISHED"))
    return run_id


def study_data(spec: StudySpec) -> StudyData:
    """The StudyData that reports.fetch would return for `spec`, built without MLflow:
    fixture frames for report-logic tests (test_reports_mlflow checks they agree)."""
    full_dataset, full_iterations = full_study(spec)
    types = setting_types(spec)
    info = StudyInfo(
        name=spec.name,
        experiment_id="1",
        parent_run_id="parent",
        parent_status=spec.parent_status,
        question=spec.question,
        dataset=spec.dataset,
        reference=dict(spec.reference),
        factors=list(spec.factors),
        seeds=sorted(spec.seeds),
        planned=planned(spec),
        preset=spec.preset,
        fingerprint=fingerprint(spec),
        expected_trials=expected_trials(spec),
        git_commit=spec.commit,
        git_dirty="false",
        settings=dict(types),
        replication=spec.replication,
        full_dataset=full_dataset,
        full_iterations=full_iterations,
        model=spec.model,
        model_factors=model_factors(spec),
        target_ci=spec.target_ci,
        max_seeds=spec.max_seeds,
    )
    rows, history, traces, layers = [], [], [], []
    for index, trial in enumerate(spec.trials):
        settings = resolved(trial)
        run_id = f"run{index:04d}"
        arm = arm_label(settings, spec.factors)
        stop = last_point(trial)
        finals: dict[str, float] = {}
        for key, points in curves(settings).items():
            kept = [(s, v) for s, v in points if stop is None or s <= stop]
            if trial.status == "diverged" and key.endswith("loss") and kept:
                kept[-1] = (kept[-1][0], float("nan"))
            if kept:
                finals[key] = kept[-1][1]
            if key in ("train/error", "test/error") and trial.role == "trial":
                history += [(run_id, key, s, v) for s, v in kept]
        finals.update(trial.final_override)
        steps = [s for s, _ in curves(settings)["train/error"] if stop is None or s <= stop]
        if trial.status not in NOT_ENDED:
            finals["wall_time_s"] = settings["macs"] * max(steps, default=0) / 2e9
        tags = trial_tags(spec, trial)
        row = {
            "run_id": run_id,
            "role": trial.role,
            "arm": arm,
            "trial_key": f"{arm} seed={settings['seed']}",
            "status": trial.status,
            "mlflow_status": MLFLOW_STATUS.get(trial.status, "FINISHED"),
            "diverged_at": trial.diverged_at,
            "reason": (trial.error or "failed") if trial.status == "failed" else "",
            "start_time": index,
            "git_commit": tags.get("mlflow.source.git.commit", ""),
            "git_dirty": tags.get("ablate.git_dirty", ""),
            "versions": tags.get("ablate.versions", ""),
            "device": tags.get("ablate.device", ""),
            "data_digest": tags.get("ablate.data_digest", ""),
            **{k: decode(types[k], str(v)) for k, v in settings.items()},
            **{k: v for k, v in finals.items() if k in FINAL_METRICS},
        }
        rows.append(row)
        if not trial.with_artifacts or trial.role != "trial" or trial.status == "pending":
            continue
        trace = lr_trace(settings)
        traces += [(run_id, i, lr) for i, lr in zip(trace["iteration"], trace["lr"], strict=True)]
        resp = layer_responses(settings)
        if trial.status == "finished" and resp:
            layers += [
                (run_id, i + 1, n, s)
                for i, (n, s) in enumerate(zip(resp["names"], resp["std"], strict=True))
            ]

    return StudyData(
        info=info,
        runs=pd.DataFrame(rows) if rows else empty_runs(),
        history=pd.DataFrame(history, columns=["run_id", "key", "step", "value"]),
        lr_traces=pd.DataFrame(traces, columns=["run_id", "iteration", "lr"]),
        layer_responses=pd.DataFrame(layers, columns=["run_id", "layer", "name", "std"]),
    )


def seed_errors(spec: StudySpec) -> dict[str, list[float]]:
    """Finished seeds' final test errors in percent by arm, from the fixture's own model."""
    out: dict[str, list[float]] = {}
    for trial in spec.trials:
        if trial.role == "trial" and trial.status == "finished":
            settings = resolved(trial)
            arm = arm_label(settings, spec.factors)
            out.setdefault(arm, []).append(100 * final_errors(settings)[1])
    return out
