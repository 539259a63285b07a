"""Data sets as train/validation/test splits.

Small images (CIFAR, digits, small image folders) come back as uint8 tensors held in
memory (`ImageSplits`, layout N x C x H x W); large images (ImageNet-style folders) as
file lists decoded by DataLoader workers (`StreamingSplits`, see `streaming_loader`).
The validation split is carved out of the training set (PAPER.md section 4: the schedule
was chosen on a 45k/5k split); the test set is only returned, never used to choose.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

try:  # deprecated since torchvision 0.29 (TorchCodec replaces it); PIL decodes without it
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg
except ImportError:
    decode_image = decode_jpeg = None

DATASETS = ("cifar10", "cifar100", "digits", "imagefolder:<path>")

# Folders whose images are all at most this size are decoded once and held in memory.
SMALL_IMAGE_MAX = 64
CACHE_VERSION = 1
_LAYOUT = "expected <path>/train/<class>/<image> and <path>/test/<class>/<image> (or val/)"
_DIGITS_TEST_SIZE = 297
_STATS_SAMPLE = 256  # images used to estimate mean/std of a streamed folder


class DataError(ValueError):
    """One-line message naming what is wrong and what is allowed."""


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


@dataclass(frozen=True, eq=False)
class StreamingSplits:
    """Large images as (path relative to root, label) lists, decoded by loader workers."""

    name: str
    root: Path
    train_samples: list[tuple[str, int]]
    val_samples: list[tuple[str, int]]
    test_samples: list[tuple[str, int]]
    num_classes: int
    mean: tuple[float, ...]  # estimated from a fixed sample of training images
    std: tuple[float, ...]
    val_digest: str


def load_dataset(
    name: str,
    data_dir: str | Path = "./data",
    val_size: int | None = None,
    split_seed: int = 0,
) -> ImageSplits | StreamingSplits:
    """Load `name` (one of DATASETS) and split its training set into train/validation.

    val_size defaults to 5000 for CIFAR (the paper's 45k/5k) and 10% of the training set
    otherwise; the split is a randperm seeded with split_seed.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    if name in ("cifar10", "cifar100"):
        x, y, tx, ty, k = _load_cifar(name, data_dir)
    elif name == "digits":
        x, y, tx, ty, k = _load_digits()
    elif name.startswith("imagefolder:"):
        root, classes, train, test = _scan_folder(name)
        if not _is_small(root, train):
            return _streaming_splits(name, root, classes, train, test, val_size, split_seed)
        x, y, tx, ty = _cached_decode(root, classes, train, test, data_dir)
        k = len(classes)
    else:
        raise DataError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    if val_size is None:
        val_size = 5000 if name.startswith("cifar") else round(0.1 * len(y))
    train_idx, val_idx, digest = _split(name, len(y), val_size, split_seed)
    train_x = x[train_idx].contiguous()
    mean, std = _channel_stats(train_x)
    return ImageSplits(
        name=name,
        train_x=train_x,
        train_y=y[train_idx].contiguous(),
        val_x=x[val_idx].contiguous(),
        val_y=y[val_idx].contiguous(),
        test_x=tx,
        test_y=ty,
        num_classes=k,
        mean=mean,
        std=std,
        val_digest=digest,
    )


def dataset_info(name: str, data_dir: str | Path = "./data") -> dict:
    """{"num_classes", "image_size", "in_channels"} without decoding any data set.

    Raises DataError for an unknown name or a bad image folder. CIFAR files are not
    checked here, because load_dataset may still download them.
    """
    if name in ("cifar10", "cifar100"):
        return {"num_classes": 10 if name == "cifar10" else 100, "image_size": 32, "in_channels": 3}
    if name == "digits":
        return {"num_classes": 10, "image_size": 32, "in_channels": 3}
    if name.startswith("imagefolder:"):
        root, classes, train, _ = _scan_folder(name)
        if _is_small(root, train):
            w, h = _image_size(root / train[0][0])
            size: int | tuple[int, int] = h if h == w else (h, w)
        else:
            size = 224  # the crop the network sees (PAPER.md section 5, ImageNet recipe)
        # Every image is converted to RGB, as torchvision's ImageFolder does.
        return {"num_classes": len(classes), "image_size": size, "in_channels": 3}
    raise DataError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")


def _split(name: str, n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Sorted train and validation indices into the n training images, and the digest."""
    if not 0 <= val_size < n:
        raise DataError(f"val_size={val_size} for {name} must be in [0, {n}) (training images)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx = perm[:val_size].sort().values
    train_idx = perm[val_size:].sort().values
    digest = hashlib.sha256(val_idx.numpy().astype("<i8").tobytes()).hexdigest()[:16]
    return train_idx, val_idx, digest


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
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


Arrays = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]


def _load_cifar(name: str, data_dir: Path) -> Arrays:
    cls = CIFAR10 if name == "cifar10" else CIFAR100
    try:
        train = cls(root=str(data_dir), train=True, download=False)
    except RuntimeError:  # missing or corrupted: torchvision checks each file's md5
        try:
            train = cls(root=str(data_dir), train=True, download=True)
        except Exception as e:  # any network or archive failure ends the same way
            reason = f"{type(e).__name__}: {e}".splitlines()[0][:120]
            raise DataError(
                f"{name} not found in {data_dir} and could not be downloaded (offline? "
                f"{reason}); put the official {cls.base_folder} there, or use "
                "--dataset imagefolder:<path> or digits"
            ) from None
    test = cls(root=str(data_dir), train=False, download=False)

    def arrays(ds: CIFAR10) -> tuple[torch.Tensor, torch.Tensor]:
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


def _scan_folder(name: str) -> tuple[Path, list[str], list, list]:
    """Root, classes and (relative path, label) lists of train and test (or val)."""
    path = name.removeprefix("imagefolder:")
    if not path:
        raise DataError(f"imagefolder: needs a path; {_LAYOUT}")
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"imagefolder:{root} does not exist; {_LAYOUT}")
    if not (root / "train").is_dir():
        raise DataError(f"imagefolder:{root} has no train/ folder; {_LAYOUT}")
    eval_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if eval_dir is None:
        raise DataError(f"imagefolder:{root} has neither test/ nor val/; {_LAYOUT}")
    try:
        classes, class_to_idx = find_classes(root / "train")
        train = make_dataset(root / "train", class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as e:
        raise DataError(f"imagefolder:{root}/train: {e}; {_LAYOUT}") from None
    extra = {p.name for p in eval_dir.iterdir() if p.is_dir()} - set(classes)
    if extra:
        raise DataError(
            f"imagefolder:{eval_dir} has classes not in train/: {', '.join(sorted(extra))}"
        )
    test = make_dataset(eval_dir, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not test:
        raise DataError(f"imagefolder:{eval_dir} holds no images; {_LAYOUT}")

    def rel(samples: list[tuple[str, int]]) -> list[tuple[str, int]]:
        # make_dataset joins onto the directory given, so every path starts with root.
        n = len(os.path.join(root, ""))
        return [(p[n:], y) for p, y in samples]

    return root, classes, rel(train), rel(test)


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:  # reads the header only
            return im.size
    except OSError as e:
        raise DataError(f"imagefolder: cannot read {path}: {e}") from None


def _is_small(root: Path, samples: list[tuple[str, int]], probe: int = 8) -> bool:
    return all(max(_image_size(root / p)) <= SMALL_IMAGE_MAX for p, _ in samples[:probe])


def _cache_dir(data_dir: Path) -> Path:
    env = os.environ.get("ABLATE_CACHE_DIR")
    return Path(env).expanduser() if env else data_dir / ".ablate-cache"


def _cached_decode(
    root: Path, classes: list[str], train: list, test: list, data_dir: Path
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode a small-image folder once; later loads read `<cache>/<key>.pt`.

    The key hashes every file's relative path and bytes, so any edit re-decodes. On the
    real CIFAR-10 JPEG copy (60k files, 55 MB) that read + blake2b takes about 1 s, so
    content hashing is affordable and no path/size/mtime shortcut is used.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(f"ablate-imagefolder-v{CACHE_VERSION}\0RGB\0{chr(0).join(classes)}\0".encode())
    raw = []
    for rel, _ in train + test:
        with open(os.path.join(root, rel), "rb", buffering=0) as f:
            data = f.readall()  # unbuffered: measured 2x faster than np.fromfile here
        h.update(rel.encode() + b"\0" + len(data).to_bytes(8, "little"))
        h.update(data)
        raw.append(data)
    path = _cache_dir(data_dir) / f"{h.hexdigest()}.pt"
    if path.is_file():
        try:
            c = torch.load(path, weights_only=True)
            return c["train_x"], c["train_y"], c["test_x"], c["test_y"]
        except Exception as e:  # a corrupt cache is rebuilt, not fatal
            warnings.warn(f"ignoring unreadable cache {path}: {e}", stacklevel=2)
    x = _decode_all(root, [r for r, _ in train + test], raw)
    del raw
    n = len(train)
    labels = torch.tensor([y for _, y in train + test], dtype=torch.int64)
    out = {
        "version": CACHE_VERSION,
        "classes": list(classes),
        "train_x": x[:n].clone(),
        "train_y": labels[:n].clone(),
        "test_x": x[n:].clone(),
        "test_y": labels[n:].clone(),
    }
    _atomic_save(out, path)
    return out["train_x"], out["train_y"], out["test_x"], out["test_y"]


def _atomic_save(obj: dict, path: Path) -> None:
    """torch.save to a temporary file beside `path`, then rename: readers never see halves."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(obj, f)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared cache should be readable
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:  # a read-only data dir only costs a re-decode next time
        warnings.warn(f"could not write cache {path}: {e}", stacklevel=3)


def _decode_all(root: Path, rels: list[str], raw: list[bytes]) -> torch.Tensor:
    """Decode encoded images to one uint8 N x 3 x H x W tensor (all must share H x W).

    JPEGs go through batched decode_jpeg (about 2x faster than one decode_image call
    per file, measured on the CIFAR-10 copy); other formats one by one, PIL as fallback.
    """
    out: torch.Tensor | None = None

    def put(i: int, img: torch.Tensor) -> None:
        nonlocal out
        if out is None:
            out = torch.empty((len(rels), *img.shape), dtype=torch.uint8)
        if img.shape != out.shape[1:]:
            first = tuple(out.shape[2:])
            raise DataError(
                f"imagefolder:{root}: {rels[i]} is {tuple(img.shape[1:])}, the first image "
                f"{first}; images of at most {SMALL_IMAGE_MAX}px must all share one size"
            )
        out[i] = img

    jpeg = [i for i, d in enumerate(raw) if decode_jpeg and d[:2] == b"\xff\xd8"]
    other = sorted(set(range(len(raw))) - set(jpeg))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
        for start in range(0, len(jpeg), 1024):
            idx = jpeg[start : start + 1024]
            try:
                imgs = decode_jpeg([_as_tensor(raw[i]) for i in idx], mode=ImageReadMode.RGB)
            except RuntimeError:  # one bad file fails the batch; find it one by one
                other.extend(idx)
                continue
            for i, img in zip(idx, imgs, strict=True):
                put(i, img)
        for i in other:
            put(i, _decode_one(root, rels[i], raw[i]))
    assert out is not None
    return out


def _as_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)  # writable copy, no warning


def _decode_one(root: Path, rel: str, data: bytes) -> torch.Tensor:
    if decode_image is not None:
        try:
            return decode_image(_as_tensor(data), mode=ImageReadMode.RGB)
        except RuntimeError:
            pass
    try:  # formats torchvision.io does not read (BMP, TIFF, ...)
        with Image.open(root / rel) as im:
            arr = np.asarray(im.convert("RGB"))
    except OSError as e:
        raise DataError(f"imagefolder:{root}: cannot decode {rel}: {e}") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _streaming_splits(
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
    train_idx, val_idx, digest = _split(name, len(train), val_size, split_seed)
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
    return _channel_stats(torch.stack(imgs))


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

    train=True: the paper's ImageNet augmentation (PAPER.md section 5): shorter side
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
