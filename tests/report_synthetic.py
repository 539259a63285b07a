"""Synthetic studies for the report tests: the studies themselves (TrialSpec, StudySpec and
the fixture studies), what their parent run records (docs/tracking.md: the settings'
types, the model builder, the plan) and their made-up numbers (settings, final errors,
curves, learning-rate traces and layer responses), each a pure function of a trial's
settings and seed, shaped like the paper's Fig. 6 and 7 (docs/paper.md §5): deeper plain
nets end with a higher training error, deeper residual nets with a lower one.
report_fixtures writes them to MLflow or builds the frames reports.fetch would return."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RESNET = "resnet.spec:resnet"
# The built-in ResNet builder's settings (its factors), at the paper's CIFAR-10 net.
RESNET_MODEL: dict[str, Any] = {
    "depth": 20,
    "shortcut": "A",
    "skip_length": 2,
    "bottleneck": False,
    "preactivation": False,
    "stem": "cifar",
    "width": 16,
}
# A user's own builder (`ablate.model` mymodels.se:build): a width and a gate.
USER_MODEL = "mymodels.se:build"
USER_SETTINGS: dict[str, Any] = {"width": 16, "gate": False}
# The paper's CIFAR-10 recipe (docs/paper.md §4), shortened: tests want seconds.
RECIPE: dict[str, Any] = {
    "dataset": "cifar10",
    "val_size": 5000,
    "iterations": 2000,
    "batch_size": 128,
    "bn_batch": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 0.0001,
    "lr_policy": "step",
    "warmup": "none",
    "warmup_lr": 0.01,
    # Unset (written as the text None): the step policy has no patience.
    "plateau_patience": None,
    "eval_every": 200,
    "precision": "fp32",
    # A setting no list in reports/ knows: only `ablate.settings` says it is a float.
    "label_smoothing": 0.0,
    "seed": 0,
    # From the data, not chosen (docs/tracking.md).
    "num_classes": 10,
    "in_channels": 3,
}
# Types of what the values above cannot say: unset settings, and params only some runs
# record (docs/tracking.md: tuned_from, for seeds run at a tuned point).
EXTRA_TYPES = {"plateau_patience": "int", "tuned_from": "str", "params": "int", "macs": "int"}


COMMIT = "3f5e2a9c0b1d4e6f8a7b9c0d1e2f3a4b5c6d7e8f"
VERSIONS = {
    "ablate": "0.1.0",
    "python": "3.11.7",
    "torch": "2.5.1",
    "cuda": "none",
    "ray": "2.40.0",
    "mlflow": "3.1.0",
}
DEVICE = "cpu (2 threads)"


def data_digest(dataset: str) -> str:
    return hashlib.sha256(f"data:{dataset}".encode()).hexdigest()[:16]


def arm_label(settings: Mapping[str, Any], factors: list[str]) -> str:
    return " ".join(f"{name}={settings[name]}" for name in factors)


def is_resnet(settings: Mapping[str, Any]) -> bool:
    return "shortcut" in settings


def param_count(settings: Mapping[str, Any]) -> int:
    # Not the real count (resnet/ owns that); monotone in depth and width, as reports expect.
    if not is_resnet(settings):
        return 50_000 * int(settings["width"]) + (3_000 if settings["gate"] else 0)
    extra = (
        0
        if settings["shortcut"] in ("none", "A")
        else 5_000 * (2 if settings["shortcut"] == "B" else 9)
    )
    return 269_722 + 16_202 * (int(settings["depth"]) - 20) + extra


def final_errors(settings: Mapping[str, Any]) -> tuple[float, float]:
    """(train, test) error at the end, shaped like the paper: plain degrades with depth.
    A user's model: wider is better, and the gate helps only the narrow one."""
    seed = int(settings["seed"])
    if not is_resnet(settings):
        width = int(settings["width"])
        noise = np.random.default_rng(2000 + seed * 7 + width).normal(0.0, 0.004, size=2)
        test = 0.12 - 0.001 * width - (0.03 if settings["gate"] and width <= 16 else 0.0)
        return float(test - 0.03 + noise[0]), float(test + noise[1])
    depth = int(settings["depth"])
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
    out["images_per_s"] = [(s, 1500.0 * 269_722 / int(settings["params"])) for s in steps]
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


def layer_responses(settings: Mapping[str, Any]) -> dict[str, list] | None:
    """The paper's Fig. 7 responses of a ResNet; a user's model records none."""
    if not is_resnet(settings):
        return None
    depth = int(settings["depth"])
    layers = depth - 1  # every 3x3 conv; the final linear layer has no BN
    rng = np.random.default_rng(int(settings["seed"]) + depth)
    if settings["shortcut"] == "none":
        std = 1.0 + 0.3 * rng.random(layers)
    else:
        std = (0.9 - 0.3 * depth / 110) * (0.5 + rng.random(layers))
    names = [f"layer{i + 1}.bn" for i in range(layers)]
    return {"names": names, "std": [float(x) for x in std]}


NOT_ENDED = ("running", "interrupted", "pending")
MLFLOW_STATUS = {
    "failed": "FAILED",
    "running": "RUNNING",
    "interrupted": "KILLED",
    "pending": "SCHEDULED",
}


@dataclass
class TrialSpec:
    """One child run. `settings` overrides `model` (the builder's settings) and RECIPE
    (factors, seed and the rest)."""

    settings: dict[str, Any]
    model: dict[str, Any] = field(default_factory=lambda: dict(RESNET_MODEL))
    # finished | diverged | failed | running | interrupted (MLflow KILLED) | pending
    # (MLflow SCHEDULED: recorded with its params, never started)
    status: str = "finished"
    role: str = "trial"  # trial | tune
    diverged_at: int | None = None
    error: str | None = None
    # Evaluation points actually logged: a failed or running trial stops early.
    stop_at: int | None = None
    # Replace these final metric values (e.g. NaN) to exercise edge cases.
    final_override: dict[str, float] = field(default_factory=dict)
    with_artifacts: bool = True
    # Reproducibility tags; None takes the study's (or the data set's) value.
    commit: str | None = None
    dirty: bool = False
    device: str = DEVICE
    digest: str | None = None
    versions: dict[str, str] = field(default_factory=lambda: dict(VERSIONS))


@dataclass
class StudySpec:
    name: str
    question: str
    factors: list[str]
    reference: dict[str, Any]
    seeds: list[int]  # every seed planned now (`ablate.seeds`)
    trials: list[TrialSpec]
    dataset: str = "cifar10"
    preset: str = ""
    # The plan by arm (`ablate.planned`); None: the arms and seeds of the trial runs.
    planned: dict[str, list[int]] | None = None
    # The first plan (the params `seeds`, `expected_trials`); None: the plan as it is now.
    initial_seeds: list[int] | None = None
    parent_status: str = "FINISHED"
    # The full study a preset reduces; None: this run's own data set and iterations.
    full_dataset: str | None = None
    full_iterations: int | None = None
    replication: str = "fixed seeds"
    commit: str = COMMIT
    model: str = RESNET
    target_ci: float | None = None
    max_seeds: int | None = None


def model_factors(spec: StudySpec) -> list[str]:
    return list(RESNET_MODEL if spec.model == RESNET else USER_SETTINGS)


def planned(spec: StudySpec) -> dict[str, list[int]]:
    if spec.planned is not None:
        return spec.planned
    out: dict[str, list[int]] = {}
    for trial in spec.trials:
        if trial.role == "trial":
            seeds = out.setdefault(arm_label(resolved(trial), spec.factors), [])
            seeds += [] if trial.settings["seed"] in seeds else [trial.settings["seed"]]
    return {arm: sorted(seeds) for arm, seeds in out.items()}


def expected_trials(spec: StudySpec) -> int:
    return sum(len(seeds) for seeds in planned(spec).values())


def setting_types(spec: StudySpec) -> dict[str, str]:
    """The parent's `ablate.settings`: the type of every param a child run records."""
    types = dict(EXTRA_TYPES)
    for trial in spec.trials:
        for name, value in resolved(trial).items():
            if value is not None and name not in EXTRA_TYPES:
                types[name] = {bool: "bool", int: "int", float: "float"}.get(type(value), "str")
    return types


def parent_tags(spec: StudySpec) -> dict[str, str]:
    """Every tag of the parent run (docs/tracking.md)."""
    tags = {
        "ablate.role": "parent",
        "ablate.study": spec.name,
        "mlflow.note.content": spec.question,
        "ablate.fingerprint": fingerprint(spec),
        "ablate.replication": spec.replication,
        "ablate.settings": json.dumps(setting_types(spec)),
        "ablate.model": spec.model,
        "ablate.model_factors": json.dumps(model_factors(spec)),
        "ablate.seeds": json.dumps(sorted(spec.seeds)),
        "ablate.expected_trials": str(expected_trials(spec)),
        "ablate.planned": json.dumps(planned(spec)),
        "mlflow.source.git.commit": spec.commit,
        "ablate.git_dirty": "false",
        "ablate.version": VERSIONS["ablate"],
        "mlflow.source.name": f"ablate run {spec.name}",
        "mlflow.source.type": "LOCAL",
    }
    if spec.target_ci is not None:
        tags["ablate.target_ci"] = str(spec.target_ci)
        tags["ablate.max_seeds"] = str(spec.max_seeds)
    return tags


def fingerprint(spec: StudySpec) -> str:
    return "sha256:" + hashlib.sha256(spec.name.encode()).hexdigest()


def full_study(spec: StudySpec) -> tuple[str, int]:
    """(full_dataset, full_iterations) as the parent records them."""
    iterations = max((int(resolved(t)["iterations"]) for t in spec.trials), default=0)
    return (
        spec.full_dataset or spec.dataset,
        spec.full_iterations if spec.full_iterations is not None else iterations,
    )


def trial_tags(spec: StudySpec, trial: TrialSpec) -> dict[str, str]:
    """The reproducibility tags of a trial that started (a pending one has none)."""
    if trial.status == "pending":
        return {}
    settings = resolved(trial)
    return {
        "mlflow.source.git.commit": trial.commit or spec.commit,
        "ablate.git_dirty": "true" if trial.dirty else "false",
        "ablate.versions": json.dumps(trial.versions),
        "ablate.device": trial.device,
        "ablate.data_digest": trial.digest or data_digest(settings["dataset"]),
    }


def resolved(trial: TrialSpec) -> dict[str, Any]:
    """Every param the trial records, resolved as the runner records it."""
    settings = {**trial.model, **RECIPE, **trial.settings}
    if settings.get("bottleneck") and "skip_length" not in trial.settings:
        settings["skip_length"] = 3
    settings["params"] = param_count(settings)
    settings["macs"] = settings["params"] * 150
    return settings


def last_point(trial: TrialSpec) -> int | None:
    """The last evaluation point logged: a pending trial logs none."""
    if trial.status == "pending":
        return 0
    if trial.status == "diverged":
        return trial.diverged_at
    return trial.stop_at


def grid_trials(
    factors: dict[str, list[Any]],
    seeds: list[int],
    fixed: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
) -> list[TrialSpec]:
    """Every combination of factor levels x seeds, all finished; `model`: the builder's
    settings (default: the ResNet's)."""
    combos: list[dict[str, Any]] = [{}]
    for name, levels in factors.items():
        combos = [{**c, name: level} for c in combos for level in levels]
    return [
        TrialSpec(
            settings={**(fixed or {}), **combo, "seed": seed},
            model=dict(model if model is not None else RESNET_MODEL),
        )
        for combo in combos
        for seed in seeds
    ]


def complete_study() -> StudySpec:
    """A finished smoke study on `digits` (no paper numbers apply): depth x shortcut. It is
    the smoke preset of a CIFAR-10 study of 64k iterations: a reduced run."""
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
        full_dataset="cifar10",
        full_iterations=64_000,
    )


def partial_study() -> StudySpec:
    """CIFAR-10 shortcut study, cut off mid-way, with every kind of trouble in it:
    a diverged trial, a failed trial, a failed attempt that was retried, a running, an
    interrupted and a pending trial, three missing trials, a NaN final metric and a
    tuning run that must be ignored. 4000 iterations: not reduced by the 5% rule."""
    fixed = {"dataset": "cifar10", "iterations": 4000}
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
    by_key[(56, "B", 2)].status = "pending"
    tune = TrialSpec(
        settings={**fixed, "depth": 20, "shortcut": "A", "seed": 99, "lr": 0.05}, role="tune"
    )
    spec = StudySpec(
        name="shortcut_types",
        question=(
            "Do projection shortcuts (B) beat zero-padding shortcuts (A), "
            "and does either fix degradation?"
        ),
        factors=["depth", "shortcut"],
        reference={"shortcut": "A"},
        seeds=[0, 1, 2],
        trials=[retried, *by_key.values(), tune],
        dataset="cifar10",
        parent_status="RUNNING",
    )
    # One more arm was planned (depth 110) and has no runs in this store: 3 missing.
    spec.planned = {**planned(spec), "depth=110 shortcut=A": [0, 1, 2]}
    return spec


# A failure whose advice sits after a long path: the report must show all of it.
DATA_ERROR = (
    "DataError: cifar10 not found in /srv/shared/datasets/cache/torchvision/"
    "cifar-10-batches-py/nested/deeper/still/and/deeper/data: download it with "
    "`ablate data fetch cifar10 --root /srv/shared/datasets` or pass "
    "--data-root"
)


def failed_study() -> StudySpec:
    """Every trial failed, for the same reason: 2 arms x 4 seeds."""
    trials = grid_trials({"shortcut": ["none", "A"]}, seeds=[0, 1, 2, 3])
    for trial in trials:
        trial.status, trial.error, trial.stop_at = "failed", DATA_ERROR, 0
    return StudySpec(
        name="shortcut_none_vs_a",
        question="Do identity shortcuts (A) lower the test error of a 20-layer net?",
        factors=["shortcut"],
        reference={"shortcut": "A"},
        seeds=[0, 1, 2, 3],
        trials=trials,
    )


def adaptive_study() -> StudySpec:
    """complete_study() grown by adaptive replication: planned with seeds 0 and 1, it added
    seeds 2 and 3 to the plain arms (their CI was wider than the target) and seed 2 to
    depth=8 shortcut=A; depth=14 shortcut=A met the target with 2 seeds."""
    spec = complete_study()
    added = {"depth=8 shortcut=none": 4, "depth=14 shortcut=none": 4, "depth=8 shortcut=A": 3}
    spec.trials = [
        trial
        for trial in grid_trials(
            {"depth": [8, 14], "shortcut": ["none", "A"]},
            seeds=[0, 1, 2, 3],
            fixed={"dataset": "digits", "in_channels": 1, "iterations": 600, "eval_every": 100},
        )
        if trial.settings["seed"] < added.get(arm_label(resolved(trial), spec.factors), 2)
    ]
    spec.name = "degradation@adaptive"
    spec.seeds, spec.initial_seeds = [0, 1, 2, 3], [0, 1]
    spec.replication = "adaptive: 95% CI half-width <= 0.3 points, at most 4 seeds per arm"
    spec.target_ci, spec.max_seeds = 0.3, 4
    return spec


def user_model_study() -> StudySpec:
    """A study of a user's own model builder (mymodels.se:build, factors width x gate) on
    CIFAR-10: no paper number, Table 6 or degradation applies to it."""
    trials = grid_trials(
        {"width": [16, 32], "gate": [False, True]}, seeds=[0, 1, 2], model=USER_SETTINGS
    )
    return StudySpec(
        name="se_gate",
        question="Does the squeeze-and-excitation gate help, and does it depend on width?",
        factors=["width", "gate"],
        reference={"gate": False},
        seeds=[0, 1, 2],
        trials=trials,
        model=USER_MODEL,
    )
