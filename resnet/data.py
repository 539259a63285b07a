"""The data sets by name: what each is, whether it is present, and loading it as splits:
small images as uint8 tensors in memory (`ImageSplits`), large ones (ImageNet-style
folders) as file lists decoded batch by batch (`StreamingSplits`). Finding and loading are
separate on purpose: a study's driver checks (and downloads CIFAR once) with
`ensure_available`; trials only `load_dataset`, which never downloads.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from resnet.errors import DataError
from resnet.folder import cached_decode, image_size, is_small, scan_folder
from resnet.splits import ImageSplits, StreamingSplits, image_splits
from resnet.streaming import streaming_splits

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


def _unknown(name: str) -> DataError:
    return DataError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")


def _cifar_class(name: str):
    from torchvision.datasets import CIFAR10, CIFAR100  # seconds to import: only when used

    return CIFAR10 if name == "cifar10" else CIFAR100


def _cifar_files(name: str, data_dir: Path) -> list[Path]:
    folder, train, test = _CIFAR_FILES[name]
    return [data_dir / folder / f for f in (*train, *test)]


def _cifar_missing(name: str, data_dir: Path, reason: str = "") -> DataError:
    why = f" and could not be downloaded ({reason})" if reason else ""
    return DataError(
        f"{name} not found in {data_dir}{why}; put the official {_CIFAR_FILES[name][0]} "
        "there (or let `ablate run` download it), or use --dataset imagefolder:<path> or "
        "digits"
    )


def dataset_info(name: str, data_dir: str | Path = "./data") -> dict:
    """What the data set is, without decoding it: `num_classes`, `in_channels`, `image_size`,
    `train_images` (before the validation split), `present` (False only for a CIFAR set
    not yet downloaded) and `location`. DataError for an unknown name or a bad folder."""
    data_dir = Path(data_dir).expanduser().resolve()
    # in_channels is 3 throughout: every image is converted to RGB, as ImageFolder does.
    if name in _CIFAR_FILES:
        present = all(p.is_file() for p in _cifar_files(name, data_dir))
        folder = str(data_dir / _CIFAR_FILES[name][0])
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
    keys = ("num_classes", "in_channels", "image_size", "train_images", "present", "location")
    return dict(zip(keys, info, strict=True))


def ensure_available(name: str, data_dir: str | Path = "./data", download: bool = True) -> dict:
    """The data set's info once it is on disk: a missing CIFAR set is downloaded here (with
    torchvision's progress bar) when `download`, else, or when that fails, a DataError."""
    info = dataset_info(name, data_dir)
    if info["present"]:
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
            reason = f"offline? {type(e).__name__}: {e}".splitlines()[0][:160]
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
