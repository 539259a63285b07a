"""What the driver and a trial's worker tell each other, typed. The driver sends a
`TrialJob`, carried as plain values in the Tune trial's config. The trial answers with
events (it starts, it evaluates, it saved a checkpoint, it ended), each encoded into a Ray
Tune result; the driver decodes them for its listeners (the progress view, and the
`Tracker`, which writes them to the store), which know nothing of Ray.

The tracker logs each evaluation once: only iterations past the last one stored, so the
history a resumed trial replays from its checkpoint never repeats (docs/tracking.md)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ablations.store import Store, StudyIds
from resnet.config import TrainConfig

# The metric Tune's searchers read: the latest validation error (NaN until known).
METRIC = "val_error"


@dataclass(frozen=True)
class Start:
    resumed_from: int
    val_digest: str
    train_size: int
    environment: dict[str, Any]  # ablations.trainable.environment()
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


class Tracker:
    """Writes the events of trials whose child runs exist (`runs`: key -> run id)."""

    def __init__(self, store: Store, runs: dict[str, str], logged: dict[str, int]):
        self.store, self.runs, self.logged = store, dict(runs), dict(logged)
        self.statuses: dict[str, str] = {}  # key -> how the trial ended in this run
        self.started: set[str] = set()
        self._newest: dict[str, str] = {}  # key -> newest checkpoint path

    def name(self, hint: str) -> str:
        """The key of a trial Tune starts, from the key its job carries."""
        return hint

    def trial_started(self, key: str, sampled: dict) -> None:
        self.started.add(key)
        self.store.start(self.runs[key])

    def trial_event(self, key: str, event: Event) -> None:
        run_id = self.runs[key]
        if isinstance(event, Start):
            self.store.log_start(run_id, event)
            for evaluation in event.history:
                self._log(key, evaluation)
        elif isinstance(event, Evaluation):
            self._log(key, event.evaluation)
        elif isinstance(event, Saved):
            self.store.log_checkpoint(run_id, event.path, self._newest.get(key))
            self._newest[key] = event.path
        elif isinstance(event, Final):
            if event.status in ("finished", "diverged"):
                self.store.finish(run_id, event)
            elif event.status == "failed":
                self.store.fail(run_id, event.error)
            else:  # stopped part-way
                self.store.interrupt(run_id)
            self.statuses[key] = {"stopped": "interrupted"}.get(event.status, event.status)

    def _log(self, key: str, evaluation: dict) -> None:
        if evaluation["iteration"] > self.logged.get(key, -1):
            self.store.log_evaluation(self.runs[key], evaluation)
            self.logged[key] = evaluation["iteration"]

    def close(self) -> None:
        """After Tune returns: a trial that started and did not end was interrupted
        (resumable); one that never started stays pending."""
        for key in sorted(self.started - set(self.statuses)):
            self.store.interrupt(self.runs[key])
            self.statuses[key] = "interrupted"

    def not_started(self) -> list[str]:
        return sorted(set(self.runs) - self.started - set(self.statuses))


class TuningTracker(Tracker):
    """The tuning phase's writer: a child run (role `tune`) is made when Tune starts a
    trial, when its sampled values are known; `ended` keeps (values, val error, run id)."""

    def __init__(self, store: Store, study: StudyIds, arm: str, first: int, base: dict, code: dict):
        super().__init__(store, {}, {})
        self.study, self.arm, self.next, self.base, self.code = study, arm, first, base, code
        self.sampled: dict[str, dict] = {}
        self.ended: list[tuple[dict, float, str]] = []

    def name(self, hint: str) -> str:
        key = f"{self.arm} tune={self.next}"
        self.next += 1
        return key

    def trial_started(self, key: str, sampled: dict) -> None:
        params = {**self.base, **sampled}
        run_id = self.store.create_trial(self.study, key, self.arm, params, self.code, role="tune")
        self.runs[key], self.logged[key], self.sampled[key] = run_id, -1, dict(sampled)
        super().trial_started(key, sampled)

    def trial_event(self, key: str, event: Event) -> None:
        super().trial_event(key, event)
        if isinstance(event, Final) and event.status in ("finished", "diverged"):
            value = event.summary.get("val_error")
            error = value if isinstance(value, float) and math.isfinite(value) else math.inf
            self.ended.append((self.sampled[key], error, self.runs[key]))
