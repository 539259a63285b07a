"""The popular CIFAR training pipeline, as the speed benchmark's reference.

How popular CIFAR reproductions train (e.g. kuangliu/pytorch-cifar): torchvision
ImageFolder (or CIFAR10) + DataLoader(shuffle, batch 128, 2 workers) with per-image PIL
transforms (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize), fp32,
plain SGD (momentum 0.9, wd 1e-4) and `.item()` every step. It shares the model builder
and the engine's loaded images (so both sides train on the same pictures), nothing else.
(benchmarks/reference_train.py is the other reference: a whole independent trainer, for
accuracy, not speed.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import datasets, transforms

from benchmarks.bench_engine import timed
from resnet.config import TrainConfig
from resnet.data import DataError, ImageSplits


class TensorImages(torch.utils.data.Dataset):
    """uint8 N x C x H x W tensors served as PIL images, one per item, like CIFAR10 does."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform) -> None:
        self.hwc = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())  # CIFAR10.data layout
        self.targets = y.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.hwc[i])), self.targets[i]


def reference_dataset(name: str, data_dir: str, data: ImageSplits) -> torch.utils.data.Dataset:
    size = data.train_x.shape[-1]
    transform = transforms.Compose(
        [
            transforms.RandomCrop(size, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(data.mean, data.std),
        ]
    )
    if name.startswith("imagefolder:"):
        root = Path(name.removeprefix("imagefolder:")).expanduser() / "train"
        ds = datasets.ImageFolder(str(root), transform=transform)
    elif name in ("cifar10", "cifar100"):
        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        ds = cls(str(Path(data_dir).expanduser()), train=True, transform=transform)
    else:  # digits: the same uint8 tensors, converted to PIL per item
        ds = TensorImages(data.train_x, data.train_y, transform)
    if len(ds) != len(data.train_x):
        raise DataError(f"reference has {len(ds)} training images, the engine {len(data.train_x)}")
    return ds


def reference_loader(ds, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers)


def epochs(loader):
    """Batches forever, a fresh iterator (and fresh workers) each epoch, as a script's
    `for epoch in ...: for x, y in loader:` does."""
    while True:
        yield from loader


def reference_loader_rate(ds, args, device) -> float:
    batches = epochs(reference_loader(ds, args.batch_size, args.workers))

    def step():
        x, y = next(batches)
        x, y = x.to(device), y.to(device)

    try:
        seconds = timed(step, args.warmup, args.iterations, device)
    finally:
        batches.close()  # ends the epoch's iterator and its workers
    return args.iterations * args.batch_size / seconds


def reference_train_rate(ds, data: ImageSplits, depth: int, args, device) -> float:
    """The popular training loop, fp32, default memory format, `.item()` every step."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as those scripts set it on CUDA
    config = TrainConfig(depth=depth)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the engine's initialization (seed 0)
        net = config.build_model(data.num_classes, data.train_x.shape[1])
    net = net.to(device)
    net.train()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    batches = epochs(reference_loader(ds, args.batch_size, args.workers))
    stats = {"loss": 0.0, "correct": 0, "total": 0}

    def step():
        inputs, targets = next(batches)
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad()
        outputs = net(inputs)
        loss = criterion(outputs, targets)
        loss.backward()
        optimizer.step()
        stats["loss"] += loss.item()
        stats["correct"] += outputs.max(1)[1].eq(targets).sum().item()
        stats["total"] += targets.size(0)

    try:
        seconds = timed(step, args.warmup, args.iterations, device)
    finally:
        batches.close()
    return args.iterations * args.batch_size / seconds
