"""A small CNN, with or without a squeeze-and-excitation block after each stage (Hu et al.,
"Squeeze-and-Excitation Networks", 2018), as an ablate model builder.

ablate calls `build(num_classes=..., in_channels=..., width=..., se=...)`: `width` and `se`
are the model's factors, typed by their annotations, usable in a study like any setting.
"""

from __future__ import annotations

from torch import Tensor, nn


class SqueezeExcite(nn.Module):
    """Channel weights from the global average of each channel: pool, shrink by
    `reduction`, ReLU, expand, sigmoid, then scale the input's channels."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


def build(num_classes: int, in_channels: int, width: int = 16, se: bool = False) -> nn.Module:
    """Three stages of two 3x3 conv-BN-ReLU layers at `width`, 2x and 4x channels (a stride
    of 2 between stages), each followed by a squeeze-and-excitation block when `se`, then
    global average pooling and a linear classifier."""
    layers: list[nn.Module] = []
    channels = in_channels
    for stage, out in enumerate((width, 2 * width, 4 * width)):
        for i in range(2):
            stride = 2 if stage > 0 and i == 0 else 1
            layers += [
                nn.Conv2d(channels, out, 3, stride, 1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        if se:
            layers.append(SqueezeExcite(channels))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)
