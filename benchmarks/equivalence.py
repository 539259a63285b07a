"""Does the engine train as well as a plain reference? Same model, recipe, data and seeds.

Each seed trains once through `resnet.train.train` (the engine: device-resident uint8
data, batch augmentation on the device, its own LR schedule, channels_last, fused SGD,
and on CUDA the precision and compilation it is given) and once through
`benchmarks/reference_train.py` (per-image torchvision transforms, a DataLoader, fp32,
torch.optim.SGD + MultiStepLR). The recipe is
He et al. 2015, Sec. 4.2: SGD lr 0.1, momentum 0.9, weight decay 1e-4, batch 128, the
learning rate divided by 10 at 50% and 75% of the iterations (32k/48k of 64k).

It prints a Markdown table of the final train (mean over the last window), validation
and test errors per seed and side, mean +- std per side, and per metric the difference
of means (engine - reference) with a Welch t-test over seeds. The sides agree when, for
test error, Welch p > 0.05 and |difference| < --max-diff points (0.5 by default, the
criterion for full-size runs). Exit 0 if they agree, 1 if not.

    python benchmarks/equivalence.py --dataset imagefolder:/tmp/cifar/cifar10-jpeg \
        --depth 20 --seeds 0 1 2 --scale 0.25 --device cuda --workers 8 --out equivalence.md
    python benchmarks/equivalence.py --dataset digits --depth 8 --width 8 --batch-size 32 \
        --iterations 300 --window 100 --device cpu --workers 0 --threads 1 --max-diff 3.5
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from scipy import stats  # noqa: E402

from benchmarks.reference_train import (  # noqa: E402
    ReferenceConfig,
    ReferenceData,
    load_reference_data,
    train_reference,
)
from resnet.config import TrainConfig  # noqa: E402
from resnet.data import load_dataset  # noqa: E402
from resnet.train import resolve_device, train  # noqa: E402

METRICS = ("train_error", "val_error", "test_error")
PAPER_ITERATIONS = 64_000
ALPHA = 0.05


@dataclass(frozen=True)
class Settings:
    """What both sides share. window: iterations per train-error window (None: one pass
    over the training split, the engine's default evaluation interval)."""

    dataset: str = "digits"
    data_dir: str = "./data"
    depth: int = 20
    shortcut: str = "A"
    width: int | None = None
    iterations: int = 16_000
    batch_size: int = 128
    window: int | None = None
    device: str = "auto"
    workers: int = 2
    compile: bool = False
    precision: str | None = None  # the engine's forward precision; None: its default


@dataclass
class Data:
    engine: Any  # resnet's in-memory splits (uint8 train_x/val_x/test_x, mean, std, ...)
    reference: ReferenceData


def load_both(s: Settings) -> Data:
    """Each side loads the data its own way; the splits must be the same images."""
    engine = load_dataset(s.dataset, s.data_dir)
    if not hasattr(engine, "train_x"):
        raise SystemExit(f"{s.dataset}: large images; this check is for CIFAR-size data")
    reference = load_reference_data(s.dataset, s.data_dir)  # its own split rule
    sizes = (len(engine.train_x), len(engine.val_x), len(engine.test_x))
    ref_sizes = (len(reference.train), len(reference.val), len(reference.test))
    if sizes != ref_sizes or engine.val_digest != reference.val_digest:
        raise SystemExit(
            f"the sides see different splits: engine train/val/test {sizes}, validation "
            f"{engine.val_digest}; reference {ref_sizes}, {reference.val_digest}"
        )
    return Data(engine, reference)


def window_of(s: Settings, data: Data) -> int:
    return s.window or max(1, len(data.engine.train_x) // s.batch_size)


def run_engine(s: Settings, data: Data, seed: int) -> dict:
    extra = {"precision": s.precision} if s.precision else {}
    config = TrainConfig(
        **extra,
        depth=s.depth,
        shortcut=s.shortcut,
        width=s.width,
        dataset=s.dataset,
        data_dir=s.data_dir,
        iterations=s.iterations,
        batch_size=s.batch_size,
        eval_every=window_of(s, data),
        seed=seed,
        device=s.device,
        compile=s.compile,
    )
    result = train(config, data=data.engine)
    if result.status != "finished":
        raise RuntimeError(f"engine seed {seed} ended {result.status}")
    summary = result.summary()
    return {m: summary[m] for m in METRICS}


def run_reference(s: Settings, data: Data, seed: int, **recipe) -> dict:
    """recipe: ReferenceConfig fields to change (e.g. lr) for a deliberately wrong run."""
    config = ReferenceConfig(
        depth=s.depth,
        shortcut=s.shortcut,
        width=s.width,
        iterations=s.iterations,
        batch_size=s.batch_size,
        seed=seed,
        window=window_of(s, data),
        workers=s.workers,
        device=str(resolve_device(s.device)),
    )
    result = train_reference(data.reference, dataclasses.replace(config, **recipe))
    return {m: result[m] for m in METRICS}


@dataclass
class Verdict:
    """Per metric (percent): means, stds, difference engine - reference, Welch t and p."""

    rows: dict[str, dict]
    max_diff: float
    agree: bool
    reason: str


def welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """t and p of Welch's test; identical constant samples agree (p 1), different ones not."""
    if statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0:
        same = statistics.fmean(a) == statistics.fmean(b)
        return (0.0, 1.0) if same else (math.inf, 0.0)
    with warnings.catch_warnings():  # scipy warns about nearly constant samples
        warnings.simplefilter("ignore", RuntimeWarning)
        t, p = stats.ttest_ind(a, b, equal_var=False)
    return float(t), float(p)


def compare(engine: list[dict], reference: list[dict], max_diff: float = 0.5) -> Verdict:
    """The agreement criterion on test error: Welch p > 0.05 and |diff| < max_diff points."""
    rows = {}
    for m in METRICS:
        a = [100 * r[m] for r in engine if r[m] is not None]
        b = [100 * r[m] for r in reference if r[m] is not None]
        if len(a) < 2 or len(b) < 2:
            continue
        t, p = welch(a, b)
        rows[m] = {
            "engine": (statistics.fmean(a), statistics.stdev(a)),
            "reference": (statistics.fmean(b), statistics.stdev(b)),
            "diff": statistics.fmean(a) - statistics.fmean(b),
            "t": t,
            "p": p,
        }
    test = rows["test_error"]
    close, same = abs(test["diff"]) < max_diff, test["p"] > ALPHA
    reason = (
        f"test error: difference {test['diff']:+.2f} points "
        f"({'<' if close else '>='} {max_diff}), Welch p = {test['p']:.3f} "
        f"({'>' if same else '<='} {ALPHA})"
    )
    return Verdict(rows, max_diff, close and same, reason)


def table(seeds: list[int], engine: list[dict], reference: list[dict], v: Verdict) -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.2f}"

    names = [f"{side} {m.split('_')[0]} (%)" for side in ("engine", "reference") for m in METRICS]
    lines = ["| seed | " + " | ".join(names) + " |", "|---" + "|--:" * 6 + "|"]
    for seed, e, r in zip(seeds, engine, reference, strict=True):
        cells = [pct(e[m]) for m in METRICS] + [pct(r[m]) for m in METRICS]
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    lines += ["", "| metric | engine | reference | engine - reference | Welch t | p |"]
    lines.append("|---|--:|--:|--:|--:|--:|")
    for m, row in v.rows.items():
        e, r = row["engine"], row["reference"]
        lines.append(
            f"| {m.replace('_', ' ')} (%) | {e[0]:.2f} +- {e[1]:.2f} | {r[0]:.2f} +- {r[1]:.2f} "
            f"| {row['diff']:+.2f} | {row['t']:.2f} | {row['p']:.3f} |"
        )
    verdict = "AGREE" if v.agree else "DISAGREE"
    lines += ["", f"**{verdict}**: {v.reason}."]
    return "\n".join(lines)


def run(s: Settings, seeds: list[int], max_diff: float, log=print) -> tuple[str, Verdict]:
    data = load_both(s)
    e, r = data.engine, data.reference
    gap = max(abs(a - b) for a, b in zip(e.mean + e.std, r.mean + r.std, strict=True))
    log(
        f"{s.dataset}: {len(e.train_x)} train / {len(e.val_x)} val / {len(e.test_x)} test, "
        f"the same validation split ({e.val_digest}) on both sides; their normalization "
        f"mean/std differ by at most {gap:.1e}"
    )
    engine, ref = [], []
    for seed in seeds:
        for side, fn, out in (("engine", run_engine, engine), ("reference", run_reference, ref)):
            start = time.perf_counter()
            out.append(fn(s, data, seed))
            errs = ", ".join(f"{m} {100 * v:.2f}%" for m, v in out[-1].items() if v is not None)
            log(f"seed {seed} {side}: {errs} ({time.perf_counter() - start:.0f} s)")
    v = compare(engine, ref, max_diff)
    return table(seeds, engine, ref, v), v


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits", help="digits | cifar10 | imagefolder:PATH")
    p.add_argument("--data-dir", default="./data", help="cifar10's official files")
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--shortcut", default="A")
    p.add_argument("--width", type=int, default=None, help="first stage's width (16)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--scale", type=float, default=0.25, help="iterations = 64000 x scale")
    p.add_argument("--iterations", type=int, default=None, help="overrides --scale")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--window", type=int, default=None, help="train-error window (one pass)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--workers", type=int, default=2, help="reference DataLoader workers")
    p.add_argument("--compile", action="store_true", help="the engine uses torch.compile")
    p.add_argument("--precision", choices=("fp32", "bf16"), help="the engine's (its default)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--max-diff", type=float, default=0.5, help="points of test error")
    p.add_argument("--out", default=None, help="also write the table to this file")
    a = p.parse_args()
    if len(a.seeds) < 2:
        p.error("--seeds needs at least 2 seeds for a Welch test")
    if a.threads:
        torch.set_num_threads(a.threads)
    s = Settings(
        dataset=a.dataset,
        data_dir=a.data_dir,
        depth=a.depth,
        shortcut=a.shortcut,
        width=a.width,
        iterations=a.iterations or round(PAPER_ITERATIONS * a.scale),
        batch_size=a.batch_size,
        window=a.window,
        device=a.device,
        workers=a.workers,
        compile=a.compile,
        precision=a.precision,
    )
    n = s.iterations
    lines: list[str] = []

    def log(message: str) -> None:
        print(message, flush=True)
        lines.append(message)

    log(
        f"ResNet-{s.depth} ({s.shortcut}, width {s.width or 16}) on {s.dataset}, {n} iterations "
        f"of {s.batch_size}, lr 0.1 -> 0.01 at {round(0.5 * n)} -> 0.001 at {round(0.75 * n)}, "
        f"seeds {a.seeds}, device {resolve_device(s.device)}, engine precision "
        f"{s.precision or 'default'}{', compiled' if s.compile else ''}, torch {torch.__version__}"
    )
    text, v = run(s, a.seeds, a.max_diff, log)
    print("\n" + text)
    if a.out:
        Path(a.out).write_text("\n\n".join(["\n".join(lines), text]) + "\n")
    print("engine and reference agree" if v.agree else "engine and reference DISAGREE")
    sys.exit(0 if v.agree else 1)


if __name__ == "__main__":
    main()
