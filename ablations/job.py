"""What the driver sends a worker for one trial: a typed job, and its conversion to and from
the plain values Ray Tune carries in a trial's config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from resnet.config import TrainConfig


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
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**values, "config": self.config.to_dict()}

    @classmethod
    def from_tune(cls, values: dict[str, Any]) -> TrialJob:
        return cls(**{**values, "config": TrainConfig.from_dict(values["config"])})

    def sampled(self, values: dict[str, Any]) -> TrainConfig:
        """The config with the values a searcher sampled for this tuning trial."""
        if not values:
            return self.config
        return TrainConfig.from_dict({**self.config.to_dict(), **values})
