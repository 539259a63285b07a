"""Full trials: one measured with the paper's recipe, and one estimated from a rate.

`full_trial` trains one model per depth for the paper's 64k iterations (docs/paper.md §4)
and reports wall time and final errors, saving its progress as it goes so a run killed
from outside still leaves where it got. `trial_estimate` turns a measured training rate
and the measured time of one evaluation into the minutes a full trial would take.
"""

from __future__ import annotations

import math
import time

import torch

import resnet.train as engine
from benchmarks.bench_engine import (
    PAPER_ITERATIONS,
    Records,
    Variant,
    engine_config,
    engine_data,
    windows,
)
from resnet.augment import eval_batches
from resnet.config import TrainConfig
from resnet.data import ImageSplits, default_val_size
from resnet.measure import evaluate
from resnet.train import train

TARGET_TRIAL_MINUTES = {20: 2.0, 56: 5.0, 110: 9.0}  # a full trial on a GPU


def eval_seconds(data: ImageSplits, depth: int, precision: str, args, device) -> float:
    """Seconds of one of the engine's evaluations in a full trial: the validation split
    (as large as a default split would make it) and the whole test set, through the
    engine's own `evaluate` and evaluation batches. The fastest of two after a warm-up."""
    config = TrainConfig(depth=depth)
    with torch.random.fork_rng(devices=[]):
        model = config.build_model(data.num_classes, data.train_x.shape[1])
        model = model.to(device, memory_format=torch.channels_last)
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
