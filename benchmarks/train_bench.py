"""Training throughput: this engine against the popular CIFAR pipeline, in one run.

The reference is how popular CIFAR reproductions train (e.g. kuangliu/pytorch-cifar):
torchvision ImageFolder (or CIFAR10) + DataLoader(shuffle, batch 128, 2 workers) with
per-image PIL transforms (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor,
Normalize), fp32, plain SGD (momentum 0.9, wd 1e-4) and `.item()` every step. Ours is
`resnet.train.train` itself (device-resident uint8 data, whole-batch augmentation,
channels_last, bf16 autocast and fused SGD on CUDA). Both train the same model, built
from the same spec and seed, on the same training images.

Per depth it prints images/s end to end (training steps including data), of each
loader alone (batches iterated and moved to the device, no training) and the ratios
ours / reference. Targets (issue 3): loader >= 20x; end to end >= 1.2x on 2 CPU cores.

    python benchmarks/train_bench.py [--data imagefolder:/tmp/cifar/cifar10-jpeg|digits]
        [--depths 20 56 110] [--warmup W] [--iterations N] [--device auto|cpu|cuda]
        [--compile] [--threads T] [--repeats R] [--stat best|median] [--json PATH]
    python benchmarks/train_bench.py --full-trial [--depths 20] [--iterations 64000]
    python benchmarks/train_bench.py --pack K [--depths 20] [--iterations N]

--full-trial (issue 7) trains one model per depth with the paper's recipe and prints
its wall time and final test error. --pack K runs K engine trainings as separate
processes on one device at once and prints their aggregate images/s against one alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402
from torchvision import datasets, transforms  # noqa: E402

from resnet.augment import ResidentBatches  # noqa: E402
from resnet.config import TrainConfig  # noqa: E402
from resnet.data import DataError, ImageSplits, load_dataset  # noqa: E402
from resnet.model import build  # noqa: E402
from resnet.train import Callback, resolve_device, train  # noqa: E402

CIFAR_JPEG = Path("/tmp/cifar/cifar10-jpeg")
UNPACK_HINT = (
    "mkdir -p /tmp/cifar && tar -xzf /work/shared/datasets/cifar10-jpeg.tar.gz -C /tmp/cifar"
)
TARGET_LOADER, TARGET_E2E = 20.0, 1.2
# Test images kept for the engine's evaluations during throughput runs: those run
# outside its images/s window anyway, so a small set only saves wall time.
BENCH_TEST_IMAGES = 128
PACK_BARRIER_TIMEOUT_S = 1800


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


def engine_config(depth: int, args, iterations: int, **extra) -> TrainConfig:
    return TrainConfig(
        depth=depth,
        dataset=args.data,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        iterations=iterations,
        device=args.device,
        compile=args.compile,
        **extra,
    )


def engine_train_rate(data: ImageSplits, depth: int, args) -> float:
    """The real engine: train() for warmup + iterations steps with eval_every=warmup, so
    the first record is the warm-up and the later ones the timed window."""
    config = engine_config(
        depth, args, args.warmup + args.iterations, val_size=0, eval_every=args.warmup
    )
    cb = Records()
    result = train(config, cb, data=bench_view(data))
    if result.status != "finished":
        raise RuntimeError(f"engine run of depth {depth} ended {result.status}")
    images, seconds = window_rate(cb.records, args.batch_size)
    return images / seconds


def compare(args, device) -> list[dict]:
    data = engine_data(args.data, args.data_dir)
    ds = reference_dataset(args.data, args.data_dir, data)
    print(
        f"data {args.data}: {len(data.train_x)} training images; warm-up {args.warmup}, "
        f"timed {args.iterations} steps of {args.batch_size}; {args.repeats} repeat(s)"
    )
    rows = []
    for depth in args.depths:
        runs = {k: [] for k in ("ref_loader", "ours_loader", "ref_train", "ours_train")}
        for r in range(args.repeats):
            # Alternate who goes first, so a neighbour's load on shared cores hits both.
            for who in ("ref", "ours") if r % 2 == 0 else ("ours", "ref"):
                if who == "ref":
                    runs["ref_loader"].append(reference_loader_rate(ds, args, device))
                else:
                    runs["ours_loader"].append(engine_loader_rate(data, args, device))
            for who in ("ref", "ours") if r % 2 == 0 else ("ours", "ref"):
                if who == "ref":
                    runs["ref_train"].append(reference_train_rate(ds, data, depth, args, device))
                else:
                    runs["ours_train"].append(engine_train_rate(data, depth, args))
            print(
                f"resnet{depth} repeat {r + 1}: "
                + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in runs.items())
                + " images/s"
            )
        stats = {
            # Noise on shared cores only ever slows a run, so the fastest of R runs is
            # the least disturbed one (timeit's rule); the median is kept beside it.
            "best": {k: max(v) for k, v in runs.items()},
            "median": {k: statistics.median(v) for k, v in runs.items()},
        }
        ratios = {
            name: (m["ours_train"] / m["ref_train"], m["ours_loader"] / m["ref_loader"])
            for name, m in stats.items()
        }
        m = stats[args.stat]
        rows.append(
            {
                "model": f"ResNet-{depth}",
                "depth": depth,
                "stat": args.stat,
                "ref_images_per_s": m["ref_train"],
                "ours_images_per_s": m["ours_train"],
                "ref_loader_images_per_s": m["ref_loader"],
                "ours_loader_images_per_s": m["ours_loader"],
                "ratio": ratios[args.stat][0],
                "loader_ratio": ratios[args.stat][1],
                "stats": stats,
                "runs": runs,
            }
        )
        print(
            f"resnet{depth}: end to end {ratios['best'][0]:.2f}x fastest-of-{args.repeats}, "
            f"{ratios['median'][0]:.2f}x median (target {TARGET_E2E}x on 2 CPU cores); "
            f"loader alone {ratios['best'][1]:.1f}x fastest, {ratios['median'][1]:.1f}x median "
            f"(target {TARGET_LOADER:.0f}x)"
        )
    return rows


def print_table(rows: list[dict], meta: dict) -> None:
    which = "fastest" if meta["stat"] == "best" else "median"
    print(f"\nimages/s: the {which} of {meta['repeats']} run(s) of {meta['iterations']} steps")
    print(
        "| model | pipeline | images/s | loader images/s | ratio (e2e / loader) | device | torch |"
    )
    print("|---|---|--:|--:|--:|---|---|")
    dev, tv = meta["device_name"], meta["torch"]
    for r in rows:
        print(
            f"| {r['model']} | reference (PIL DataLoader, fp32) | {r['ref_images_per_s']:,.0f} "
            f"| {r['ref_loader_images_per_s']:,.0f} | 1.00x / 1.0x | {dev} | {tv} |"
        )
        print(
            f"| {r['model']} | ablate engine | {r['ours_images_per_s']:,.0f} "
            f"| {r['ours_loader_images_per_s']:,.0f} "
            f"| {r['ratio']:.2f}x / {r['loader_ratio']:.1f}x | {dev} | {tv} |"
        )
    print()
    for r in rows:
        e2e = "met" if r["ratio"] >= TARGET_E2E else "NOT met"
        loader = "met" if r["loader_ratio"] >= TARGET_LOADER else "NOT met"
        print(
            f"{r['model']}: loader >= {TARGET_LOADER:.0f}x {loader}; "
            f"end to end >= {TARGET_E2E}x {e2e}"
            + ("" if meta["device"] == "cpu" else " (that target is set for 2 CPU cores)")
        )


# ------------------------------------------------------------------ issue 7 modes


class Progress(Records):
    """Records every evaluation; prints one line per tenth of the run and the last."""

    def __init__(self, iterations: int) -> None:
        super().__init__()
        self.iterations, self.next_print, self.t0 = iterations, iterations / 10, time.time()

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


def full_trial(args, device) -> list[dict]:
    """One trial per depth with the paper's recipe (docs/paper.md §4)."""
    iterations = args.iterations
    start = time.perf_counter()
    data = engine_data(args.data, args.data_dir, val_size=None)  # CIFAR: the 45k/5k split
    load_s = time.perf_counter() - start
    print(f"data {args.data}: {len(data.train_x)} train / {len(data.val_x)} val, {load_s:.1f} s")
    rows = []
    for depth in args.depths:
        # docs/paper.md §4: ResNet-110 warms up at lr 0.01 until training error < 80%.
        warmup = "paper" if depth == 110 else "none"
        config = engine_config(depth, args, iterations, warmup=warmup)
        print(f"full trial: ResNet-{depth}, {iterations} iterations on {args.data}", flush=True)
        cb = Progress(iterations)
        start = time.perf_counter()
        result = train(config, cb, data=data)
        wall = time.perf_counter() - start
        images, train_s = windows(cb.records, args.batch_size)
        row = {
            "model": f"ResNet-{depth}",
            "depth": depth,
            **result.summary(),
            "wall_s": wall,
            "data_load_s": load_s,
            "train_images_per_s": images / train_s if train_s else None,
        }
        rows.append(row)
        print(
            f"ResNet-{depth}: {result.status}, wall {wall:.1f} s (train() {result.wall_time_s:.1f}"
            f" s), final test error {_pct(row['test_error'])}, val error {_pct(row['val_error'])}, "
            f"{row['train_images_per_s'] or 0:,.0f} training images/s (evaluation excluded)"
        )
    return rows


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


def pack_worker(spec: dict) -> None:
    """One engine training of a --pack run; prints one JSON line."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    args = argparse.Namespace(**spec["args"])
    data = bench_view(engine_data(args.data, args.data_dir))
    config = engine_config(
        spec["depth"], args, args.warmup + args.iterations, val_size=0, eval_every=args.warmup
    )
    cb = Barrier(spec["barrier"], spec["rank"], spec["count"])
    result = train(config, cb, data=data)
    images, seconds = window_rate(cb.records, args.batch_size)
    out = {"status": result.status, "images": images, "seconds": seconds}
    print(json.dumps({**out, "t_start": cb.t_start, "t_end": cb.t_end}))


def pack_round(depth: int, count: int, args, threads: int | None) -> dict:
    keys = ("data", "data_dir", "batch_size", "warmup", "iterations", "device", "compile")
    shared = {k: getattr(args, k) for k in keys}
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
    rows = []
    for depth in args.depths:
        threads = args.threads
        if device.type == "cpu" and not threads:
            threads = max(1, (os.cpu_count() or 1) // args.pack)  # no oversubscription
        alone = pack_round(depth, 1, args, args.threads)
        packed = pack_round(depth, args.pack, args, threads)
        gain = packed["aggregate_images_per_s"] / alone["aggregate_images_per_s"]
        rows.append({"model": f"ResNet-{depth}", "alone": alone, "packed": packed, "gain": gain})
        print(
            f"ResNet-{depth}: alone {alone['aggregate_images_per_s']:,.0f} images/s; "
            f"{args.pack} packed {packed['aggregate_images_per_s']:,.0f} images/s in all "
            f"(sum of per-process rates {packed['sum_images_per_s']:,.0f}; per process "
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
    default_data = f"imagefolder:{CIFAR_JPEG}" if CIFAR_JPEG.is_dir() else "digits"
    p.add_argument("--data", default=default_data, help="imagefolder:PATH|digits|cifar10")
    p.add_argument("--data-dir", default="./data", help="where cifar10 and decode caches live")
    p.add_argument("--depths", type=int, nargs="+", default=None, help="default 20; CUDA 20 56 110")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (>= 1)")
    p.add_argument("--iterations", type=int, default=None, help="timed steps")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="reference DataLoader workers")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda")
    p.add_argument("--compile", action="store_true", help="engine uses torch.compile")
    p.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    p.add_argument("--repeats", type=int, default=None, help="runs per figure (CPU 5, CUDA 1)")
    p.add_argument(
        "--stat", default="best", choices=("best", "median"), help="figure of R runs in the table"
    )
    p.add_argument("--json", default=None, help="also write the results here")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--full-trial", action="store_true", help="one paper-recipe trial")
    mode.add_argument("--pack", type=int, default=None, metavar="K", help="K trainings at once")
    mode.add_argument("--pack-worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pack_worker:
        pack_worker(json.loads(args.pack_worker))
        return 0
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
        args.iterations = 64_000 if args.full_trial else 300 if cuda else 10
    if args.repeats is None:
        args.repeats = 1 if cuda else 5
    if min(args.warmup, args.iterations, args.repeats) < 1:
        raise SystemExit("train_bench: --warmup, --iterations and --repeats must be >= 1")
    if args.pack is not None and args.pack < 1:
        raise SystemExit("train_bench: --pack must be >= 1")
    if args.data == "digits" and not CIFAR_JPEG.is_dir():
        print(f"(real CIFAR-10 absent; using digits. For CIFAR: {UNPACK_HINT})")
    meta = {
        "device": device.type,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "data": args.data,
        "batch_size": args.batch_size,
        "warmup": None if args.full_trial else args.warmup,
        "iterations": args.iterations,
        "compile": args.compile,
        "workers": args.workers,
        "repeats": args.repeats,
        "stat": args.stat,
    }
    print(f"{meta['device_name']}, torch {meta['torch']}")
    try:
        if args.full_trial:
            mode, rows = "full_trial", full_trial(args, device)
        elif args.pack:
            mode, rows = "pack", pack(args, device)
        else:
            mode, rows = "compare", compare(args, device)
            print_table(rows, meta)
    except DataError as e:
        raise SystemExit(f"train_bench: {e}") from None
    if args.json:
        Path(args.json).write_text(json.dumps({"mode": mode, "meta": meta, "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
