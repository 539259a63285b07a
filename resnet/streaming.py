"""Large images (ImageNet) streamed through DataLoader workers, behind the same batch
interface as the device-resident small-image path."""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch import Tensor

from resnet.data import StreamingSplits, streaming_loader

# Decoding workers: up to 4, never more than the machine's cores.
WORKERS = min(4, os.cpu_count() or 1)


class StreamingBatches:
    """Training batches from worker processes; resumable at a batch boundary.

    The order is seeded by (seed, epoch), so resuming re-creates the epoch's loader and
    skips the batches already consumed (they are decoded again: resume costs up to one
    epoch of decoding, the price of not holding ImageNet in memory).
    """

    def __init__(
        self,
        splits: StreamingSplits,
        batch_size: int,
        seed: int,
        device: torch.device,
        workers: int = WORKERS,
    ):
        self.splits, self.batch_size, self.seed = splits, batch_size, seed
        self.device, self.workers = device, workers
        self.epoch, self.pos = 0, 0
        self._it: Iterator | None = None

    def _loader(self):
        return iter(
            streaming_loader(
                self.splits,
                "train",
                self.batch_size,
                self.seed,
                self.epoch,
                train=True,
                workers=self.workers,
            )
        )

    def next(self) -> tuple[Tensor, Tensor]:
        if self._it is None:
            self._it = self._loader()
            for _ in range(self.pos):
                next(self._it)
        try:
            x, y = next(self._it)
        except StopIteration:
            self.epoch, self.pos = self.epoch + 1, 0
            self._it = self._loader()
            x, y = next(self._it)
        self.pos += 1
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos, self._it = int(state["epoch"]), int(state["pos"]), None


def streaming_eval(
    splits: StreamingSplits,
    split: str,
    device: torch.device,
    limit: int | None = None,
    batch_size: int = 256,
) -> Iterator:
    """In-order evaluation batches (shorter side 256, center crop 224) on the device."""
    loader = streaming_loader(
        splits, split, limit or batch_size, 0, 0, train=False, workers=WORKERS
    )
    for i, (x, y) in enumerate(loader):
        if limit is not None and i:
            return
        yield x.to(device).contiguous(memory_format=torch.channels_last), y.to(device)
