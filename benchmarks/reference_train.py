"""A deliberately plain CIFAR trainer, independent of the engine in `resnet/`.

It shares only the model builder with ablate. Everything else is the textbook pipeline:
per-image torchvision transforms (RandomCrop(32, padding=4), RandomHorizontalFlip,
ToTensor, Normalize with the training split's per-channel mean/std), a shuffling
DataLoader, fp32, torch.optim.SGD and MultiStepLR stepped once per iteration, with the
learning rate divided by 10 at 50% and 75% of the iterations (He et al. 2015, Sec. 4.2:
32k and 48k of 64k). The data sets, the digits construction and the train/validation
split rule are re-implemented here on purpose, so that a bug in `resnet/data.py` or
`resnet/augment.py` cannot hide in both sides of `benchmarks/equivalence.py`, which runs it.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resnet import ModelSpec, build  # noqa: E402

DIGITS_TEST_SIZE = 297
EVAL_BATCH = 1000


class Pictures(Dataset):
    """uint8 N x 3 x H x W images served one PIL image at a time, as CIFAR10 serves them."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform=None) -> None:
        self.hwc = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())
        self.targets, self.transform = y.tolist(), transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.hwc[i])
        return (self.transform(img) if self.transform else img), self.targets[i]


def digits_images() -> tuple[Pictures, Pictures]:
    """scikit-learn's 8x8 digits (0..16) as 32x32 RGB uint8; 297 stratified test images."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    idx = np.arange(len(d.target))
    tr, te = train_test_split(idx, test_size=DIGITS_TEST_SIZE, stratify=d.target, random_state=0)
    img = torch.tensor(d.images, dtype=torch.float32)[:, None] * 255 / 16
    img = F.interpolate(img, size=(32, 32), mode="bilinear", align_corners=False)
    x = img.round().clamp(0, 255).to(torch.uint8).repeat(1, 3, 1, 1)
    y = torch.tensor(d.target, dtype=torch.int64)
    tr, te = np.sort(tr), np.sort(te)
    return Pictures(x[tr], y[tr]), Pictures(x[te], y[te])


def raw_splits(dataset: str, data_dir: str) -> tuple[Dataset, Dataset]:
    """The training and test sets, items (PIL image, label), no transform yet."""
    if dataset == "digits":
        return digits_images()
    if dataset == "cifar10":
        root = str(Path(data_dir).expanduser())
        return datasets.CIFAR10(root, train=True), datasets.CIFAR10(root, train=False)
    if dataset.startswith("imagefolder:"):
        root = Path(dataset.removeprefix("imagefolder:")).expanduser()
        return datasets.ImageFolder(root / "train"), datasets.ImageFolder(root / "test")
    raise ValueError(f"unknown dataset {dataset!r}: digits, cifar10 or imagefolder:PATH")


class Transformed(Dataset):
    """A view of `base` (optionally only the items `indices`) with a transform applied."""

    def __init__(self, base: Dataset, transform, indices: list[int] | None = None) -> None:
        self.base, self.transform = base, transform
        self.indices = indices if indices is not None else list(range(len(base)))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        img, label = self.base[self.indices[i]]
        return self.transform(img), label


def channel_stats(ds: Dataset, indices: list[int]) -> tuple[tuple, tuple]:
    """Population mean and std per channel of the images `indices` scaled to [0, 1],
    from exact integer sums of the pixel values and their squares."""
    total = np.zeros(3, dtype=np.int64)
    squares = np.zeros(3, dtype=np.int64)
    for i in indices:
        px = np.asarray(ds[i][0].convert("RGB"), dtype=np.int64).reshape(-1, 3)
        total += px.sum(0)
        squares += (px * px).sum(0)
    count = len(indices) * px.shape[0]
    mean = total / count / 255
    std = np.sqrt(squares / count / 255**2 - mean**2)
    return tuple(mean.tolist()), tuple(std.tolist())


@dataclass
class ReferenceData:
    train: Dataset  # augmented
    val: Dataset  # unaugmented
    test: Dataset
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    val_digest: str  # sha256[:16] of the sorted validation indices (int64 little-endian)


def load_reference_data(
    dataset: str, data_dir: str = "./data", val_size: int | None = None, augment: bool = True
) -> ReferenceData:
    """Splits and transforms. Validation: 5,000 images for CIFAR-10 (the paper's 45k/5k),
    10% of the training set otherwise, chosen by a randperm seeded 0."""
    train, test = raw_splits(dataset, data_dir)
    n = len(train)
    if val_size is None:
        val_size = 5000 if dataset == "cifar10" else round(0.1 * n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    val_idx, train_idx = perm[:val_size].sort().values, perm[val_size:].sort().values
    digest = hashlib.sha256(val_idx.numpy().astype("<i8").tobytes()).hexdigest()[:16]
    mean, std = channel_stats(train, train_idx.tolist())
    to_tensor = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    aug = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    plain = transforms.Compose(to_tensor)
    return ReferenceData(
        train=Transformed(
            train, transforms.Compose(aug + to_tensor if augment else to_tensor), train_idx.tolist()
        ),
        val=Transformed(train, plain, val_idx.tolist()),
        test=Transformed(test, plain),
        num_classes=len(getattr(train, "classes", None) or set(train.targets)),
        mean=mean,
        std=std,
        val_digest=digest,
    )


@dataclass
class ReferenceConfig:
    depth: int = 20
    shortcut: str = "A"
    width: int | None = None
    iterations: int = 64_000
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 0
    window: int | None = None  # iterations per train-error window; None: one pass
    workers: int = 2
    device: str = "cpu"


@torch.no_grad()
def error(model: torch.nn.Module, ds: Dataset, device: torch.device, workers: int) -> float:
    model.eval()
    wrong = total = 0
    for x, y in DataLoader(ds, batch_size=EVAL_BATCH, num_workers=workers):
        wrong += (model(x.to(device)).argmax(1).cpu() != y).sum().item()
        total += len(y)
    model.train()
    return wrong / total


def train_reference(data: ReferenceData, cfg: ReferenceConfig) -> dict:
    """Train one model; returns final train error (mean over the last window), val and test
    error (fractions). The windows are [0, w), [w, 2w), ...; the last one may be shorter and
    ends at the last iteration, as the engine's last evaluation record does."""
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    spec = ModelSpec(
        depth=cfg.depth, shortcut=cfg.shortcut, width=cfg.width, num_classes=data.num_classes
    )
    model = build(spec).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    n = cfg.iterations
    milestones = [round(0.5 * n), round(0.75 * n)]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    loader = DataLoader(
        data.train,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=cfg.workers,
        persistent_workers=cfg.workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    window = cfg.window or len(loader)
    last_window_start = (n - 1) // window * window
    wrong = seen = it = 0
    model.train()
    while it < n:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out = model(x)
            loss = F.cross_entropy(out, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            if it >= last_window_start:
                wrong += (out.argmax(1) != y).sum().item()
                seen += len(y)
            it += 1
            if it == n:
                break
    return {
        "train_error": wrong / seen,
        "val_error": error(model, data.val, device, cfg.workers) if len(data.val) else None,
        "test_error": error(model, data.test, device, cfg.workers),
        "lr_final": optimizer.param_groups[0]["lr"],
    }
