"""Where a study's trials run and how many at once, from the machine (or Ray cluster) and
the models. `--gpus-per-trial auto`: CPUs without a GPU; else every trial on a GPU, small
(CIFAR-size) models several to a GPU (four ResNet-20 trainings on one H200 ran 4.27x the
images/s of one: a small net's step is bound by launches), larger ones one to a GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ablations.errors import AblateError

SMALL_PER_GPU = 4  # small models packed per GPU
SMALL_MACS = 1e9  # multiply-accumulates per image below which a model is small


@dataclass(frozen=True)
class Resources:
    cpus: float
    gpus: float
    where: str  # "this machine" or "the Ray cluster at ADDRESS"
    gpu_name: str = ""


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu" or "cuda"
    gpus_per_trial: float  # of each replica (a trial of one replica: of the trial)
    cpus_per_trial: float  # likewise
    at_once: int  # trials running concurrently
    resources: Resources
    replicas: int = 1  # data-parallel processes per trial

    @property
    def threads(self) -> int:
        """torch threads per replica: its CPUs, at least one."""
        return max(1, int(self.cpus_per_trial))

    def describe(self) -> str:
        where, r = self.resources.where, self.replicas
        each = f"{r} replicas of " if r > 1 else ""
        if self.device == "cpu":
            return (
                f"on CPUs ({where}: {self.resources.cpus:g} CPUs, no GPU used): "
                f"{self.at_once} trial(s) at once, each {each}{self.cpus_per_trial:g} CPU"
            )
        name = f" ({self.resources.gpu_name})" if self.resources.gpu_name else ""
        if self.gpus_per_trial < 1:
            share = f"{round(1 / self.gpus_per_trial)} trials share each GPU"
        else:
            share = f"each trial {each}{self.gpus_per_trial:g} GPU"
        return (
            f"on GPUs ({where}: {self.resources.gpus:g} GPU(s){name}): {share}, "
            f"{self.at_once} trial(s) at once"
        )


def parse_gpus(text: str | float | None) -> float | None:
    """`auto` (None) or a number; a bad value is an error naming what is allowed."""
    if text is None or text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        why = (
            "; a replica trains on one GPU: ask for --replicas N to train a trial on N"
            if value > 1
            else ""
        )
        raise AblateError(
            f"--gpus-per-trial {text}: use auto, 0 (CPU), or a fraction in (0, 1] of a GPU "
            f"per replica{why}"
        )
    return value


def place(
    macs: float,
    trials: int,
    resources: Resources,
    gpus_per_trial: float | None = None,
    cpus_per_trial: float | None = None,
    max_concurrent: int | None = None,
    replicas: int = 1,
) -> Placement:
    """The placement of `trials` trials of `replicas` replicas each, whose largest model
    has `macs` multiply-accumulates per image; refused when one trial cannot be placed."""
    if cpus_per_trial is not None and cpus_per_trial <= 0:
        raise AblateError(f"--cpus-per-trial {cpus_per_trial:g}: must be positive")
    if max_concurrent is not None and max_concurrent < 1:
        raise AblateError(f"--max-concurrent {max_concurrent}: must be at least 1")
    if gpus_per_trial is None:  # auto
        small = macs < SMALL_MACS and replicas == 1
        gpus = 0.0 if resources.gpus <= 0 else 1.0 / SMALL_PER_GPU if small else 1.0
    else:
        gpus = gpus_per_trial
        if gpus > 0 and resources.gpus <= 0:
            raise AblateError(
                f"--gpus-per-trial {gpus:g} asked for, but {resources.where} has no GPU; "
                "use auto or 0 to run on CPUs"
            )
    cpus = cpus_per_trial if cpus_per_trial is not None else 1.0
    for kind, need, have in (("CPUs", cpus, resources.cpus), ("GPU(s)", gpus, resources.gpus)):
        if need * replicas > have + 1e-9:
            flag = "--gpus-per-trial" if kind == "GPU(s)" else "--cpus-per-trial"
            asked = f"{flag} {need:g} asked for"
            if replicas > 1:
                total = f"{need * replicas:g} {kind}"
                asked = f"{flag} {need:g}: a trial of {replicas} replicas needs {total}"
            raise AblateError(f"{asked}, but {resources.where} has {have:g} {kind}")
    at_once = min(trials, math.floor(resources.cpus / (cpus * replicas) + 1e-9))
    if gpus > 0:
        at_once = min(at_once, math.floor(resources.gpus / (gpus * replicas) + 1e-9))
    if max_concurrent is not None:
        at_once = min(at_once, max_concurrent)
    return Placement(
        device="cuda" if gpus > 0 else "cpu",
        gpus_per_trial=gpus,
        cpus_per_trial=cpus,
        at_once=max(1, at_once),
        resources=resources,
        replicas=replicas,
    )
