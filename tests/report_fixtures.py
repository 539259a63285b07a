"""Synthetic ablate studies written to a real MLflow store, following docs/tracking.md.

The runner in ablations/ writes the real thing; this writer lets the reports be tested
(and benchmarked) without training anything. Curves are made up but shaped like the
paper's Fig. 6: deeper plain nets end with a higher training error, deeper residual
nets with a lower one. Every value is a pure function of the trial's settings and seed,
so tests can recompute what they expect.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from reports.data import FINAL_METRICS, StudyData, StudyInfo, empty_runs, parse_param

# The paper's CIFAR-10 recipe (PAPER.md section 4), shortened: tests want seconds.
BASE_SETTINGS: dict[str, Any] = {
    "depth": 20,
    "shortcut": "A",
    "skip_length": 2,
    "bottleneck": False,
    "preactivation": False,
    "stem": "cifar",
    "width": 16,
    "num_classes": 10,
    "in_channels": 3,
    "dataset": "cifar10",
    "iterations": 2000,
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 0.0001,
    "lr_policy": "step",
    "warmup": "none",
    "warmup_lr": 0.01,
    "plateau_patience": 5,
    "eval_every": 200,
    "val_size": 5000,
    "seed": 0,
}


UNENDED = ("running", "interrupted")
MLFLOW_STATUS = {"failed": "FAILED", "running": "RUNNING", "interrupted": "KILLED"}


@dataclass
class TrialSpec:
    """One child run. `settings` overrides BASE_SETTINGS (factors, seed and the rest)."""

    settings: dict[str, Any]
    # finished | diverged | failed | running | interrupted (tag running, MLflow KILLED,
    # as the runner leaves a trial stopped by Ctrl-C until it resumes it)
    status: str = "finished"
    role: str = "trial"  # trial | tune
    diverged_at: int | None = None
    error: str | None = None
    # Evaluation points actually logged: a failed or running trial stops early.
    stop_at: int | None = None
    # Replace these final metric values (e.g. NaN) to exercise edge cases.
    final_override: dict[str, float] = field(default_factory=dict)
    with_artifacts: bool = True


@dataclass
class StudySpec:
    name: str
    question: str
    factors: list[str]
    reference: dict[str, Any]
    seeds: list[int]
    trials: list[TrialSpec]
    dataset: str = "cifar10"
    preset: str = "default"
    expected_trials: int | None = None
    parent_status: str = "FINISHED"


def resolved(trial: TrialSpec) -> dict[str, Any]:
    settings = {**BASE_SETTINGS, **trial.settings}
    if settings["bottleneck"] and "skip_length" not in trial.settings:
        settings["skip_length"] = 3
    settings["params"] = _param_count(settings)
    settings["macs"] = settings["params"] * 150
    return settings


def arm_label(settings: Mapping[str, Any], factors: list[str]) -> str:
    return " ".join(f"{name}={settings[name]}" for name in factors)


def _param_count(settings: Mapping[str, Any]) -> int:
    # Not the real count (resnet/ owns that); monotone in depth, as reports expect.
    extra = (
        0
        if settings["shortcut"] in ("none", "A")
        else 5_000 * (2 if settings["shortcut"] == "B" else 9)
    )
    return 269_722 + 16_202 * (int(settings["depth"]) - 20) + extra


def final_errors(settings: Mapping[str, Any]) -> tuple[float, float]:
    """(train, test) error at the end, shaped like the paper: plain degrades with depth."""
    depth = int(settings["depth"])
    seed = int(settings["seed"])
    noise = np.random.default_rng(1000 + seed * 7 + depth).normal(0.0, 0.004, size=2)
    if settings["shortcut"] == "none":
        train = 0.05 + 0.0025 * (depth - 20)
        test = train + 0.04
    else:
        shift = {"A": 0.0, "B": -0.003, "C": -0.004}.get(str(settings["shortcut"]), 0.0)
        train = 0.04 - 0.0002 * (depth - 20) + shift
        test = 0.085 - 0.0002 * (depth - 20) + shift
    return float(train + noise[0]), float(test + noise[1])


def curves(settings: Mapping[str, Any]) -> dict[str, list[tuple[int, float]]]:
    """Every metric at every evaluation point: {key: [(iteration, value), ...]}."""
    iterations = int(settings["iterations"])
    every = int(settings["eval_every"])
    steps = list(range(every, iterations + 1, every))
    if steps[-1] != iterations:
        steps.append(iterations)
    train_end, test_end = final_errors(settings)
    out: dict[str, list[tuple[int, float]]] = {}
    rate = 5.0 / iterations
    for key, end, start in (
        ("train/error", train_end, 0.9),
        ("val/error", test_end - 0.002, 0.9),
        ("test/error", test_end, 0.9),
    ):
        values = [(s, end + (start - end) * math.exp(-rate * s)) for s in steps]
        # Pin the last point so final_errors() is exactly what MLflow holds at the end.
        values[-1] = (steps[-1], end)
        out[key] = values
    for key, src in (
        ("train/loss", "train/error"),
        ("val/loss", "val/error"),
        ("test/loss", "test/error"),
    ):
        out[key] = [(s, 3.0 * v) for s, v in out[src]]
    out["lr"] = [(s, lr_at(settings, s)) for s in steps]
    out["images_per_s"] = [(s, 1500.0 * 20 / int(settings["depth"])) for s in steps]
    return out


def lr_at(settings: Mapping[str, Any], iteration: int) -> float:
    trace = lr_trace(settings)
    lr = trace["lr"][0]
    for it, value in zip(trace["iteration"], trace["lr"], strict=True):
        if it <= iteration:
            lr = value
    return lr


def lr_trace(settings: Mapping[str, Any]) -> dict[str, list]:
    iterations = int(settings["iterations"])
    lr = float(settings["lr"])
    policy = settings["lr_policy"]
    points: list[tuple[int, float]] = []
    start = 0
    if settings["warmup"] not in ("none", None):
        warm = 400 if settings["warmup"] == "paper" else int(settings["warmup"])
        points.append((0, float(settings["warmup_lr"])))
        start = warm
    if policy == "step":
        # The paper's 32k/48k of 64k, scaled to this run's length.
        points += [(start, lr), (iterations // 2, lr / 10), (iterations * 3 // 4, lr / 100)]
    elif policy == "cosine":
        for it in range(start, iterations, max(1, iterations // 20)):
            frac = (it - start) / max(1, iterations - start)
            points.append((it, 0.5 * lr * (1 + math.cos(math.pi * frac))))
    else:
        points.append((start, lr))
    points.append((iterations, points[-1][1]))
    return {"iteration": [p[0] for p in points], "lr": [p[1] for p in points]}


def layer_responses(settings: Mapping[str, Any]) -> dict[str, list]:
    depth = int(settings["depth"])
    layers = depth - 1  # every 3x3 conv; the final linear layer has no BN
    rng = np.random.default_rng(int(settings["seed"]) + depth)
    if settings["shortcut"] == "none":
        std = 1.0 + 0.3 * rng.random(layers)
    else:
        std = (0.9 - 0.3 * depth / 110) * (0.5 + rng.random(layers))
    names = [f"layer{i + 1}.bn" for i in range(layers)]
    return {"names": names, "std": [float(x) for x in std]}


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
        tags={
            "ablate.role": "parent",
            "ablate.study": spec.name,
            "mlflow.note.content": spec.question,
            "ablate.fingerprint": "sha256:" + hashlib.sha256(spec.name.encode()).hexdigest(),
        },
    )
    parent_id = parent.info.run_id
    params = {
        "question": spec.question,
        "dataset": spec.dataset,
        "reference": json.dumps(spec.reference),
        "factors": json.dumps(spec.factors),
        "seeds": json.dumps(spec.seeds),
        "preset": spec.preset,
    }
    if spec.expected_trials is not None:
        params["expected_trials"] = str(spec.expected_trials)
    client.log_batch(parent_id, params=[Param(k, v) for k, v in params.items()])
    with tempfile.TemporaryDirectory() as tmp:
        for index, trial in enumerate(spec.trials):
            _write_trial(client, exp_id, parent_id, spec, trial, t0 + index, Path(tmp))
    if spec.parent_status != "RUNNING":
        client.set_terminated(parent_id, status=spec.parent_status)
    return exp_id


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
    }
    tags["ablate.status"] = "running" if trial.status in UNENDED else trial.status
    if trial.status == "diverged":
        tags["ablate.diverged_at"] = str(trial.diverged_at)
    if trial.status == "failed":
        tags["ablate.error"] = trial.error or "failed"
    run = client.create_run(
        exp_id, start_time=start_ms, tags=tags, run_name=tags["ablate.trial_key"]
    )
    run_id = run.info.run_id

    metrics: list[Metric] = []
    stop = trial.stop_at
    if trial.status == "diverged":
        stop = trial.diverged_at
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
    if trial.status not in UNENDED:
        wall = 0.02 * int(settings["depth"]) * last_step / 10
        metrics.append(Metric("wall_time_s", wall, start_ms + last_step + 2, last_step))
    # log_batch takes at most 1000 metrics per call.
    for i in range(0, len(metrics), 1000):
        client.log_batch(
            run_id,
            metrics=metrics[i : i + 1000],
            params=[Param(k, str(v)) for k, v in settings.items()] if i == 0 else (),
            tags=(),
        )
    if trial.with_artifacts:
        folder = tmp / run_id
        folder.mkdir()
        (folder / "trial_config.json").write_text(json.dumps(settings))
        (folder / "lr_trace.json").write_text(json.dumps(lr_trace(settings)))
        if trial.status == "finished":
            (folder / "layer_responses.json").write_text(json.dumps(layer_responses(settings)))
        client.log_artifacts(run_id, str(folder))
    if trial.status != "running":
        client.set_terminated(run_id, status=MLFLOW_STATUS.get(trial.status, "FINISHED"))
    return run_id


def grid_trials(
    factors: dict[str, list[Any]], seeds: list[int], fixed: dict[str, Any] | None = None
) -> list[TrialSpec]:
    """Every combination of factor levels x seeds, all finished."""
    combos: list[dict[str, Any]] = [{}]
    for name, levels in factors.items():
        combos = [{**c, name: level} for c in combos for level in levels]
    return [
        TrialSpec(settings={**(fixed or {}), **combo, "seed": seed})
        for combo in combos
        for seed in seeds
    ]


def complete_study() -> StudySpec:
    """A finished smoke study on `digits` (no paper numbers apply): depth x shortcut."""
    trials = grid_trials(
        {"depth": [8, 14], "shortcut": ["none", "A"]},
        seeds=[0, 1, 2],
        fixed={
            "dataset": "digits",
            "num_classes": 10,
            "in_channels": 1,
            "iterations": 600,
            "eval_every": 100,
        },
    )
    return StudySpec(
        name="degradation@smoke",
        question=(
            "Does a deeper plain net train worse than a shallower one, and do shortcuts fix it?"
        ),
        factors=["depth", "shortcut"],
        reference={"shortcut": "A"},
        seeds=[0, 1, 2],
        trials=trials,
        dataset="digits",
        preset="smoke",
        expected_trials=len(trials),
    )


def partial_study() -> StudySpec:
    """CIFAR-10 shortcut study, cut off mid-way, with every kind of trouble in it:
    a diverged trial, a failed trial, a failed attempt that was retried, a running
    trial, two missing trials, a NaN final metric and a tuning run that must be ignored."""
    fixed = {"dataset": "cifar10"}
    trials = grid_trials(
        {"depth": [20, 56], "shortcut": ["none", "A", "B"]}, seeds=[0, 1, 2], fixed=fixed
    )
    by_key = {(t.settings["depth"], t.settings["shortcut"], t.settings["seed"]): t for t in trials}
    by_key[(56, "none", 2)].status = "diverged"
    by_key[(56, "none", 2)].diverged_at = 400
    by_key[(56, "B", 1)].status = "failed"
    by_key[(56, "B", 1)].error = "RuntimeError: CUDA out of memory"
    by_key[(56, "B", 1)].stop_at = 600
    by_key[(20, "B", 2)].final_override = {"val/error": float("nan")}
    # A failed first attempt of a trial that later finished: the report keeps the finished one.
    retried = TrialSpec(
        settings={**fixed, "depth": 20, "shortcut": "A", "seed": 0},
        status="failed",
        error="preempted",
        stop_at=400,
    )
    running = by_key[(56, "A", 2)]
    running.status = "running"
    running.stop_at = 1000
    interrupted = by_key[(20, "none", 2)]
    interrupted.status = "interrupted"
    interrupted.stop_at = 800
    missing = [(56, "B", 2)]
    kept = [t for k, t in by_key.items() if k not in missing]
    tune = TrialSpec(
        settings={**fixed, "depth": 20, "shortcut": "A", "seed": 99, "lr": 0.05}, role="tune"
    )
    return StudySpec(
        name="shortcut_types",
        question=(
            "Do projection shortcuts (B) beat zero-padding shortcuts (A), "
            "and does either fix degradation?"
        ),
        factors=["depth", "shortcut"],
        reference={"shortcut": "A"},
        seeds=[0, 1, 2],
        trials=[retried, *kept, tune],
        dataset="cifar10",
        # One more arm was planned (depth 110) and has not started: 3 more missing.
        expected_trials=len(trials) + 3,
        parent_status="RUNNING",
    )


def study_data(spec: StudySpec) -> StudyData:
    """The StudyData that reports.fetch would return for `spec`, built without MLflow:
    fixture frames for report-logic tests (test_reports_mlflow checks they agree)."""
    info = StudyInfo(
        name=spec.name,
        experiment_id="1",
        parent_run_id="parent",
        parent_status=spec.parent_status,
        question=spec.question,
        dataset=spec.dataset,
        reference=dict(spec.reference),
        factors=list(spec.factors),
        seeds=list(spec.seeds),
        preset=spec.preset,
        fingerprint="sha256:" + hashlib.sha256(spec.name.encode()).hexdigest(),
        expected_trials=spec.expected_trials,
    )
    rows, history, traces, layers = [], [], [], []
    for index, trial in enumerate(spec.trials):
        settings = resolved(trial)
        run_id = f"run{index:04d}"
        arm = arm_label(settings, spec.factors)
        stop = trial.diverged_at if trial.status == "diverged" else trial.stop_at
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
        last = max(s for s, _ in curves(settings)["train/error"] if stop is None or s <= stop)
        if trial.status not in UNENDED:
            finals["wall_time_s"] = 0.02 * int(settings["depth"]) * last / 10
        row = {
            "run_id": run_id,
            "role": trial.role,
            "arm": arm,
            "trial_key": f"{arm} seed={settings['seed']}",
            "status": "running" if trial.status in UNENDED else trial.status,
            "mlflow_status": MLFLOW_STATUS.get(trial.status, "FINISHED"),
            "diverged_at": trial.diverged_at,
            "reason": (trial.error or "failed") if trial.status == "failed" else "",
            "start_time": index,
            **{k: parse_param(k, str(v)) for k, v in settings.items()},
            **{k: v for k, v in finals.items() if k in FINAL_METRICS},
        }
        rows.append(row)
        if not trial.with_artifacts or trial.role != "trial":
            continue
        trace = lr_trace(settings)
        traces += [(run_id, i, lr) for i, lr in zip(trace["iteration"], trace["lr"], strict=True)]
        if trial.status == "finished":
            resp = layer_responses(settings)
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
