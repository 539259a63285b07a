"""Training throughput: this engine against the popular CIFAR pipeline, in one run.

The reference is how popular CIFAR reproductions train (e.g. kuangliu/pytorch-cifar):
torchvision ImageFolder (or CIFAR10) + DataLoader(shuffle, batch 128, 2 workers) with
per-image PIL transforms (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor,
Normalize), fp32, plain SGD (momentum 0.9, wd 1e-4) and `.item()` every step. Ours is
`resnet.train.train` itself (device-resident uint8 data, whole-batch augmentation,
channels_last, fused SGD, and the precision, step form and compilation it is given).
Both train the same model, built from the same spec and seed, on the same training
images.

Per depth it prints images/s end to end (training steps including data) of the
reference and of each engine variant, of each loader alone (batches iterated and moved
to the device, no training), the ratios ours / reference, and per engine variant the
estimated time of a full trial with the paper's recipe (64k iterations of 128 images at
the measured rate, plus the measured time of the evaluations such a trial runs).
Targets: loader >= 20x everywhere; end to end >= 1.2x on 2 CPU cores, >= 8x on a GPU;
on a GPU a full trial of ResNet-20 / 56 / 110 in <= 2 / 5 / 9 minutes.

    python benchmarks/train_bench.py [--data imagefolder:PATH|digits|cifar10]
        [--depths 20 56 110] [--warmup W] [--iterations N] [--device auto|cpu|cuda]
        [--precision fp32|bf16] [--step eager|graph] [--compile]
        [--engine-variants eager-fp32 graph-fp32 graph-bf16 eager-fp32-contiguous@110]
        [--estimate] [--threads T] [--repeats R] [--stat best|median] [--json PATH]
    python benchmarks/train_bench.py --full-trial [--depths 20] [--iterations 64000]
        [--step graph] [--time-limit S]
    python benchmarks/train_bench.py --pack K [--depths 20] [--iterations N] [--step graph]

--full-trial trains one model per depth with the paper's recipe and prints its wall time
and final test error. --pack K runs K engine trainings as separate processes on one
device at once and prints their aggregate images/s against one alone.
Over 1000 lines, which is too many: it grew one mode at a time (compare, full trial,
packing, engine variants) and is run as a single file on a GPU machine. The next change
to it should split the reference pipeline and the modes into modules of their own.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402
from torchvision import datasets, transforms  # noqa: E402

import resnet.train as engine  # noqa: E402
from resnet.augment import ResidentBatches, eval_batches  # noqa: E402
from resnet.config import PRECISIONS, TrainConfig  # noqa: E402
from resnet.data import DataError, ImageSplits, load_dataset  # noqa: E402
from resnet.measure import evaluate  # noqa: E402
from resnet.model import ResNet, build  # noqa: E402
from resnet.splits import default_val_size  # noqa: E402
from resnet.train import Callback, resolve_device, train  # noqa: E402

TARGET_LOADER = 20.0
TARGET_E2E = {"cpu": 1.2, "cuda": 8.0}  # end to end, ours / reference, by device type
TARGET_TRIAL_MINUTES = {20: 2.0, 56: 5.0, 110: 9.0}  # a full trial on a GPU
PAPER_ITERATIONS = 64_000
# Test images kept for the engine's evaluations during throughput runs: those run
# outside its images/s window anyway, so a small set only saves wall time.
BENCH_TEST_IMAGES = 128
PACK_BARRIER_TIMEOUT_S = 1800
STEP_FORMS = ("eager", "graph", "compile")


# -------------------------------------------------------------------------- variants


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
        mock.patch.object(engine, "build", build_contiguous),
        mock.patch.object(engine, "ResidentBatches", _ContiguousBatches),
    ):
        yield


# ---------------------------------------------------------------------------- data


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


# -------------------------------------------------------------------- measurements


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


def engine_loader_rate(data: ImageSplits, args, device) -> float:
    x, y = data.train_x.to(device), data.train_y.to(device)  # once, as train() does
    batches = ResidentBatches(x, y, args.batch_size, 0, data.mean, data.std)
    seconds = timed(batches.next, args.warmup, args.iterations, device)
    return args.iterations * args.batch_size / seconds


def reference_train_rate(ds, data: ImageSplits, depth: int, args, device) -> float:
    """The popular training loop, fp32, default memory format, `.item()` every step."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as those scripts set it on CUDA
    spec = TrainConfig(depth=depth).model_spec(data.num_classes, data.train_x.shape[1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the engine's initialization (seed 0)
        net = build(spec)
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


def eval_seconds(data: ImageSplits, depth: int, precision: str, args, device) -> float:
    """Seconds of one of the engine's evaluations in a full trial: the validation split
    (as large as a default split would make it) and the whole test set, through the
    engine's own `evaluate` and evaluation batches. The fastest of two after a warm-up."""
    spec = TrainConfig(depth=depth).model_spec(data.num_classes, data.train_x.shape[1])
    with torch.random.fork_rng(devices=[]):
        model = build(spec).to(device, memory_format=torch.channels_last)
    n_val = default_val_size(args.data, len(data.train_x))
    sets = [
        (data.train_x[:n_val].to(device), data.train_y[:n_val].to(device)),
        (data.test_x.to(device), data.test_y.to(device)),
    ]

    def once() -> None:
        for x, y in sets:
            if len(x):
                batches = eval_batches(x, y, engine.EVAL_BATCH, data.mean, data.std)
                evaluate(model, batches, precision)

    once()
    best = math.inf
    for _ in range(2):
        start = time.perf_counter()
        once()  # ends with a host read, as the engine's does
        best = min(best, time.perf_counter() - start)
    return best


def trial_estimate(
    images_per_s: float,
    eval_s: float | None,
    train_images: int,
    data_name: str,
    batch_size: int,
    iterations: int = PAPER_ITERATIONS,
) -> dict:
    """A full trial's time from a measured training rate: `iterations` steps at that rate,
    plus, when `eval_s` is measured, one evaluation per pass over the training split (the
    engine's default interval) and one at the end."""
    train_size = train_images - default_val_size(data_name, train_images)
    eval_every = max(1, train_size // batch_size)
    evaluations = math.ceil(iterations / eval_every)
    train_s = iterations * batch_size / images_per_s
    evals_s = evaluations * eval_s if eval_s is not None else None
    return {
        "iterations": iterations,
        "train_s": train_s,
        "evaluations": evaluations,
        "eval_s_each": eval_s,
        "eval_s": evals_s,
        "minutes": (train_s + (evals_s or 0.0)) / 60,
        "includes_evaluation": eval_s is not None,
    }


def _order(items: list, repeat: int) -> list:
    """Alternate who goes first, so a neighbour's load on shared cores hits all sides."""
    return items if repeat % 2 == 0 else items[::-1]


def compare(args, device, save_partial=None) -> list[dict]:
    """Per depth, the reference and each engine variant; `save_partial(rows)` is called
    after each depth, so a run killed from outside keeps the depths it finished."""
    start = time.perf_counter()
    data = engine_data(args.data, args.data_dir)
    load_s = time.perf_counter() - start
    ds = reference_dataset(args.data, args.data_dir, data)
    print(
        f"data {args.data}: {len(data.train_x)} training images ({load_s:.1f} s to load); "
        f"warm-up {args.warmup}, timed {args.iterations} steps of {args.batch_size}; "
        f"{args.repeats} repeat(s); engine variants "
        + ", ".join(v.label for v in args.engine_variants)
    )
    pick = max if args.stat == "best" else statistics.median
    # The loaders do not depend on the depth: measured once per repeat.
    loaders: dict[str, list[float]] = {"ref_loader": [], "ours_loader": []}
    for r in range(args.repeats):
        for who in _order(["ref", "ours"], r):
            if who == "ref":
                loaders["ref_loader"].append(reference_loader_rate(ds, args, device))
            else:
                loaders["ours_loader"].append(engine_loader_rate(data, args, device))
    ref_loader, ours_loader = pick(loaders["ref_loader"]), pick(loaders["ours_loader"])
    print(
        f"loaders: reference {ref_loader:,.0f}, ours {ours_loader:,.0f} images/s "
        f"({ours_loader / ref_loader:.1f}x, target {TARGET_LOADER:.0f}x)"
    )
    target = TARGET_E2E.get(device.type, TARGET_E2E["cuda"])
    rows = []
    for depth in args.depths:
        variants = [v for v in args.engine_variants if v.applies(depth)]
        runs: dict[str, list[float]] = {"ref": [], **{v.name: [] for v in variants}}
        errors: dict[str, str] = {}
        for r in range(args.repeats):
            for who in _order(["ref", *variants], r):
                if who == "ref":
                    runs["ref"].append(reference_train_rate(ds, data, depth, args, device))
                    continue
                try:
                    runs[who.name].append(engine_train_rate(data, depth, args, who))
                except Exception as e:  # one failing variant must not lose the others' figures
                    errors[who.name] = _error(e)
                    traceback.print_exc()
            print(
                f"resnet{depth} repeat {r + 1}: "
                + ", ".join(f"{k} {v[-1]:,.0f}" if v else f"{k} failed" for k, v in runs.items())
                + " images/s",
                flush=True,
            )
        eval_s = {}
        if args.estimate:
            for precision in sorted({v.precision for v in variants}):
                try:
                    eval_s[precision] = eval_seconds(data, depth, precision, args, device)
                except Exception as e:
                    errors[f"evaluation {precision}"] = _error(e)
                    traceback.print_exc()
        ref = pick(runs["ref"])
        engines = []
        for v in variants:
            if not runs[v.name]:
                engines.append({"variant": v.name, "images_per_s": None, "error": errors[v.name]})
                continue
            rate = pick(runs[v.name])
            engines.append(
                {
                    "variant": v.name,
                    "step": v.step,
                    "precision": v.precision,
                    "compile": v.compile,
                    "contiguous": v.contiguous,
                    "images_per_s": rate,
                    "ratio": rate / ref,
                    # Noise on shared cores only ever slows a run, so the fastest of R
                    # runs is the least disturbed one (timeit's rule); the median beside it.
                    "best": max(runs[v.name]),
                    "median": statistics.median(runs[v.name]),
                    "runs": runs[v.name],
                    "trial": trial_estimate(
                        rate, eval_s.get(v.precision), len(data.train_x), args.data, args.batch_size
                    ),
                    "error": errors.get(v.name),
                }
            )
        first = engines[0] if engines else {}
        rows.append(
            {
                "model": f"ResNet-{depth}",
                "depth": depth,
                "stat": args.stat,
                "ref_images_per_s": ref,
                "ref_best": max(runs["ref"]),
                "ref_median": statistics.median(runs["ref"]),
                "ref_runs": runs["ref"],
                "ref_loader_images_per_s": ref_loader,
                "ours_loader_images_per_s": ours_loader,
                "loader_ratio": ours_loader / ref_loader,
                "loader_runs": loaders,
                "eval_s": eval_s,
                "errors": errors,
                "data_load_s": load_s,
                "engines": engines,
                # The first variant, under the names earlier versions of this file wrote.
                "ours_images_per_s": first.get("images_per_s"),
                "ratio": first.get("ratio"),
                "target_ratio": target,
                "target_trial_minutes": TARGET_TRIAL_MINUTES.get(depth)
                if device.type == "cuda"
                else None,
            }
        )
        if save_partial:
            save_partial(rows)
        print(
            f"resnet{depth}: end to end "
            + ", ".join(
                f"{e['variant']} {e['best'] / max(runs['ref']):.2f}x fastest-of-{args.repeats} "
                f"{e['median'] / statistics.median(runs['ref']):.2f}x median"
                if e["images_per_s"]
                else f"{e['variant']} failed ({e['error']})"
                for e in engines
            )
            + f" (target {target}x)"
        )
    return rows


def print_table(rows: list[dict], meta: dict) -> None:
    which = "fastest" if meta["stat"] == "best" else "median"
    print(f"\nimages/s: the {which} of {meta['repeats']} run(s) of {meta['iterations']} steps")
    print(
        "| model | pipeline | images/s | loader images/s | ratio (e2e / loader) "
        "| est. full trial (min) | device | torch |"
    )
    print("|---|---|--:|--:|--:|--:|---|---|")
    dev, tv = meta["device_name"], meta["torch"]
    for r in rows:
        print(
            f"| {r['model']} | reference (PIL DataLoader, fp32) | {r['ref_images_per_s']:,.0f} "
            f"| {r['ref_loader_images_per_s']:,.0f} | 1.00x / 1.0x | - | {dev} | {tv} |"
        )
        for e in r["engines"]:
            if e["images_per_s"] is None:
                print(f"| {r['model']} | ablate {e['variant']} | failed: {e['error']} |")
                continue
            print(
                f"| {r['model']} | ablate {e['variant']} | {e['images_per_s']:,.0f} "
                f"| {r['ours_loader_images_per_s']:,.0f} "
                f"| {e['ratio']:.2f}x / {r['loader_ratio']:.1f}x "
                f"| {_minutes(e['trial'])} | {dev} | {tv} |"
            )
    print()
    for r in rows:
        loader = "met" if r["loader_ratio"] >= TARGET_LOADER else "NOT met"
        parts = [f"loader >= {TARGET_LOADER:.0f}x {loader}"]
        for e in r["engines"]:
            if e["images_per_s"] is None:
                parts.append(f"{e['variant']} failed")
                continue
            e2e = "met" if e["ratio"] >= r["target_ratio"] else "NOT met"
            text = f"{e['variant']} end to end >= {r['target_ratio']}x {e2e}"
            limit = r["target_trial_minutes"]
            if limit is not None:
                fits = "met" if e["trial"]["minutes"] <= limit else "NOT met"
                text += f", full trial <= {limit:g} min {fits} (estimate)"
            parts.append(text)
        print(f"{r['model']}: " + "; ".join(parts))
    print(
        "Full-trial minutes are estimates: 64k iterations at the measured rate"
        + (" plus the measured evaluations" if meta.get("estimate") else " (no evaluations)")
        + "; data loading not included."
    )


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0][:300]


def _minutes(trial: dict) -> str:
    return f"{trial['minutes']:.1f}" + ("" if trial["includes_evaluation"] else " (no eval)")


# ------------------------------------------------------------- full trial and packing


class Progress(Records):
    """Records every evaluation; prints one line per tenth of the run and the last;
    asks train() to stop at `deadline` (time.monotonic()) and, when `save` is given,
    calls it at each printed line so a killed run still leaves its progress behind."""

    def __init__(self, iterations: int, deadline: float | None = None, save=None) -> None:
        super().__init__()
        self.iterations, self.next_print, self.t0 = iterations, iterations / 10, time.time()
        self.deadline, self.save = deadline, save

    def on_eval(self, record: dict) -> None:
        super().on_eval(record)
        it = record["iteration"]
        if it >= self.next_print or it == self.iterations:
            self.next_print += self.iterations / 10
            print(
                f"  iteration {it}/{self.iterations}: test error {_pct(record.get('test/error'))}, "
                f"{record['images_per_s']:,.0f} images/s, {time.time() - self.t0:.0f} s",
                flush=True,
            )
            if self.save:
                self.save(self)

    def should_stop(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline


def full_trial(args, device, save_partial=None) -> list[dict]:
    """One trial per depth with the paper's recipe (docs/paper.md §4)."""
    iterations = args.iterations
    variant = Variant.of_args(args)
    deadline = args.started + args.time_limit if args.time_limit else None
    start = time.perf_counter()
    data = engine_data(args.data, args.data_dir, val_size=None)  # CIFAR: the 45k/5k split
    load_s = time.perf_counter() - start
    print(f"data {args.data}: {len(data.train_x)} train / {len(data.val_x)} val, {load_s:.1f} s")
    split = {"train_images": len(data.train_x), "val_images": len(data.val_x)}
    rows: list[dict] = []
    for depth in args.depths:
        # docs/paper.md §4: ResNet-110 warms up at lr 0.01 until training error < 80%.
        warmup = "paper" if depth == 110 else "none"
        config = engine_config(depth, args, iterations, variant, warmup=warmup)
        print(
            f"full trial: ResNet-{depth} ({variant.name}), {iterations} iterations on {args.data}",
            flush=True,
        )

        def partial(cb: Progress, depth=depth) -> None:
            if save_partial:
                row = _trial_row(depth, variant, cb, None, time.time() - cb.t0, load_s, args)
                save_partial([*rows, {**row, **split}])

        cb = Progress(iterations, deadline, partial)
        start = time.perf_counter()
        result = train(config, cb, data=data)
        wall = time.perf_counter() - start
        row = {**_trial_row(depth, variant, cb, result, wall, load_s, args), **split}
        rows.append(row)
        note = ""
        if result.status == "stopped":
            note = (
                f" (stopped by the time limit at iteration {result.iterations}; a whole trial "
                f"would take about {row['projected_wall_s']:.0f} s)"
            )
        print(
            f"ResNet-{depth}: {result.status}, wall {wall:.1f} s (train() {result.wall_time_s:.1f}"
            f" s, of which evaluation {row['eval_s'] or 0:.1f} s), final test error "
            f"{_pct(row['test_error'])}, val error {_pct(row['val_error'])}, "
            f"{row['train_images_per_s'] or 0:,.0f} training images/s (evaluation excluded)" + note
        )
    return rows


def _trial_row(depth, variant, cb, result, wall, load_s, args) -> dict:
    """What a full trial gave: the summary of train(), or while it runs the last record."""
    images, train_s = windows(cb.records, args.batch_size)
    if result is not None:
        summary = result.summary()
    else:
        last = cb.records[-1] if cb.records else {}
        summary = {
            "status": "running",
            "iterations": last.get("iteration", 0),
            "train_error": last.get("train/error"),
            "val_error": last.get("val/error"),
            "test_error": last.get("test/error"),
            "wall_time_s": wall,
        }
    done = summary["iterations"] or 0
    return {
        "model": f"ResNet-{depth}",
        "depth": depth,
        "variant": variant.name,
        "precision": variant.precision,
        "step": variant.step,
        "compile": variant.compile,
        **summary,
        "target_iterations": args.iterations,
        "last_eval_iteration": cb.records[-1]["iteration"] if cb.records else None,
        "evaluations": len(cb.records),
        "wall_s": wall,
        "data_load_s": load_s,
        "train_s": train_s,
        # Evaluation (and the loop's bookkeeping) inside train()'s own clock.
        "eval_s": max(0.0, summary["wall_time_s"] - train_s) if cb.records else None,
        "train_images_per_s": images / train_s if train_s else None,
        "projected_wall_s": wall * args.iterations / done if done else None,
        "time_limit_s": args.time_limit,
        "target_minutes": TARGET_TRIAL_MINUTES.get(depth),
    }


def _pct(error: float | None) -> str:
    return "n/a" if error is None else f"{100 * error:.2f}%"


class Barrier(Records):
    """After the warm-up record, waits until all `count` workers got there, so the timed
    windows overlap; the wait sits between evaluation and the next lap of train()'s clock,
    outside images/s."""

    def __init__(self, folder: str, rank: int, count: int) -> None:
        super().__init__()
        self.folder, self.rank, self.count = Path(folder), rank, count
        self.t_start = self.t_end = 0.0

    def on_eval(self, record: dict) -> None:
        super().on_eval(record)
        if len(self.records) == 1:
            (self.folder / f"{self.rank}.ready").touch()
            deadline = time.time() + PACK_BARRIER_TIMEOUT_S
            while len(list(self.folder.glob("*.ready"))) < self.count:
                if time.time() > deadline:
                    raise RuntimeError("pack barrier: other workers never arrived")
                time.sleep(0.005)
            self.t_start = time.time()
        self.t_end = time.time()


PACK_KEYS = (
    "data",
    "data_dir",
    "batch_size",
    "warmup",
    "iterations",
    "device",
    "compile",
    "step",
    "precision",
)


def pack_worker(spec: dict) -> None:
    """One engine training of a --pack run; prints one JSON line."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    args = argparse.Namespace(**spec["args"])
    data = bench_view(engine_data(args.data, args.data_dir))
    config = engine_config(
        spec["depth"],
        args,
        args.warmup + args.iterations,
        Variant.of_args(args),
        val_size=0,
        eval_every=args.warmup,
    )
    cb = Barrier(spec["barrier"], spec["rank"], spec["count"])
    result = train(config, cb, data=data)
    images, seconds = window_rate(cb.records, args.batch_size)
    out = {"status": result.status, "images": images, "seconds": seconds}
    print(json.dumps({**out, "t_start": cb.t_start, "t_end": cb.t_end}))


def pack_round(depth: int, count: int, args, threads: int | None) -> dict:
    shared = {k: getattr(args, k) for k in PACK_KEYS}
    with tempfile.TemporaryDirectory(prefix="train-bench-pack-") as barrier:
        procs = []
        for rank in range(count):
            spec = {
                "args": shared,
                "depth": depth,
                "rank": rank,
                "count": count,
                "barrier": barrier,
                "threads": threads,
            }
            cmd = [sys.executable, __file__, "--pack-worker", json.dumps(spec)]
            # Output to files, not pipes: a full pipe would block a worker at the barrier.
            log = Path(barrier) / f"{rank}.log"
            with open(log, "wb") as f:
                procs.append((subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT), log))
        try:
            while any(p.poll() is None for p, _ in procs):
                failed = [log for p, log in procs if p.returncode not in (None, 0)]
                if failed:  # the others would wait at the barrier for it
                    raise RuntimeError(f"pack worker failed:\n{failed[0].read_text()[-3000:]}")
                time.sleep(0.1)
            failed = [log for p, log in procs if p.returncode != 0]
            if failed:
                raise RuntimeError(f"pack worker failed:\n{failed[0].read_text()[-3000:]}")
        finally:
            for p, _ in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        outs = [json.loads(log.read_text().strip().splitlines()[-1]) for _, log in procs]
    images = sum(o["images"] for o in outs)
    span = max(o["t_end"] for o in outs) - min(o["t_start"] for o in outs)
    return {
        "processes": count,
        "threads_each": threads,
        "per_process_images_per_s": [o["images"] / o["seconds"] for o in outs],
        # Sum of each process's own timed rate: right when the windows overlap fully.
        "sum_images_per_s": sum(o["images"] / o["seconds"] for o in outs),
        # All timed images over the span from the common start to the last finish:
        # conservative (stragglers and the short in-window evaluations count against it).
        "aggregate_images_per_s": images / span,
    }


def pack(args, device) -> list[dict]:
    engine_data(args.data, args.data_dir)  # a bad --data fails here, in one line
    variant = Variant.of_args(args)
    rows = []
    for depth in args.depths:
        threads = args.threads
        if device.type == "cpu" and not threads:
            threads = max(1, (os.cpu_count() or 1) // args.pack)  # no oversubscription
        alone = pack_round(depth, 1, args, args.threads)
        packed = pack_round(depth, args.pack, args, threads)
        gain = packed["aggregate_images_per_s"] / alone["aggregate_images_per_s"]
        rows.append(
            {
                "model": f"ResNet-{depth}",
                "depth": depth,
                "variant": variant.name,
                "alone": alone,
                "packed": packed,
                "gain": gain,
            }
        )
        print(
            f"ResNet-{depth} ({variant.name}): alone {alone['aggregate_images_per_s']:,.0f} "
            f"images/s; {args.pack} packed {packed['aggregate_images_per_s']:,.0f} images/s in "
            f"all (sum of per-process rates {packed['sum_images_per_s']:,.0f}; per process "
            + ", ".join(f"{v:,.0f}" for v in packed["per_process_images_per_s"])
            + f"); packing gain {gain:.2f}x"
        )
    return rows


# ------------------------------------------------------------------------- driver


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        default="digits",
        help="imagefolder:PATH (e.g. the CIFAR-10 JPEG image-folder copy) | digits | cifar10",
    )
    p.add_argument("--data-dir", default="./data", help="where cifar10 and decode caches live")
    p.add_argument("--depths", type=int, nargs="+", default=None, help="default 20; CUDA 20 56 110")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (>= 1)")
    p.add_argument("--iterations", type=int, default=None, help="timed steps")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="reference DataLoader workers")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="engine precision")
    p.add_argument("--step", default="eager", choices=("eager", "graph"), help="engine step form")
    p.add_argument("--compile", action="store_true", help="engine uses torch.compile")
    p.add_argument(
        "--engine-variants",
        type=Variant.parse,
        nargs="+",
        default=None,
        metavar="VARIANT",
        help="compare several engine variants, e.g. eager-fp32 graph-bf16 "
        "eager-fp32-contiguous@110 (overrides --step/--precision/--compile there)",
    )
    p.add_argument(
        "--estimate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time the evaluations of a full trial for its estimate (default: on CUDA)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    p.add_argument("--repeats", type=int, default=None, help="runs per figure (CPU 5, CUDA 1)")
    p.add_argument(
        "--stat", default="best", choices=("best", "median"), help="figure of R runs in the table"
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="S",
        help="--full-trial: stop cleanly S seconds after start, reporting where it got",
    )
    p.add_argument("--json", default=None, help="also write the results here")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--full-trial", action="store_true", help="one paper-recipe trial")
    mode.add_argument("--pack", type=int, default=None, metavar="K", help="K trainings at once")
    mode.add_argument("--pack-worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def write_json(path: str | None, mode: str, meta: dict, rows: list[dict], partial=False) -> None:
    if path:
        blob = {"mode": mode, "meta": meta, "results": rows, "partial": partial}
        tmp = Path(f"{path}.tmp")
        tmp.write_text(json.dumps(blob, indent=1))
        tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    if args.pack_worker:
        pack_worker(json.loads(args.pack_worker))
        return 0
    args.started = started
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    args.device = device.type if args.device == "auto" else args.device
    cuda = device.type == "cuda"
    if args.depths is None:
        args.depths = [20, 56, 110] if cuda and not (args.full_trial or args.pack) else [20]
    if args.warmup is None:
        args.warmup = 50 if cuda else 2
    if args.iterations is None:
        args.iterations = PAPER_ITERATIONS if args.full_trial else 300 if cuda else 10
    if args.repeats is None:
        args.repeats = 1 if cuda else 5
    if args.estimate is None:
        args.estimate = cuda
    if args.engine_variants is None:
        args.engine_variants = [Variant.of_args(args)]
    if min(args.warmup, args.iterations, args.repeats) < 1:
        raise SystemExit("train_bench: --warmup, --iterations and --repeats must be >= 1")
    if args.pack is not None and args.pack < 1:
        raise SystemExit("train_bench: --pack must be >= 1")
    if args.data == "digits":
        print(
            "(data: scikit-learn's digits; for real CIFAR-10 pass --data imagefolder:PATH, "
            "e.g. the CIFAR-10 JPEG image-folder copy)"
        )
    meta = {
        "device": device.type,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "threads": torch.get_num_threads(),
        "data": args.data,
        "batch_size": args.batch_size,
        "warmup": None if args.full_trial else args.warmup,
        "iterations": args.iterations,
        "precision": args.precision,
        "step": args.step,
        "compile": args.compile,
        "engine_variants": [v.label for v in args.engine_variants],
        "estimate": args.estimate,
        "workers": args.workers,
        "repeats": args.repeats,
        "stat": args.stat,
        "time_limit_s": args.time_limit,
    }
    print(f"{meta['device_name']}, torch {meta['torch']}")
    mode = "full_trial" if args.full_trial else "pack" if args.pack else "compare"

    def save_partial(rows: list[dict]) -> None:
        write_json(args.json, mode, meta, rows, partial=True)

    try:
        if args.full_trial:
            rows = full_trial(args, device, save_partial)
        elif args.pack:
            rows = pack(args, device)
        else:
            rows = compare(args, device, save_partial)
            print_table(rows, meta)
    except DataError as e:
        raise SystemExit(f"train_bench: {e}") from None
    write_json(args.json, mode, meta, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
