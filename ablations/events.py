"""What a trial tells the driver, typed: it starts, it evaluates, it saved a checkpoint, it
ended. The worker encodes an event into a Ray Tune result; the driver decodes it and hands
it to its listeners (the MLflow recorder, the progress view), which know nothing of Ray."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# The metric Tune's searchers read: the latest validation error (NaN until known).
METRIC = "val_error"


@dataclass(frozen=True)
class Start:
    resumed_from: int
    val_digest: str
    train_size: int
    environment: dict[str, Any]  # ablations.manifest.environment()
    history: list[dict] = field(default_factory=list)  # evaluations the checkpoint holds
    iterations: int = 0  # the trial's total


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
    """A checkpoint is in Ray's storage (the driver learns its path from Tune)."""

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
