"""The paper's CIFAR augmentation (docs/paper.md §4: pad 4, random 32x32 crop, flip with
p=1/2; test on the original) on whole uint8 batches, as one gather on the training device:
no DataLoader, no per-image Python work."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from resnet.errors import DataError

# Offset between the shuffling seed and the augmentation seed, so the two streams differ.
AUGMENT_SEED_OFFSET = 1_000_003


def _as_channel_tensor(v: Tensor | Sequence[float], device: torch.device) -> Tensor:
    t = torch.as_tensor(v, dtype=torch.float32, device=device)
    return t if t.dim() == 4 else t.reshape(1, -1, 1, 1)


def normalize(
    x_uint8: Tensor,
    mean: Tensor | Sequence[float],
    std: Tensor | Sequence[float],
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """uint8 B x C x H x W -> (x/255 - mean)/std as `dtype`, channels_last memory format;
    mean/std per channel, or per pixel (1 x C x H x W channels_last: a flat loop, faster)."""
    mean_t = _as_channel_tensor(mean, x_uint8.device)
    std_t = _as_channel_tensor(std, x_uint8.device)
    # One fused multiply-add: x * (1/(255 std)) - mean/std.
    x = x_uint8.contiguous(memory_format=torch.channels_last).to(torch.float32)
    out = torch.addcmul(-mean_t / std_t, x, 1 / (255 * std_t))
    return out.to(dtype).contiguous(memory_format=torch.channels_last)


def crop_flip_params(
    batch: int, pad: int, flip: bool, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image crop offsets (top, left) in [0, 2*pad] of the padded image, and flips:
    int64 B tensors on generator.device, drawn in this order."""
    dev = generator.device
    top = torch.randint(0, 2 * pad + 1, (batch,), generator=generator, device=dev)
    left = torch.randint(0, 2 * pad + 1, (batch,), generator=generator, device=dev)
    if flip:
        flips = torch.randint(0, 2, (batch,), generator=generator, device=dev)
    else:
        flips = torch.zeros(batch, dtype=torch.int64, device=dev)
    return top, left, flips


def crop_flip(x: Tensor, top: Tensor, left: Tensor, flips: Tensor, pad: int) -> Tensor:
    """Crop each image of x (B x C x H x W) at (top, left) of its zero-padded self, then
    flip the crop where flips is 1. One gather; padding is never materialized."""
    b, c, h, w = x.shape
    rows = torch.arange(h, device=x.device) + top[:, None] - pad  # B x H, source rows
    cols = torch.arange(w, device=x.device).expand(b, w)
    # Crop then flip (torchvision's RandomCrop -> RandomHorizontalFlip order).
    cols = torch.where(flips[:, None].bool(), w - 1 - cols, cols) + left[:, None] - pad
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    src = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]
    out = x.reshape(b, c, h * w).gather(2, src.reshape(b, 1, h * w).expand(b, c, h * w))
    return out.view(b, c, h, w) * inside[:, None].to(x.dtype)


def share(n: int, rank: int, replicas: int) -> slice:
    """The contiguous part [rank*n/R, (rank+1)*n/R) of n items that one of R data-parallel
    replicas takes: its slice of a global batch, or of a split it evaluates (shares of an
    uneven split differ by one item)."""
    return slice(rank * n // replicas, (rank + 1) * n // replicas)


def shard(batch_size: int, rank: int, replicas: int) -> slice:
    """A replica's share of a global batch, which must split evenly."""
    if replicas < 1 or not 0 <= rank < replicas or batch_size % replicas:
        raise DataError(
            f"batch_size={batch_size} must split evenly over replicas={replicas}, and rank="
            f"{rank} be in [0, {replicas})"
        )
    return share(batch_size, rank, replicas)


class ResidentBatches:
    """Seeded shuffling of a device-resident uint8 data set into training batches: each
    pass a randperm from a CPU generator seeded with `seed`, cut into batches (the tail
    dropped); augmentation draws from a generator on x.device seeded with seed +
    AUGMENT_SEED_OFFSET. Every replica draws the whole global batch and returns its shard.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        seed: int,
        mean: Tensor | Sequence[float],
        std: Tensor | Sequence[float],
        augment: bool = True,
        dtype: torch.dtype = torch.float32,
        rank: int = 0,
        replicas: int = 1,
    ) -> None:
        self._part = shard(batch_size, rank, replicas)
        if not 0 < batch_size <= len(x):
            raise DataError(f"batch_size={batch_size} must be in [1, {len(x)}] (training images)")
        self.x, self.y = x, y
        self.batch_size, self.augment, self.dtype = batch_size, augment, dtype
        self.mean = _as_channel_tensor(mean, x.device)
        self.std = _as_channel_tensor(std, x.device)
        self._order_rng = torch.Generator().manual_seed(seed)
        self._augment_rng = torch.Generator(device=x.device).manual_seed(seed + AUGMENT_SEED_OFFSET)
        self._perm = torch.empty(0, dtype=torch.int64)  # CPU copy, kept for state_dict
        self._perm_dev = self._perm.to(x.device)
        self._pos = 0

    def next(self) -> tuple[Tensor, Tensor]:
        """Normalized float batch (channels_last) and int64 labels, on the device."""
        if self._pos + self.batch_size > len(self._perm):
            self._new_pass()
        # The permutation crosses to the device once per pass, so a batch needs no sync.
        idx = self._perm_dev[self._pos : self._pos + self.batch_size][self._part]
        self._pos += self.batch_size
        xb = self.x.index_select(0, idx)
        if self.augment:
            top, left, flips = crop_flip_params(self.batch_size, 4, True, self._augment_rng)
            p = self._part
            xb = crop_flip(xb, top[p], left[p], flips[p], 4)
        return normalize(xb, self.mean, self.std, self.dtype), self.y.index_select(0, idx)

    def _new_pass(self) -> None:
        self._perm = torch.randperm(len(self.x), generator=self._order_rng)
        self._perm_dev = self._perm.to(self.x.device)
        self._pos = 0

    def state_dict(self) -> dict:
        """Tensors and ints only, so torch.load(weights_only=True) reads it back."""
        return {
            "order_rng": self._order_rng.get_state(),
            "augment_rng": self._augment_rng.get_state(),
            "perm": self._perm.clone(),
            "pos": self._pos,
            "num_images": len(self.x),
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where the instance that made `state` stopped."""
        for key, mine in (("num_images", len(self.x)), ("batch_size", self.batch_size)):
            if state[key] != mine:
                raise DataError(f"batch state has {key}={state[key]}, this data has {mine}")
        self._order_rng.set_state(state["order_rng"])
        self._augment_rng.set_state(state["augment_rng"])
        self._perm = state["perm"].to("cpu", torch.int64)
        self._perm_dev = self._perm.to(self.x.device)
        self._pos = int(state["pos"])


def eval_batches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    mean: Tensor | Sequence[float],
    std: Tensor | Sequence[float],
    dtype: torch.dtype = torch.float32,
) -> Iterator[tuple[Tensor, Tensor]]:
    """In-order, unaugmented (normalized channels_last x, labels) batches; last may be short."""
    mean_t = _as_channel_tensor(mean, x.device)
    std_t = _as_channel_tensor(std, x.device)
    for i in range(0, len(x), batch_size):
        yield normalize(x[i : i + batch_size], mean_t, std_t, dtype), y[i : i + batch_size]
