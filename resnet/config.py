"""One trial's settings, flat, each defined once with its meaning (resnet/settings.py), with
the paper's CIFAR-10 recipe as defaults (docs/paper.md §4)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace

from resnet.errors import SpecError
from resnet.schedule import POLICIES, parse_warmup
from resnet.settings import EXECUTION, SCIENCE, check_all, setting, settings_of
from resnet.spec import ModelFields, ModelSpec

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
STEPS = ("eager", "graph")


@dataclass(frozen=True)
class TrainConfig(ModelFields):
    # The data.
    dataset: str = setting("cifar10", "cifar10 | cifar100 | digits | imagefolder:PATH")
    data_dir: str = setting(
        "./data", "where data sets live (made absolute when a study is planned)", EXECUTION
    )
    val_size: int | None = setting(
        None, "validation images held out of training (default 5000 on CIFAR, else 10%)", ge=0
    )
    # The recipe (docs/paper.md §4).
    iterations: int = setting(64_000, "training iterations (the paper: 64k at batch 128)", ge=1)
    batch_size: int = setting(128, "images per iteration", ge=1)
    lr: float = setting(0.1, "learning rate after any warm-up", gt=0)
    momentum: float = setting(0.9, "SGD momentum", ge=0)
    weight_decay: float = setting(1e-4, "L2 weight decay", ge=0)
    lr_policy: str = setting(
        "step", "step (/10 at 50% and 75%), plateau, cosine or constant", choices=POLICIES
    )
    warmup: str = setting("none", "none, paper (lr 0.01 until train error < 80%) or ITERATIONS")
    warmup_lr: float = setting(0.01, "learning rate during warm-up", gt=0)
    plateau_patience: int = setting(5, "evaluations without improvement before /10 (plateau)", ge=1)
    eval_every: int | None = setting(
        None, "iterations between evaluations (default: one pass)", ge=1
    )
    precision: str = setting(
        "fp32", "fp32, or bf16 autocast for the forward passes", choices=PRECISIONS
    )
    seed: int = setting(0, "seed of initialization, shuffling and augmentation", ge=0)
    # Execution: where and how fast, not what (left out of the fingerprint).
    checkpoint_every: int | None = setting(
        None, "iterations between checkpoints (default: at every evaluation)", EXECUTION, ge=1
    )
    device: str = setting("auto", "auto, cpu, cuda or cuda:N", EXECUTION)
    compile: bool = setting(False, "torch.compile the model", EXECUTION)
    step: str = setting(
        "eager",
        "eager, or graph: the whole training step captured once as a CUDA graph",
        EXECUTION,
        choices=STEPS,
    )

    def __post_init__(self) -> None:
        check_all(self)
        # Model settings left open are resolved now (the paper's choice for the depth), so
        # what is recorded is what trains.
        spec = self.model_spec()
        for f in fields(ModelFields):
            object.__setattr__(self, f.name, getattr(spec, f.name))
        try:
            object.__setattr__(self, "warmup", str(parse_warmup(str(self.warmup))))
        except ValueError as err:
            raise SpecError("warmup", str(err).split(": ", 1)[1]) from None
        if self.compile and self.step == "graph":
            raise SpecError("step", "graph captures the whole step itself; drop compile")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise SpecError("device", f"{self.device!r} is not one of auto, cpu, cuda, cuda:N")
        if self.lr_policy == "plateau" and self.val_size == 0:
            raise SpecError("val_size", "the plateau policy reads validation error; val_size 0")

    def model_spec(self, num_classes: int = 10, in_channels: int = 3) -> ModelSpec:
        model = {f.name: getattr(self, f.name) for f in fields(ModelFields)}
        return ModelSpec(**model, num_classes=num_classes, in_channels=in_channels)

    def to_dict(self) -> dict:
        return asdict(self)

    def science(self) -> dict:
        """The settings that change the result, by name (the MLflow params)."""
        return {s.name: getattr(self, s.name) for s in settings_of(TrainConfig, SCIENCE)}

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """From study-file or job values: unknown names are an error naming the allowed
        ones; the rest is checked by the settings' one check (resnet/settings.py)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SpecError(unknown[0], f"unknown setting; allowed: {', '.join(sorted(known))}")
        return cls(**values)

    def fingerprint(self) -> str:
        """Hash of everything that changes the result (not where or how fast it runs)."""
        blob = json.dumps(self.science(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_seed(self, seed: int) -> TrainConfig:
        return replace(self, seed=seed)
