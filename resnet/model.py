"""One builder for every network of the design space: a plain net is the same builder with
shortcut `none` (docs/paper.md §2), so plain and residual twins cannot drift apart."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn


class Architecture(Protocol):
    """What the builder reads of a network's description: resnet.spec.ModelSpec, which
    validates it (the spec depends on this module to build, never the reverse)."""

    shortcut: str
    skip_length: int
    bottleneck: bool
    preactivation: bool
    stem: str
    width: int
    in_channels: int
    num_classes: int
    units: tuple[int, ...]

    @property
    def stage_widths(self) -> tuple[int, ...]: ...


class WeightLayer(nn.Module):
    """Post-activation `conv-BN`; pre-activation `BN-ReLU-conv` (He et al. 2016), or just
    the conv when `activated` (its input is BN-ReLU'd already, docs/paper.md §2)."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, preact: bool, activated: bool = False
    ):
        super().__init__()
        self.preact = preact
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False)
        self.bn = nn.Identity() if activated else nn.BatchNorm2d(cin if preact else cout)
        self.activated = activated

    def forward(self, x: Tensor) -> Tensor:
        if self.preact:
            return self.conv(x if self.activated else torch.relu(self.bn(x)))
        return self.bn(self.conv(x))


class ShortcutA(nn.Module):
    """Option A: identity; where dimensions grow, subsample by the stride and zero-pad
    the new channels. Adds no parameters (docs/paper.md §2)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride, self.pad = stride, cout - cin

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = nn.functional.pad(x, (0, 0, 0, 0, 0, self.pad))
        return x


class Projection(nn.Module):
    """Options B and C: 1x1 conv with stride, then BN (not in a pre-activation unit)."""

    def __init__(self, cin: int, cout: int, stride: int, bn: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.bn = nn.BatchNorm2d(cout) if bn else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


def make_shortcut(
    option: str, cin: int, cout: int, stride: int, preact: bool = False
) -> nn.Module | None:
    """The one shortcut factory: None (plain), A, B (projection where shapes change), C."""
    reshapes = stride != 1 or cin != cout
    if option == "none":
        return None
    if option == "C" or (option == "B" and reshapes):
        return Projection(cin, cout, stride, bn=not preact)
    if option == "A" and reshapes:
        return ShortcutA(cin, cout, stride)
    return nn.Identity()


class Unit(nn.Module):
    """A residual unit of k weight layers (docs/paper.md §2-3).

    Post-activation (2015): `[conv-BN-ReLU] x (k-1) - conv-BN (+ shortcut) -> ReLU`.
    Pre-activation (2016): `[BN-ReLU-conv] x k (+ shortcut)`, no ReLU after the addition.
    A projection shortcut is pre-activated too: the unit's first BN-ReLU comes before the
    split and feeds both its first conv and the projection conv. The network's first unit
    takes the stem's BN-ReLU as that activation (2016 paper, Appendix). Bottleneck units:
    `1x1 (width/4) - 3x3 - 1x1 (width)`. The stride sits on the first layer (the paper's
    2015 design; torchvision's "v1.5" moves it to the 3x3: other MACs, same parameters).
    """

    def __init__(self, spec: Architecture, cin: int, cout: int, stride: int, first: bool = False):
        super().__init__()
        self.preact = spec.preactivation
        k = spec.skip_length
        if spec.bottleneck:
            mid = cout // 4
            shapes = [(cin, mid, 1), (mid, mid, 3), (mid, cout, 1)]
        else:
            shapes = [(cin if i == 0 else cout, cout, 3) for i in range(k)]
        shortcut = make_shortcut(spec.shortcut, cin, cout, stride, self.preact)
        # Pre-activation with a projection: one BN-ReLU before the split, shared by both paths.
        shared = self.preact and isinstance(shortcut, Projection) and not first
        self.pre = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU()) if shared else None
        activated = self.preact and (first or shared)
        self.layers = nn.ModuleList(
            WeightLayer(a, b, kern, stride if i == 0 else 1, self.preact, activated and i == 0)
            for i, (a, b, kern) in enumerate(shapes)
        )
        self.shortcut = shortcut  # registered after the layers: the init draws in that order

    def forward(self, x: Tensor) -> Tensor:
        if self.pre is not None:
            x = self.pre(x)
        out = x
        for i, layer in enumerate(self.layers):
            out = layer(out)
            if not self.preact and i < len(self.layers) - 1:
                out = torch.relu(out)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return out if self.preact else torch.relu(out)


class ResNet(nn.Module):
    """stem - stages of units - (final BN-ReLU if pre-activation) - global pool - linear."""

    def __init__(self, spec: Architecture, init: bool = True):
        super().__init__()
        self.spec = spec
        w = spec.width
        # docs/paper.md §3: a 3x3 conv of 16 on 32x32 inputs; §5: 7x7/2 conv 64 + 3x3/2 pool.
        kernel, stride = (3, 1) if spec.stem == "cifar" else (7, 2)
        stem = WeightLayer(spec.in_channels, w, kernel, stride, preact=False)
        self.stem = nn.Sequential(stem, nn.ReLU(inplace=False))
        self.pool_in = nn.MaxPool2d(3, 2, 1) if spec.stem == "imagenet" else nn.Identity()
        stages, cin = [], w
        for i, (n, cout) in enumerate(zip(spec.units, spec.stage_widths, strict=True)):
            units = [
                Unit(spec, cin if j == 0 else cout, cout, 2 if i and j == 0 else 1, i == j == 0)
                for j in range(n)
            ]
            stages.append(nn.Sequential(*units))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.final = (
            nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU()) if spec.preactivation else nn.Identity()
        )
        self.fc = nn.Linear(cin, spec.num_classes)
        if init:
            init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.pool_in(self.stem(x)))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(self.final(x), 1), 1)
        return self.fc(x)


def init_weights(model: nn.Module) -> None:
    """He (Kaiming) normal for convs with fan-in, BN weight 1 and bias 0 (docs/paper.md §2).
    Fan-in, not fan-out: docs/paper.md §7 measured ResNet-56 stuck at chance for 600
    iterations with fan-out init and PyTorch's default linear init."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="linear")
            nn.init.zeros_(m.bias)


def build(spec: Architecture, init: bool = True) -> ResNet:
    """The network a spec describes; `init=False` keeps PyTorch's default init (for counting:
    the paper's init costs a second to set up)."""
    return ResNet(spec, init)


def response_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules whose outputs are the paper's layer responses (Fig. 7), in layer order:
    each weight layer's BN output before the addition / ReLU (post-activation units), or
    each conv's output (pre-activation units, which normalise before the conv)."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, WeightLayer)]
    return [(f"{n}.conv", m.conv) if m.preact else (f"{n}.bn", m.bn) for n, m in layers]
