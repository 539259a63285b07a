"""What the driver and a trial's worker tell each other, typed. The driver sends a
`TrialJob`, carried as plain values in the Tune trial's config. The trial answers with
events (it starts, it evaluates, it saved a checkpoint, it ended), each encoded into a Ray
Tune result; the driver decodes them for its listeners (the progress view, and the
`Tracker`, which writes them to the store), which know nothing of Ray.

The tracker logs each evaluation once: only iterations past the last one stored, so the
history a resumed trial replays from its checkpoint never repeats (docs/tracking.md)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from resnet.config import TrainConfig

# The metric Tune's searchers read: the latest validation error (NaN until known).
METRIC = "val_error"


@dataclass(frozen=True)
class Environment:
    """A training process's side of the manifest (docs/tracking.md)."""

    versions: dict[str, str]  # ablate, python, torch, cuda, ray, mlflow
    device: str  # "cpu (1 thread)", a GPU's name, "2 replicas x ..."
    data_digest: str
    dataset: str
    data_source: str  # where the data set was read from


@dataclass(frozen=True)
class Start:
    resumed_from: int
    val_digest: str
    train_size: int
    environment: Environment
    history: list[dict] = field(default_factory=list)  # evaluations the checkpoint holds
    iterations: int = 0  # the trial's total

    def __post_init__(self) -> None:
        if isinstance(self.environment, dict):  # decoded from JSON
            object.__setattr__(self, "environment", Environment(**self.environment))


@dataclass(frozen=True)
class Progress:
    """Between evaluations, every few seconds: how far the trial is and how fast it goes
    (shown live, never logged)."""

    iteration: int
    images_per_s: float


@dataclass(frozen=True)
class Evaluation:
    evaluation: dict[str, float]  # the metrics of docs/tracking.md at ["iteration"]


@dataclass(frozen=True)
class Saved:
    """A checkpoint is whole in Ray's storage, at `path`."""

    iteration: int
    path: str = ""


@dataclass(frozen=True)
class Final:
    status: str  # finished | diverged | stopped | failed
    summary: dict[str, Any] = field(default_factory=dict)
    lr_trace: dict[str, list] = field(default_factory=dict)
    layer_responses: dict[str, list] | None = None
    error: str = ""


Event = Start | Progress | Evaluation | Saved | Final
_KINDS = {"start": Start, "progress": Progress, "eval": Evaluation, "saved": Saved, "final": Final}
_NAMES = {cls: name for name, cls in _KINDS.items()}


def encode(event: Event) -> dict:
    """A Tune result: the event as JSON (Tune flattens nested dicts), and the metric."""
    val = float("nan")
    if isinstance(event, Evaluation):
        val = event.evaluation.get("val/error", val)
    elif isinstance(event, Final) and event.summary.get("val_error") is not None:
        val = event.summary["val_error"]
    return {"kind": _NAMES[type(event)], "event": json.dumps(asdict(event)), METRIC: val}


def decode(result: dict) -> Event | None:
    """The event in a Tune result (None for results that carry none)."""
    cls = _KINDS.get(result.get("kind"))
    if cls is None or "event" not in result:
        return None
    return cls(**json.loads(result["event"]))


@dataclass(frozen=True)
class TrialJob:
    key: str  # "depth=20 shortcut=A seed=0", or "shortcut=A tune" for a tuning trial
    arm: str
    config: TrainConfig  # what it trains (tuned values applied), on which device
    study: str  # the MLflow experiment; names the study's folder in the storage
    storage: str  # Ray's storage: a folder or a bucket URI
    run_id: str = ""  # its MLflow run; "" for a tuning trial (made when Tune starts it)
    threads: int = 1  # torch threads (CPUs) of each replica
    gpus: float = 0.0  # GPUs of each replica
    checkpoints: bool = True  # False for short tuning trials: an interrupted one is redone

    @classmethod
    def of(cls, plan, trial, run_id: str, storage: str, checkpoints: bool = True) -> TrialJob:
        """The job of one of the plan's trials (a seed trial, or an arm's tuning trial)."""
        return cls(
            key=trial.key,
            arm=trial.arm,
            config=trial.config,
            study=plan.experiment,
            storage=storage,
            run_id=run_id,
            threads=plan.placement.threads,
            gpus=plan.placement.gpus_per_trial,
            checkpoints=checkpoints,
        )

    def to_tune(self) -> dict[str, Any]:
        return {**vars(self), "config": self.config.to_dict()}

    @classmethod
    def from_tune(cls, values: dict[str, Any]) -> TrialJob:
        return cls(**{**values, "config": TrainConfig(**values["config"])})

    def sampled(self, values: dict[str, Any]) -> TrainConfig:
        """The config with the values a searcher sampled for this tuning trial."""
        return TrainConfig(**{**self.config.to_dict(), **values})
