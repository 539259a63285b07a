"""Large images (ImageNet-style folders) read batch by batch, behind the interface of the
device-resident small images (resnet/augment.py). Threads read the next batch's files while
the current one trains. On CUDA one nvJPEG call (torchvision.io.decode_jpeg) decodes a
batch's JPEGs and the GPU resizes and crops them; elsewhere the threads decode (libjpeg-turbo
releases the GIL), resize and crop. Other formats, and batches nvJPEG refuses, are decoded
on the CPU by resnet/folder.py (decode_image, else PIL)."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from resnet.augment import _as_channel_tensor, normalize, shard, share
from resnet.errors import DataError
from resnet.folder import _as_tensor, _decode_one, _decoders

THREADS = min(8, os.cpu_count() or 1)  # file readers (off CUDA also decoders)
CROP, EVAL_SIZE, TRAIN_SIZES = 224, 256, (256, 480)  # docs/paper.md §5
_pool = functools.cache(functools.partial(ThreadPoolExecutor, thread_name_prefix="ablate-read"))
os.register_at_fork(after_in_child=_pool.cache_clear)  # a forked child has no threads


def _crop(img: Tensor, size: int, at: tuple[float, float, bool] | None) -> Tensor:
    """The shorter side resized to `size` (antialiased bilinear, as torchvision's Resize),
    then the 224 crop at fractions `at` = (top, left, flip) of the free range, or the centre."""
    from torchvision.transforms.v2 import functional as TF

    img = TF.resize(img, size, antialias=True)
    if at is None:
        return TF.center_crop(img, CROP)
    (u, v, flip), (h, w) = at, img.shape[-2:]
    top, left = int(u * (h - CROP + 1)), int(v * (w - CROP + 1))
    img = img[:, top : top + CROP, left : left + CROP]
    return img.flip(-1) if flip else img


def _load(root: Path, rel: str, crop: tuple | None) -> bytes | Tensor:
    """In a pool thread: the file's bytes, and with `crop` its decoded crop."""
    try:
        with open(root / rel, "rb", buffering=0) as f:
            data = f.readall()
    except OSError as e:
        raise DataError(f"imagefolder:{root}: cannot read {rel}: {e.strerror or e}") from None
    return data if crop is None else _crop(_decode_one(root, rel, data), *crop)


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


class Reader:
    """(B x 3 x 224 x 224 uint8, or normalized by `stats` = (mean, std); int64 B) on a device,
    from samples and crops (by default the evaluation crop): `submit` starts the threads'
    work, `batch` waits for it (on CUDA: decodes)."""

    def __init__(self, root: Path, device: torch.device, threads: int = THREADS, stats=()) -> None:
        self.root, self.device, self.pool = root, device, _pool(threads)
        self.gpu = device.type == "cuda" and _decoders()[2] is not None
        # Mean and std one value a pixel: normalize() then runs one flat loop, 3x faster.
        pixel = [_as_channel_tensor(v, device).expand(1, 3, CROP, CROP) for v in stats]
        self.stats = [t.contiguous(memory_format=torch.channels_last) for t in pixel]

    def submit(self, samples: list[tuple[str, int]], crops: list | None = None) -> tuple:
        crops = crops or [(EVAL_SIZE, None)] * len(samples)
        args = [(rel, None if self.gpu else c) for (rel, _), c in zip(samples, crops, strict=True)]
        return samples, crops, [self.pool.submit(_load, self.root, *a) for a in args]

    def batch(self, submitted: tuple) -> tuple[Tensor, Tensor]:
        samples, crops, work = submitted
        done = [f.result() for f in work]
        if self.gpu:
            ImageReadMode, _, decode_jpeg = _decoders()
            try:  # one nvJPEG call a batch; a file it refuses (a PNG, say) fails the call
                done = decode_jpeg([_as_tensor(d) for d in done], ImageReadMode.RGB, self.device)
            except RuntimeError:  # then the threads decode this batch on the CPU
                rels = [rel for rel, _ in samples]
                done = list(self.pool.map(_decode_one, [self.root] * len(done), rels, done))
            done = [_crop(img.to(self.device), *c) for img, c in zip(done, crops, strict=True)]
        x = torch.stack(done).to(self.device, non_blocking=True)
        y = torch.tensor([label for _, label in samples]).to(self.device, non_blocking=True)
        return (normalize(x, *self.stats) if self.stats else x), y


class StreamingBatches:
    """Training batches with the paper's ImageNet augmentation (docs/paper.md §5: shorter
    side resized to a random size in [256, 480], random 224 crop, flip with p=1/2; not its
    colour augmentation), normalized, on the device. A generator seeded by (seed, epoch)
    draws the epoch's order and each position's crop, so a batch is fixed by (seed,
    epoch, position): a resumed run sees the same crops, and each replica reads its shard."""

    def __init__(
        self,
        splits: StreamingSplits,
        batch_size: int,
        seed: int,
        device: torch.device,
        threads: int = THREADS,
        rank: int = 0,
        replicas: int = 1,
    ):
        self._part = shard(batch_size, rank, replicas)
        if not 0 < batch_size <= splits.train_size:
            raise DataError(f"batch_size={batch_size} must be in [1, {splits.train_size}]")
        self.splits, self.batch_size, self.seed = splits, batch_size, seed
        self._reader = Reader(splits.root, device, threads, (splits.mean, splits.std))
        # Where the next batch starts; the epoch's draws; the batch read ahead and its place.
        self.epoch, self.pos, self._draws, self._ahead = 0, 0, (-1,), (None, None)

    def _submit(self, epoch: int, pos: int) -> tuple:
        n = self.splits.train_size
        if self._draws[0] != epoch:
            # Distinct streams per (seed, epoch); 1_000_003 is prime so epochs never collide.
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=g)
            sizes = torch.randint(TRAIN_SIZES[0], TRAIN_SIZES[1] + 1, (n,), generator=g)
            at = torch.rand(n, 2, generator=g, dtype=torch.float64)
            self._draws = epoch, order, sizes, at, torch.randint(0, 2, (n,), generator=g)
        _, order, sizes, at, flips = self._draws
        p = slice(pos * self.batch_size + self._part.start, pos * self.batch_size + self._part.stop)
        samples = [self.splits.train_samples[i] for i in order[p].tolist()]
        crops = zip(sizes[p].tolist(), at[p].tolist(), flips[p].tolist(), strict=True)
        crops = [(size, (u, v, bool(flip))) for size, (u, v), flip in crops]
        return (epoch, pos), self._reader.submit(samples, crops)

    def next(self) -> tuple[Tensor, Tensor]:
        key, submitted = self._ahead
        if key != (self.epoch, self.pos):
            key, submitted = self._submit(self.epoch, self.pos)
        self.load_state_dict({"epoch": self.epoch, "pos": self.pos + 1})  # rolls over epochs
        self._ahead = self._submit(self.epoch, self.pos)  # read while this batch trains
        return self._reader.batch(submitted)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        """Continue at batch `pos` of epoch `epoch` (pos = batches a pass: the next epoch)."""
        epoch, pos = divmod(int(state["pos"]), self.splits.train_size // self.batch_size)
        self.epoch, self.pos = int(state["epoch"]) + epoch, pos


def streaming_eval(
    splits: StreamingSplits,
    split: str,
    device: torch.device,
    limit: int | None = None,
    batch_size: int = 256,
    threads: int = THREADS,
    rank: int = 0,
    replicas: int = 1,
) -> Iterator[tuple[Tensor, Tensor]]:
    """In-order batches of split "train"|"val"|"test" (replica `rank`'s contiguous share):
    shorter side 256, centre 224 crop, normalized on the device, the last may be short; the
    next is read while one is used. With `limit`, the first `limit` images as one batch.
    (Not the paper's 10-crop testing.)"""
    if split not in ("train", "val", "test"):
        raise DataError(f"split {split!r}; allowed: train, val, test")
    samples = getattr(splits, f"{split}_samples")
    samples = samples[share(len(samples), rank, replicas)]
    if limit is not None:
        samples, batch_size = samples[:limit], limit
    reader = Reader(splits.root, device, threads, (splits.mean, splits.std))
    ahead = reader.submit(samples[:batch_size])
    for i in range(batch_size, len(samples) + batch_size, batch_size):
        submitted, ahead = ahead, reader.submit(samples[i : i + batch_size])
        yield reader.batch(submitted)
