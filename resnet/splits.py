"""Train/validation/test splits as the training loop sees them: a seeded validation split
of the training set (docs/paper.md §4: the schedule was chosen on 45k/5k; the test set is
never used to choose anything), per-channel statistics, and a digest of the data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from resnet.errors import DataError


@dataclass(frozen=True, eq=False)
class ImageSplits:
    """Small images in memory: x is uint8 N x C x H x W (contiguous, CPU), y int64 N."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]  # per channel, of train_x / 255
    std: tuple[float, ...]
    val_digest: str  # sha256[:16] of the sorted validation indices into the training set

    @property
    def train_size(self) -> int:
        return len(self.train_x)

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    def digest(self) -> str:
        """sha256[:16] of every image and label in split order: names the data trained on
        (the real CIFAR-10 arrays hash in well under a second)."""
        h = hashlib.sha256()
        for t in (self.train_x, self.train_y, self.val_x, self.val_y, self.test_x, self.test_y):
            h.update(str(tuple(t.shape)).encode())
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class StreamingSplits:
    """Large images as (path relative to root, label) lists, decoded as batches are made."""

    name: str
    root: Path
    train_samples: list[tuple[str, int]]
    val_samples: list[tuple[str, int]]
    test_samples: list[tuple[str, int]]
    num_classes: int
    mean: tuple[float, ...]  # estimated from a fixed sample of training images
    std: tuple[float, ...]
    val_digest: str

    @property
    def train_size(self) -> int:
        return len(self.train_samples)

    @property
    def in_channels(self) -> int:
        return 3  # every image is converted to RGB, as torchvision's ImageFolder does

    def digest(self) -> str:
        """sha256[:16] of the sample lists with each file's size (not its bytes: an
        ImageNet folder is too large to read for a name)."""
        h = hashlib.sha256()
        for samples in (self.train_samples, self.val_samples, self.test_samples):
            for rel, label in samples:
                size = (self.root / rel).stat().st_size
                h.update(f"{rel}\0{label}\0{size}\n".encode())
        return h.hexdigest()[:16]


def split_indices(name: str, n: int, val_size: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Sorted train and validation indices into the n training images, and the digest of
    the validation indices."""
    if not 0 <= val_size < n:
        raise DataError(f"val_size={val_size} for {name} must be in [0, {n}) (training images)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx = perm[:val_size].sort().values
    train_idx = perm[val_size:].sort().values
    digest = hashlib.sha256(val_idx.numpy().astype("<i8").tobytes()).hexdigest()[:16]
    return train_idx, val_idx, digest


def default_val_size(name: str, n: int) -> int:
    """5000 on CIFAR (the paper's 45k/5k), 10% of the training images otherwise."""
    return 5000 if name.startswith("cifar") else round(0.1 * n)


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of x / 255, in float64, chunked over N."""
    c = x.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for chunk in x.split(1024):
        f = chunk.to(torch.float64) / 255
        s += f.sum((0, 2, 3))
        s2 += (f * f).sum((0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / count
    # Floor at one gray level: a constant channel would otherwise divide by zero.
    std = (s2 / count - mean * mean).clamp_min(0).sqrt().clamp_min(1 / 255)
    return tuple(mean.tolist()), tuple(std.tolist())


def image_splits(
    name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    val_size: int | None,
    split_seed: int,
) -> ImageSplits:
    """The in-memory splits of a data set given as training and test arrays."""
    if val_size is None:
        val_size = default_val_size(name, len(y))
    train_idx, val_idx, digest = split_indices(name, len(y), val_size, split_seed)
    train_x = x[train_idx].contiguous()
    mean, std = channel_stats(train_x)
    return ImageSplits(
        name=name,
        train_x=train_x,
        train_y=y[train_idx].contiguous(),
        val_x=x[val_idx].contiguous(),
        val_y=y[val_idx].contiguous(),
        test_x=test_x,
        test_y=test_y,
        num_classes=num_classes,
        mean=mean,
        std=std,
        val_digest=digest,
    )
