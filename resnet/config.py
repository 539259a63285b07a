"""One trial's settings, flat: the model builder and its factors (resnet/builders.py), and
the recipe, each setting defined once with its meaning (resnet/settings.py), with the
paper's CIFAR-10 recipe as defaults (docs/paper.md §4)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from resnet.builders import BUILTIN, Builder, load_builder
from resnet.errors import SpecError
from resnet.schedule import POLICIES, parse_warmup
from resnet.settings import EXECUTION, SCIENCE, check_all, setting, settings_of

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
STEPS = ("eager", "graph")


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set is, known without decoding it (resnet.data.dataset_info)."""

    num_classes: int
    in_channels: int  # 3 throughout: every image is converted to RGB, as ImageFolder does
    image_size: int | tuple[int, int]  # as the network sees it (square: one number)
    train_images: int  # before the validation split
    present: bool  # False only for a CIFAR set not yet downloaded
    location: str


@dataclass(frozen=True, init=False)
class TrainConfig:
    """Built from flat settings, `TrainConfig(depth=56, lr=0.1)`: names that are not recipe
    settings are the model's factors, kept resolved in `factors`."""

    # The model.
    model: str = setting(BUILTIN, "the model builder, module:function (default: the ResNets)")
    factors: dict[str, Any] = field(default_factory=dict)
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
    bn_batch: int | None = setting(
        None,
        "images each BatchNorm normalizes over in training (default: a replica's whole "
        "batch; smaller: ghost batches, as the paper's 2 or 8 GPUs normalized)",
        ge=1,
    )
    # Execution: where and how fast, not what (left out of the fingerprint).
    checkpoint_every: int | None = setting(
        None, "iterations between checkpoints (default: at every evaluation)", EXECUTION, ge=1
    )
    device: str = setting("auto", "auto, cpu, cuda or cuda:N", EXECUTION)
    replicas: int = setting(
        1, "data-parallel processes training the trial (on GPUs, one GPU each)", EXECUTION, ge=1
    )
    compile: bool = setting(False, "torch.compile the model", EXECUTION)
    step: str = setting(
        "eager",
        "eager, or graph: the whole training step captured once as a CUDA graph",
        EXECUTION,
        choices=STEPS,
    )

    def __init__(self, factors: dict[str, Any] | None = None, **values: Any) -> None:
        builder = load_builder(values.get("model", BUILTIN))
        given = dict(factors or {})
        defaults = {f.name: f.default for f in fields(self) if f.name != "factors"}
        for name, default in defaults.items():
            object.__setattr__(self, name, values.pop(name, default))
        for name in list(values):
            if name not in builder.names:
                allowed = ", ".join([*builder.names, *defaults])
                raise SpecError(name, f"unknown setting; allowed: {allowed}")
            given[name] = values.pop(name)
        check_all(self)
        # Factors left open are resolved now (for ResNets the paper's choice for the
        # depth), so what is recorded is what trains.
        object.__setattr__(self, "factors", builder.resolve(given))
        self._check_rules()

    def _check_rules(self) -> None:
        """Rules that tie settings together."""
        per_replica, rest = divmod(self.batch_size, self.replicas)
        if rest:
            raise SpecError(
                "replicas", f"batch_size {self.batch_size} does not split over {self.replicas}"
            )
        if self.bn_batch is None:
            object.__setattr__(self, "bn_batch", per_replica)
        if per_replica % self.bn_batch:
            raise SpecError(
                "bn_batch",
                f"{self.bn_batch} does not divide a replica's batch of {per_replica} images "
                f"(batch_size {self.batch_size} over {self.replicas} replica(s))",
            )
        try:
            object.__setattr__(self, "warmup", str(parse_warmup(str(self.warmup))))
        except ValueError as err:
            raise SpecError("warmup", str(err).split(": ", 1)[1]) from None
        if self.replicas > 1 and self.step == "graph":
            raise SpecError("step", "graph captures one process's step; replicas train eager")
        if self.compile and self.step == "graph":
            raise SpecError("step", "graph captures the whole step itself; drop compile")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise SpecError("device", f"{self.device!r} is not one of auto, cpu, cuda, cuda:N")
        if self.lr_policy == "plateau" and self.val_size == 0:
            raise SpecError("val_size", "the plateau policy reads validation error; val_size 0")

    @property
    def builder(self) -> Builder:
        return load_builder(self.model)

    def build_model(self, num_classes: int, in_channels: int):
        """The model this config trains, for a data set's classes and channels."""
        return self.builder.build(num_classes, in_channels, self.factors)

    def to_dict(self) -> dict:
        """Every setting by name, flat (factors beside the recipe)."""
        values = asdict(self)
        return {**values.pop("factors"), **values}

    def science(self) -> dict:
        """The settings that change the result, by name (the MLflow params)."""
        recipe = {s.name: getattr(self, s.name) for s in settings_of(TrainConfig, SCIENCE)}
        return {**self.factors, **recipe}

    def fingerprint(self) -> str:
        """Hash of everything that changes the result (not where or how fast it runs)."""
        blob = json.dumps(self.science(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
