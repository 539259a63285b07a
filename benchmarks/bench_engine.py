"""The engine under the speed benchmark's control: variants, timing, data, rates.

Shared by train_bench.py's modes (compare, full trial, packing): how a variant of the
engine is named and run, the engine's own splits, and images/s read from train()'s
evaluation records (each covers the steps since the previous one, evaluation excluded).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import platform
import time
from pathlib import Path
from unittest import mock

import torch

import resnet.model
import resnet.train as engine
from resnet.augment import ResidentBatches
from resnet.config import PRECISIONS, TrainConfig
from resnet.data import DataError, ImageSplits, load_dataset
from resnet.model import ResNet, build
from resnet.train import Callback, train

PAPER_ITERATIONS = 64_000
# Test images kept for the engine's evaluations during throughput runs: those run
# outside its images/s window anyway, so a small set only saves wall time.
BENCH_TEST_IMAGES = 128
STEP_FORMS = ("eager", "graph", "compile")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way of running the engine: `FORM-PRECISION[-contiguous][@DEPTH,...]`.

    FORM is `eager` or `graph` (the `step` setting) or `compile` (eager step with
    torch.compile); PRECISION `fp32` or `bf16`. `-contiguous` is a benchmark-only variant:
    the engine with its channels_last memory format turned off (model and batches left
    in the default layout), to see what channels_last costs or buys. `@20,110` limits the
    variant to those depths."""

    form: str = "eager"
    precision: str = "fp32"
    contiguous: bool = False
    depths: tuple[int, ...] | None = None

    @property
    def name(self) -> str:
        return f"{self.form}-{self.precision}" + ("-contiguous" if self.contiguous else "")

    @property
    def step(self) -> str:
        return "graph" if self.form == "graph" else "eager"

    @property
    def compile(self) -> bool:
        return self.form == "compile"

    @property
    def label(self) -> str:
        """The name with its depths, as given on the command line."""
        return self.name + ("@" + ",".join(map(str, self.depths)) if self.depths else "")

    def applies(self, depth: int) -> bool:
        return self.depths is None or depth in self.depths

    @classmethod
    def parse(cls, text: str) -> Variant:
        spec, _, at = text.partition("@")
        parts = spec.split("-")
        ok = 2 <= len(parts) <= 3 and parts[0] in STEP_FORMS and parts[1] in PRECISIONS
        if not ok or (len(parts) == 3 and parts[2] != "contiguous"):
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected FORM-PRECISION[-contiguous][@DEPTH,...] with FORM in "
                f"{', '.join(STEP_FORMS)} and PRECISION in {', '.join(PRECISIONS)}"
            )
        try:
            depths = tuple(int(d) for d in at.split(",")) if at else None
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: depths after @ must be integers") from None
        return cls(parts[0], parts[1], len(parts) == 3, depths)

    @classmethod
    def of_args(cls, args) -> Variant:
        """The single variant the --step, --precision and --compile flags describe."""
        if args.compile and args.step == "graph":
            raise SystemExit("train_bench: --step graph captures the step itself; drop --compile")
        return cls("compile" if args.compile else args.step, args.precision)


class _ContiguousResNet(ResNet):
    """A ResNet that declines the engine's request for channels_last."""

    def to(self, *args, memory_format=None, **kwargs):
        return super().to(*args, **kwargs)


class _ContiguousBatches(ResidentBatches):
    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = super().next()
        return x.contiguous(), y


@contextlib.contextmanager
def memory_format(variant: Variant):
    """For a `-contiguous` variant, train() builds a model that stays in the default
    layout and feeds it default-layout batches; nothing else of the engine changes."""
    if not variant.contiguous:
        yield
        return

    def build_contiguous(spec, init: bool = True):
        model = build(spec, init)
        model.__class__ = _ContiguousResNet
        return model

    with (
        mock.patch.object(resnet.model, "build", build_contiguous),  # the ResNet builder's
        mock.patch.object(engine, "ResidentBatches", _ContiguousBatches),
    ):
        yield


def engine_data(name: str, data_dir: str, val_size: int | None = 0) -> ImageSplits:
    """The engine's splits; val_size=0 trains on the whole train folder, as the reference."""
    data = load_dataset(name, data_dir, val_size)
    if not isinstance(data, ImageSplits):
        raise DataError(f"{name} holds large images; this benchmark is for small (CIFAR) ones")
    return data


def bench_view(data: ImageSplits) -> ImageSplits:
    """The same training images with a small test set (see BENCH_TEST_IMAGES)."""
    n = BENCH_TEST_IMAGES
    return dataclasses.replace(data, test_x=data.test_x[:n], test_y=data.test_y[:n])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, warmup: int, iterations: int, device: torch.device) -> float:
    """Seconds for `iterations` calls of step after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    sync(device)
    return time.perf_counter() - start


def engine_loader_rate(data: ImageSplits, args, device) -> float:
    x, y = data.train_x.to(device), data.train_y.to(device)  # once, as train() does
    batches = ResidentBatches(x, y, args.batch_size, 0, data.mean, data.std)
    seconds = timed(batches.next, args.warmup, args.iterations, device)
    return args.iterations * args.batch_size / seconds


class Records(Callback):
    def __init__(self) -> None:
        self.records: list[dict] = []

    def on_eval(self, record: dict) -> None:
        self.records.append(record)


def windows(records: list[dict], batch_size: int, start: int = 0) -> tuple[int, float]:
    """Images and training seconds of the steps the records cover, after `start`.

    Each record's images_per_s covers the steps since the previous record, evaluation
    excluded (resnet/train.py), so the windows add up to those steps exactly.
    """
    images, seconds, prev = 0, 0.0, start
    for r in records:
        n = (r["iteration"] - prev) * batch_size
        images, seconds, prev = images + n, seconds + n / r["images_per_s"], r["iteration"]
    return images, seconds


def window_rate(records: list[dict], batch_size: int) -> tuple[int, float]:
    """Images and seconds after the first (warm-up) record."""
    return windows(records[1:], batch_size, records[0]["iteration"])


def engine_config(depth: int, args, iterations: int, variant: Variant, **extra) -> TrainConfig:
    return TrainConfig(
        depth=depth,
        dataset=args.data,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        iterations=iterations,
        device=args.device,
        precision=variant.precision,
        step=variant.step,
        compile=variant.compile,
        **extra,
    )


def engine_train_rate(data: ImageSplits, depth: int, args, variant: Variant) -> float:
    """The real engine: train() for warmup + iterations steps with eval_every=warmup, so
    the first record is the warm-up (graph capture and compilation included) and the
    later ones the timed window."""
    config = engine_config(
        depth, args, args.warmup + args.iterations, variant, val_size=0, eval_every=args.warmup
    )
    cb = Records()
    with memory_format(variant):
        result = train(config, cb, data=bench_view(data))
    if result.status != "finished":
        raise RuntimeError(f"engine run of depth {depth} ({variant.name}) ended {result.status}")
    images, seconds = window_rate(cb.records, args.batch_size)
    return images / seconds


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        else:
            model = platform.processor() or "CPU"
    except OSError:
        model = platform.processor() or "CPU"
    n = torch.get_num_threads()
    return f"{model} ({n} thread{'' if n == 1 else 's'})"
