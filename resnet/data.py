"""The data sets by name: what each is, whether it is present, and loading it as splits:
small images as uint8 tensors in memory (`ImageSplits`), large ones (ImageNet-style
folders) as file lists decoded batch by batch (`StreamingSplits`). Finding and loading are
separate on purpose: a study's driver checks (and downloads CIFAR once) with
`ensure_available`; trials only `load_dataset`, which never downloads.

The splits are made here too, so this module is over 300 lines: a seeded validation split
of the training set (docs/paper.md §4: the schedule was chosen on 45k/5k; the test set is
never used to choose anything), per-channel statistics, and a digest of the data.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from resnet.config import DatasetInfo
from resnet.errors import DataError, one_line
from resnet.folder import cached_decode, image_size, is_small, scan_folder
from resnet.streaming import Reader, StreamingSplits

DATASETS = ("cifar10", "cifar100", "digits", "imagefolder:<path>")
# The official python archives' folder and files, as torchvision reads them (the tests pin
# these against torchvision's own lists); checking presence needs no torchvision import.
_CIFAR_FILES = {
    "cifar10": (
        "cifar-10-batches-py",
        ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"),
        ("test_batch",),
    ),
    "cifar100": ("cifar-100-python", ("train",), ("test",)),
}
_CIFAR_TRAIN_IMAGES = 50_000
_DIGITS_TEST_SIZE = 297
_DIGITS_IMAGES = 1797
_STATS_SAMPLE = 256  # images used to estimate mean/std of a streamed folder


def _unknown(name: str) -> DataError:
    return DataError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")


def _cifar_class(name: str):
    from torchvision.datasets import CIFAR10, CIFAR100  # seconds to import: only when used

    return CIFAR10 if name == "cifar10" else CIFAR100


def _cifar_missing(name: str, data_dir: Path, reason: str = "") -> DataError:
    why = f" and could not be downloaded ({reason})" if reason else ""
    return DataError(
        f"{name} not found in {data_dir}{why}; put the official {_CIFAR_FILES[name][0]} "
        "there (or let `ablate run` download it), or use --dataset imagefolder:<path> or "
        "digits"
    )


def dataset_info(name: str, data_dir: str | Path = "./data") -> DatasetInfo:
    """What the data set is, without decoding it. DataError for an unknown name or a bad
    folder."""
    data_dir = Path(data_dir).expanduser().resolve()
    # in_channels is 3 throughout: every image is converted to RGB, as ImageFolder does.
    if name in _CIFAR_FILES:
        folder, train_files, test_files = _CIFAR_FILES[name]
        present = all((data_dir / folder / f).is_file() for f in (*train_files, *test_files))
        folder = str(data_dir / folder)
        info = (10 if name == "cifar10" else 100, 3, 32, _CIFAR_TRAIN_IMAGES, present, folder)
    elif name == "digits":
        train = _DIGITS_IMAGES - _DIGITS_TEST_SIZE
        info = (10, 3, 32, train, True, "scikit-learn's bundled digits")
    elif name.startswith("imagefolder:"):
        root, classes, samples, _ = scan_folder(name)
        size = 224  # the crop the network sees (docs/paper.md §5, ImageNet recipe)
        if is_small(root, samples):
            w, h = image_size(root / samples[0][0])
            size = h if h == w else (h, w)
        info = (len(classes), 3, size, len(samples), True, str(root))
    else:
        raise _unknown(name)
    return DatasetInfo(*info)


def ensure_available(
    name: str, data_dir: str | Path = "./data", download: bool = True
) -> DatasetInfo:
    """The data set's info once it is on disk: a missing CIFAR set is downloaded here (with
    torchvision's progress bar) when `download`, else, or when that fails, a DataError."""
    info = dataset_info(name, data_dir)
    if info.present:
        return info
    data_dir = Path(data_dir).expanduser().resolve()
    if not download:
        raise _cifar_missing(name, data_dir)
    # Into a temporary folder first: a failed download leaves nothing behind, and a
    # finished one appears whole.
    with tempfile.TemporaryDirectory(prefix="ablate-download-") as tmp:
        cls = _cifar_class(name)
        try:
            cls(root=tmp, train=True, download=True)
            cls(root=tmp, train=False, download=True)
        except Exception as e:  # any network or archive failure ends the same way
            reason = f"offline? {one_line(e, 140)}"
            raise _cifar_missing(name, data_dir, reason) from None
        data_dir.mkdir(parents=True, exist_ok=True)
        folder = cls.base_folder
        shutil.rmtree(data_dir / folder, ignore_errors=True)  # an incomplete earlier copy
        shutil.move(str(Path(tmp) / folder), data_dir / folder)
    return dataset_info(name, data_dir)


def load_dataset(
    name: str,
    data_dir: str | Path = "./data",
    val_size: int | None = None,
    split_seed: int = 0,
) -> ImageSplits | StreamingSplits:
    """Load `name` (one of DATASETS), its training set split into train/validation by a
    randperm seeded with split_seed (val_size: default_val_size). Never downloads."""
    data_dir = Path(data_dir).expanduser().resolve()
    if name in _CIFAR_FILES:
        x, y, tx, ty, k = _load_cifar(name, data_dir)
    elif name == "digits":
        x, y, tx, ty, k = _load_digits()
    elif name.startswith("imagefolder:"):
        root, classes, train, test = scan_folder(name)
        if not is_small(root, train):
            return streaming_splits(name, (root, classes, train, test), val_size, split_seed)
        x, y, tx, ty = cached_decode(root, classes, train, test, data_dir)
        k = len(classes)
    else:
        raise _unknown(name)
    return image_splits(name, x, y, tx, ty, k, val_size, split_seed)


Arrays = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]


def _load_cifar(name: str, data_dir: Path) -> Arrays:
    cls = _cifar_class(name)
    try:
        train = cls(root=str(data_dir), train=True, download=False)
        test = cls(root=str(data_dir), train=False, download=False)
    except RuntimeError:  # missing or corrupted: torchvision checks each file's md5
        raise _cifar_missing(name, data_dir) from None

    def arrays(ds) -> tuple[torch.Tensor, torch.Tensor]:
        # .data is N x H x W x C uint8
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return x, torch.tensor(ds.targets, dtype=torch.int64)

    return *arrays(train), *arrays(test), len(train.classes)


def _load_digits() -> Arrays:
    """scikit-learn's 8x8 digits (values 0..16) as 3 x 32 x 32 uint8, fixed 297-image test."""
    from sklearn.datasets import load_digits  # lazy: resnet otherwise needs torch only
    from sklearn.model_selection import train_test_split

    d = load_digits()
    idx = np.arange(len(d.target))
    train, test = train_test_split(
        idx, test_size=_DIGITS_TEST_SIZE, stratify=d.target, random_state=0
    )
    img = torch.from_numpy(d.images).to(torch.float32).unsqueeze(1) * (255 / 16)
    img = F.interpolate(img, size=(32, 32), mode="bilinear", align_corners=False)
    # Three identical channels so CIFAR models (and the paper's parameter counts) apply.
    x = img.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(d.target).to(torch.int64)
    train, test = torch.from_numpy(np.sort(train)), torch.from_numpy(np.sort(test))
    return x[train].contiguous(), y[train], x[test].contiguous(), y[test], 10


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


def streaming_splits(name: str, scan: tuple, val_size: int | None, seed: int) -> StreamingSplits:
    """The splits of a folder of large images; `scan` is scan_folder's result."""
    root, classes, train, test = scan
    val_size = default_val_size(name, len(train)) if val_size is None else val_size
    train_idx, val_idx, digest = split_indices(name, len(train), val_size, seed)
    train_s = [train[i] for i in train_idx.tolist()]
    # Mean/std of a fixed (seed 0) sample of training images, as evaluation sees them.
    pick = torch.randperm(len(train_s), generator=torch.Generator().manual_seed(0))
    reader = Reader(root, torch.device("cpu"))
    x, _ = reader.batch(reader.submit([train_s[i] for i in pick[:_STATS_SAMPLE].tolist()]))
    val_s, (mean, std) = [train[i] for i in val_idx.tolist()], channel_stats(x)
    return StreamingSplits(name, root, train_s, val_s, test, len(classes), mean, std, digest)
