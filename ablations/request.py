"""What a user asks of `ablate show` and `ablate run`: the study and the flags that shape
its plan, each field one flag (the CLI builds them from here). Standard library only, so
the command line's parser costs nothing to build."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def option(default: Any, help: str, type: Any = str) -> Any:
    """A field of `Request` with its flag of `ablate show` and `ablate run`:
    `--name-with-dashes`."""
    return field(default=default, metadata={"help": help, "type": type})


@dataclass(frozen=True)
class Request:
    """What the user asked for: the study and the flags that shape its plan."""

    study: str = option("", "a built-in study name (ablate list) or a study .yaml file")
    preset: str | None = option(None, "a preset of the study, e.g. smoke")
    seeds: int | None = option(None, "run seeds 0..N-1 instead", int)
    dataset: str | None = option(None, "override the study's data set")
    data_dir: str | None = option(None, "where data sets live (default ./data)")
    gpus_per_trial: str | None = option(
        "auto",
        "GPUs per replica: auto (default: GPUs when the machine or cluster has them, "
        "small models 4 to a GPU), 0 to force CPUs, or a fraction to share a GPU",
    )
    cpus_per_trial: float | None = option(None, "CPUs per replica (default 1)", float)
    max_concurrent: int | None = option(None, "trials at once, at most", int)
    replicas: int | None = option(
        None, "data-parallel replicas per trial (default: the study's, else 1)", int
    )
    address: str | None = option(None, "a Ray cluster (default: RAY_ADDRESS)")
    tracking_uri: str | None = option(
        None, "MLflow store (default: MLFLOW_TRACKING_URI or ./mlflow.db)"
    )
    storage: str | None = option(
        None,
        "Ray's storage for checkpoints: a folder (default ./ablate-results) or a bucket "
        "URI every node reaches (s3://..., gs://...)",
    )
    target_ci: float | None = option(
        None,
        "a 95% CI half-width of each arm's test error, in points: the study's seeds are a "
        "first stage whose spread sets each arm's total (two-stage design, docs/tracking.md)",
        float,
    )
    max_seeds: int | None = option(
        None, "with --target-ci, seeds per arm at most (default 10)", int
    )
