"""One trial's settings, flat, under the names of STYLE.md section 2, with the paper's
CIFAR-10 recipe as defaults (PAPER.md section 4)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

from resnet.schedule import POLICIES, parse_warmup
from resnet.spec import ModelSpec, SpecError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    # The model (resnet.spec.ModelSpec; num_classes and in_channels come from the data).
    depth: int = 20
    shortcut: str = "A"
    skip_length: int | None = None
    bottleneck: bool | None = None
    preactivation: bool = False
    stem: str = "cifar"
    width: int | None = None
    # The data.
    dataset: str = "cifar10"
    data_dir: str = "./data"
    val_size: int | None = None  # None: 5k for CIFAR (the paper's 45k/5k), 10% otherwise
    # The recipe.
    iterations: int = 64_000
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_policy: str = "step"
    warmup: str = "none"  # none | paper | <iterations>
    warmup_lr: float = 0.01
    plateau_patience: int = 5  # evaluations without improvement
    eval_every: int | None = None  # None: one pass over the training split
    checkpoint_every: int | None = None  # None: at every evaluation
    seed: int = 0
    # Execution (not part of the science; left out of the fingerprint).
    device: str = "auto"
    compile: bool = False

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
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise SpecError("device", f"{self.device!r} is not one of auto, cpu, cuda, cuda:N")
        if self.lr_policy == "plateau" and self.val_size == 0:
            raise SpecError("val_size", "the plateau policy reads validation error; val_size 0")

    def model_spec(self, num_classes: int = 10, in_channels: int = 3) -> ModelSpec:
        return ModelSpec(
            depth=self.depth,
            shortcut=self.shortcut,
            skip_length=self.skip_length,
            bottleneck=self.bottleneck,
            preactivation=self.preactivation,
            stem=self.stem,
            width=self.width,
            num_classes=num_classes,
            in_channels=in_channels,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SpecError(unknown[0], f"unknown setting; allowed: {', '.join(sorted(known))}")
        return cls(**values)

    def fingerprint(self) -> str:
        """Hash of everything that changes the result (not where or how fast it runs)."""
        science = {
            k: v
            for k, v in self.to_dict().items()
            if k not in ("device", "compile", "data_dir", "checkpoint_every")
        }
        blob = json.dumps(science, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
