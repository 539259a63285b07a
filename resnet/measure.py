"""The device a run trains on, timing that waits for it, evaluation and the paper's layer
responses (Fig. 7)."""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from resnet.errors import DeviceError
from resnet.model import response_modules
from resnet.parallel import all_sum


def compile_mode(device: torch.device) -> str:
    """CUDA graphs on a GPU: a CIFAR ResNet step is hundreds of small kernels whose launch
    overhead dominates; inductor's default on CPU (no graphs there)."""
    return "reduce-overhead" if device.type == "cuda" else "default"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asked for, but no CUDA GPU is visible; use cpu or auto")
    return torch.device(name)


class Clock:
    """Seconds between laps (synchronizing the GPU first) and in total since last read."""

    def __init__(self, device: torch.device):
        self.device = device if device.type == "cuda" else None
        self.last_lap = self.last_total = time.perf_counter()

    def _now(self) -> float:
        if self.device is not None:
            torch.cuda.synchronize(self.device)  # the run's GPU, not the current one
        return time.perf_counter()

    def lap(self) -> float:
        now = self._now()
        seconds, self.last_lap = now - self.last_lap, now
        return seconds

    def total(self) -> float:
        now = self._now()
        seconds, self.last_total = now - self.last_total, now
        return seconds


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], precision: str = "fp32"
) -> tuple[float, float] | None:
    """Mean cross-entropy and error (fraction) over the batches (over every replica's, when
    each evaluates its share); None when there are none. Sums stay on the device; one host
    read at the end."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums = torch.zeros(3, device=device)  # loss, errors, images
    for x, y in batches:
        # The evaluation forward's precision, the same as training's.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x)
        sums[0] += nn.functional.cross_entropy(out.float(), y, reduction="sum")
        sums[1] += (out.argmax(1) != y).sum()
        sums[2] += len(y)
    model.train(was_training)
    all_sum(sums)
    loss, err, count = sums.tolist()
    if not count:
        return None
    return loss / count, err / count


@torch.no_grad()
def layer_responses(model: nn.Module, x: Tensor) -> dict[str, list] | None:
    """Per weight layer, in order, the std of its response (BN output before the addition
    / ReLU) over images and positions, averaged over channels, on a fixed batch of test
    images in eval mode and fp32 (docs/paper.md §5, Fig. 7); None for another builder's."""
    modules = response_modules(model)
    if not modules:
        return None
    was_training = model.training
    model.eval()
    names, stds = [], []

    def hook(name: str):
        def record(_module, _inputs, out: Tensor) -> None:
            per_channel = out.float().transpose(0, 1).flatten(1).std(dim=1)
            names.append(name)
            stds.append(per_channel.mean())

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in modules]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {"names": names, "std": [float(s) for s in torch.stack(stds).cpu()]}
