"""Packing: K engine trainings at once on one device, against one alone.

Each training is its own process (train_bench.py --pack-worker); a file barrier lines
their timed windows up, so the aggregate images/s is what K trials sharing a GPU get.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.bench_engine import (
    Records,
    Variant,
    bench_view,
    engine_config,
    engine_data,
    window_rate,
)
from resnet.train import train

PACK_BARRIER_TIMEOUT_S = 1800
WORKER_SCRIPT = Path(__file__).with_name("train_bench.py")


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
            cmd = [sys.executable, str(WORKER_SCRIPT), "--pack-worker", json.dumps(spec)]
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
