"""The model design space: one frozen, self-validating spec (docs/paper.md §2, §3, §5).

The model settings are defined once, in `ModelFields`; the spec adds what the data set
decides (classes, channels) and `TrainConfig` adds the recipe (resnet/config.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from resnet.errors import SpecError
from resnet.settings import check_all, setting

SHORTCUTS = ("none", "A", "B", "C")
STEMS = ("cifar", "imagenet")
SKIP_LENGTHS = (1, 2, 3)
# CIFAR depths the 2016 paper builds from bottleneck units (docs/paper.md §3).
CIFAR_BOTTLENECK_DEPTHS = (164, 1001)

# docs/paper.md §5, "ImageNet architectures": units per stage and unit type.
IMAGENET_LAYOUTS: dict[int, tuple[tuple[int, ...], bool]] = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
    152: ((3, 8, 36, 3), True),
}


def _nearby(k: int, depth: int) -> str:
    """The three CIFAR depths nearest `depth` for units of k layers: three stages of equal
    length, each a whole number of units, plus stem conv and fc."""
    valid = [3 * k * n + 2 for n in range(1, 2000 // (3 * k) + 1)]
    near = sorted(sorted(valid, key=lambda d: (abs(d - depth), d))[:3])
    return ", ".join(str(d) for d in near[:-1]) + f" or {near[-1]}"


@dataclass(frozen=True)
class ModelFields:
    """The model settings a study can fix or vary (docs/paper.md §2, §3)."""

    depth: int = setting(20, "weight layers: convs and the final linear layer (CIFAR: 6n+2)", ge=1)
    shortcut: str = setting(
        "A", "none (plain net), A, B or C (docs/paper.md §2)", choices=SHORTCUTS
    )
    skip_length: int | None = setting(
        None,
        "weight layers one shortcut spans: 1, 2 or 3 (default 2; 3 for bottleneck)",
        choices=SKIP_LENGTHS,
    )
    bottleneck: bool | None = setting(
        None, "1x1-3x3-1x1 bottleneck units (default: the paper's choice for the depth)"
    )
    preactivation: bool = setting(False, "2016 full pre-activation units (BN-ReLU-conv)")
    stem: str = setting(
        "cifar", "cifar (3x3 conv, 32x32) or imagenet (7x7/2 + pool)", choices=STEMS
    )
    width: int | None = setting(
        None, "base filters, a multiple of 4 (default 16 cifar, 64 imagenet)", ge=4
    )


@dataclass(frozen=True)
class ModelSpec(ModelFields):
    """A residual (or plain) network as the paper defines it; `depth` counts convs and the
    final linear layer, not projections. Open settings take the paper's choice: bottleneck
    units for ImageNet 50/101/152 and CIFAR 164/1001 (when the skip length is open), skip
    length 3 for bottleneck units and 2 for basic ones."""

    num_classes: int = setting(10, "output classes (from the data set when training)", ge=1)
    in_channels: int = setting(3, "input channels (from the data set when training)", ge=1)
    # Resolved: units per stage; not a constructor argument.
    units: tuple[int, ...] = field(default=(), init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_all(self)
        if self.width is None:
            object.__setattr__(self, "width", 16 if self.stem == "cifar" else 64)
        if self.width % 4:
            raise SpecError("width", f"must be a positive multiple of 4, got {self.width!r}")
        if self.stem == "imagenet":
            self._resolve_imagenet()
        else:
            self._resolve_cifar()

    def _resolve_imagenet(self) -> None:
        set_ = object.__setattr__
        if self.depth not in IMAGENET_LAYOUTS:
            raise SpecError(
                "depth", f"ImageNet nets come in depths 18, 34, 50, 101, 152, not {self.depth}"
            )
        units, paper_bottleneck = IMAGENET_LAYOUTS[self.depth]
        if self.bottleneck is None:
            set_(self, "bottleneck", paper_bottleneck)
        if self.bottleneck != paper_bottleneck:
            kind = "bottleneck" if paper_bottleneck else "basic"
            raise SpecError(
                "bottleneck", f"ImageNet depth {self.depth} uses {kind} units (docs/paper.md §5)"
            )
        k = 3 if paper_bottleneck else 2
        if self.skip_length is None:
            set_(self, "skip_length", k)
        if self.skip_length != k:
            raise SpecError(
                "skip_length",
                f"ImageNet depth {self.depth} has skip length {k}; other skip lengths are "
                "defined for CIFAR nets (stem cifar)",
            )
        set_(self, "units", units)

    def _resolve_cifar(self) -> None:
        set_ = object.__setattr__
        if self.bottleneck is None:
            paper = self.depth in CIFAR_BOTTLENECK_DEPTHS and self.skip_length in (None, 3)
            set_(self, "bottleneck", paper)
        if self.skip_length is None:
            set_(self, "skip_length", 3 if self.bottleneck else 2)
        if self.bottleneck and self.skip_length != 3:
            raise SpecError(
                "skip_length",
                f"bottleneck units (1x1-3x3-1x1) have skip length 3, not {self.skip_length}; "
                "drop skip_length or set bottleneck false",
            )
        k = self.skip_length
        per_stage, rest = divmod(self.depth - 2, 3)
        if self.depth < 2 + 3 * k or rest or per_stage % k:
            unit = "bottleneck units" if self.bottleneck else f"units of {k} layer(s)"
            why = (
                f"depth {self.depth} has {per_stage} layers per stage"
                if not rest and self.depth > 2
                else f"depth {self.depth} does not split into 3 equal stages plus 2 layers"
            )
            other = ""
            if not self.bottleneck and not rest and per_stage % 3 == 0:
                other = ", or bottleneck units (depth = 9n + 2)"
            raise SpecError(
                "depth",
                f"{unit} need each stage's layer count divisible by {k} (depth = {3 * k}n + 2); "
                f"{why}; try depth {_nearby(k, self.depth)}{other}",
            )
        set_(self, "units", (per_stage // k,) * 3)

    @property
    def stage_widths(self) -> tuple[int, ...]:
        """Output channels of each stage (x4 at bottleneck outputs, as in the paper)."""
        out = 4 if self.bottleneck else 1
        return tuple(self.width * 2**i * out for i in range(len(self.units)))

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "units"}

    def label(self) -> str:
        kind = "plain" if self.shortcut == "none" else f"ResNet-{self.shortcut}"
        return f"{kind}-{self.depth}"


def resnet(num_classes: int = 10, in_channels: int = 3, **factors: Any):
    """The paper's residual nets and their plain twins, from the model settings of
    `ModelFields`: the built-in model builder (`resnet.spec:resnet`, resnet/builders.py)."""
    from resnet.model import build

    return build(ModelSpec(**factors, num_classes=num_classes, in_channels=in_channels))


def _resolve(**factors: Any) -> dict[str, Any]:
    """The model settings as built: those left open take the paper's choice for the depth."""
    spec = ModelSpec(**factors)
    return {f.name: getattr(spec, f.name) for f in fields(ModelFields)}


resnet.settings = ModelFields
resnet.resolve = _resolve
