"""The device a run trains on, and timing that waits for it."""

from __future__ import annotations

import time

import torch

from resnet.errors import DeviceError


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
