"""One trial's settings, flat, each defined once with its meaning (resnet/settings.py), with
the paper's CIFAR-10 recipe as defaults (docs/paper.md §4)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace

from resnet.errors import SpecError
from resnet.schedule import POLICIES, parse_warmup
from resnet.settings import EXECUTION, base_type, fields_of, setting
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
        None, "validation images held out of training (default 5000 on CIFAR, else 10%)"
    )
    # The recipe (docs/paper.md §4).
    iterations: int = setting(64_000, "training iterations (the paper: 64k at batch 128)")
    batch_size: int = setting(128, "images per iteration")
    lr: float = setting(0.1, "learning rate after any warm-up")
    momentum: float = setting(0.9, "SGD momentum")
    weight_decay: float = setting(1e-4, "L2 weight decay")
    lr_policy: str = setting(
        "step", "step (/10 at 50% and 75%), plateau, cosine or constant", choices=POLICIES
    )
    warmup: str = setting("none", "none, paper (lr 0.01 until train error < 80%) or ITERATIONS")
    warmup_lr: float = setting(0.01, "learning rate during warm-up")
    plateau_patience: int = setting(5, "evaluations without improvement before /10 (plateau)")
    eval_every: int | None = setting(None, "iterations between evaluations (default: one pass)")
    precision: str = setting(
        "fp32", "fp32, or bf16 autocast for the forward passes", choices=PRECISIONS
    )
    seed: int = setting(0, "seed of initialization, shuffling and augmentation")
    # Execution: where and how fast, not what (left out of the fingerprint).
    checkpoint_every: int | None = setting(
        None, "iterations between checkpoints (default: at every evaluation)", EXECUTION
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
        self.model_spec()  # validates the model fields, naming the field
        positive = ("iterations", "batch_size", "plateau_patience")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SpecError(name, f"must be a positive integer, got {value!r}")
        for name in ("eval_every", "checkpoint_every", "val_size"):
            value = getattr(self, name)
            low = 0 if name == "val_size" else 1
            if value is not None and (not isinstance(value, int) or value < low):
                raise SpecError(name, f"must be an integer >= {low} or unset, got {value!r}")
        for name in ("lr", "warmup_lr"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0:
                raise SpecError(name, f"must be a positive number, got {value!r}")
        for name in ("momentum", "weight_decay"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                raise SpecError(name, f"must be a number >= 0, got {value!r}")
        if self.lr_policy not in POLICIES:
            raise SpecError("lr_policy", f"{self.lr_policy!r} is not one of {', '.join(POLICIES)}")
        try:
            object.__setattr__(self, "warmup", str(parse_warmup(str(self.warmup))))
        except ValueError as err:
            raise SpecError("warmup", str(err).split(": ", 1)[1]) from None
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise SpecError("seed", f"must be an integer >= 0, got {self.seed!r}")
        for name, allowed in (("precision", PRECISIONS), ("step", STEPS)):
            if getattr(self, name) not in allowed:
                raise SpecError(name, f"{getattr(self, name)!r} is not one of {', '.join(allowed)}")
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
        return {f.name: getattr(self, f.name) for f in fields_of(TrainConfig, "science")}

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """From study-file or payload values: unknown names are an error naming the allowed
        ones; YAML's spellings are read as the field's type (`warmup: 400`, `lr: 1`)."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise SpecError(unknown[0], f"unknown setting; allowed: {', '.join(sorted(known))}")
        return cls(**{k: coerce(known[k], v) for k, v in values.items()})

    def fingerprint(self) -> str:
        """Hash of everything that changes the result (not where or how fast it runs)."""
        blob = json.dumps(self.science(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_seed(self, seed: int) -> TrainConfig:
        return replace(self, seed=seed)


def coerce(f, value):
    """A value as the field's type where YAML spells it otherwise: an int for a float or
    text field. Anything else is left for validation to judge."""
    if value is None or isinstance(value, bool):
        return value
    kind = base_type(f, TrainConfig)
    if kind is float and isinstance(value, int):
        return float(value)
    if kind is str and isinstance(value, int | float):
        return str(value)
    return value
