"""Large images (ImageNet-style folders) streamed through DataLoader workers, behind the same
batch interface as the device-resident small-image path (resnet/augment.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from resnet.errors import DataError
from resnet.splits import StreamingSplits, channel_stats, split_indices

# Decoding workers: up to 4, never more than the machine's cores.
WORKERS = min(4, os.cpu_count() or 1)
_STATS_SAMPLE = 256  # images used to estimate mean/std of a streamed folder


def streaming_splits(
    name: str,
    root: Path,
    classes: list[str],
    train: list,
    test: list,
    val_size: int | None,
    split_seed: int,
) -> StreamingSplits:
    if val_size is None:
        val_size = round(0.1 * len(train))
    train_idx, val_idx, digest = split_indices(name, len(train), val_size, split_seed)
    train_s = [train[i] for i in train_idx.tolist()]
    mean, std = _estimate_stats(root, train_s)
    return StreamingSplits(
        name=name,
        root=root,
        train_samples=train_s,
        val_samples=[train[i] for i in val_idx.tolist()],
        test_samples=test,
        num_classes=len(classes),
        mean=mean,
        std=std,
        val_digest=digest,
    )


def _estimate_stats(
    root: Path, samples: list[tuple[str, int]]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std of a fixed (seed 0) sample of training images, as evaluation sees them."""
    from torchvision.transforms.v2 import functional as TF

    pick = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0))
    imgs = []
    for i in pick[:_STATS_SAMPLE].tolist():
        with Image.open(root / samples[i][0]) as im:
            im.draft("RGB", (256, 256))  # JPEG: decode at the smallest scale >= 256, faster
            im = TF.center_crop(TF.resize(im.convert("RGB"), 256), 224)
            imgs.append(TF.pil_to_tensor(im))
    return channel_stats(torch.stack(imgs))


class _Files(torch.utils.data.Dataset):
    """(path relative to root, label) samples read with PIL, converted to RGB."""

    def __init__(self, root: Path, samples: list[tuple[str, int]], transform) -> None:
        self.root, self.samples, self.transform = root, samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        rel, y = self.samples[i]
        with Image.open(self.root / rel) as im:
            return self.transform(im.convert("RGB")), y


def streaming_loader(
    splits: StreamingSplits,
    split: str,
    batch_size: int,
    seed: int,
    epoch: int,
    train: bool,
    workers: int,
) -> torch.utils.data.DataLoader:
    """Batches (float32 B x 3 x 224 x 224 normalized, int64 B) of split "train"|"val"|"test".

    train=True: the paper's ImageNet augmentation (docs/paper.md §5): shorter side
    resized to a random size in [256, 480], random 224 crop, horizontal flip; the order
    is a randperm seeded by (seed, epoch), the incomplete last batch dropped, and worker
    seeds drawn from the same seed so augmentation repeats too (with workers > 0).
    train=False: shorter side 256, center 224 crop, in order. The paper's color
    augmentation and 10-crop testing are not done.
    """
    from torchvision.transforms import v2

    samples = {
        "train": splits.train_samples,
        "val": splits.val_samples,
        "test": splits.test_samples,
    }.get(split)
    if samples is None:
        raise DataError(f"split {split!r}; allowed: train, val, test")
    if train:
        geometry = [v2.RandomResize(256, 481), v2.RandomCrop(224), v2.RandomHorizontalFlip()]
    else:
        geometry = [v2.Resize(256), v2.CenterCrop(224)]
    transform = v2.Compose(
        [
            *geometry,
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(splits.mean), list(splits.std)),
        ]
    )
    # Distinct streams per (seed, epoch); 1_000_003 is prime so epochs never collide.
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(samples), generator=g).tolist() if train else None
    return torch.utils.data.DataLoader(
        _Files(splits.root, samples, transform),
        batch_size=batch_size,
        sampler=order,
        drop_last=train,
        num_workers=workers,
        generator=g,
        pin_memory=torch.cuda.is_available(),
    )


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
