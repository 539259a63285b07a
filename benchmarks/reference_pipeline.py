"""The popular CIFAR training pipeline, as the speed benchmark's reference.

How popular CIFAR reproductions train (e.g. kuangliu/pytorch-cifar): torchvision
ImageFolder (or CIFAR10) + DataLoader(shuffle, batch 128, 2 workers) with per-image PIL
transforms (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize), fp32,
plain SGD (momentum 0.9, wd 1e-4) and `.item()` every step. It reads the data with
reference_train.py's loaders (the accuracy reference, a whole independent trainer) and
shares the model builder with the engine; the timing is the engine benchmark's.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision import transforms

from benchmarks.bench_engine import timed
from benchmarks.reference_train import Transformed, raw_splits
from resnet.config import TrainConfig
from resnet.data import DataError, ImageSplits


def reference_dataset(name: str, data_dir: str, data: ImageSplits) -> torch.utils.data.Dataset:
    """The training images read as the reference reads them (reference_train.py's loaders:
    ImageFolder, CIFAR10, or digits as PIL images), with the popular per-image transforms."""
    size = data.train_x.shape[-1]
    transform = transforms.Compose(
        [
            transforms.RandomCrop(size, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(data.mean, data.std),
        ]
    )
    ds = Transformed(raw_splits(name, data_dir)[0], transform)
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
