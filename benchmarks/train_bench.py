"""Training throughput: this engine against the popular CIFAR pipeline, in one run.

The reference is how popular CIFAR reproductions train (e.g. kuangliu/pytorch-cifar):
per-image PIL transforms in a DataLoader, fp32, plain SGD and `.item()` every step
(reference_pipeline.py). Ours is
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
The reference pipeline lives in reference_pipeline.py, the engine's side in
bench_engine.py, the modes in full_trial.py and packing.py, the printed table in
summarize_gpu.py (which gpu_check.sh reports with); this file compares and drives.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.bench_engine import (  # noqa: E402
    PAPER_ITERATIONS,
    Variant,
    device_name,
    engine_data,
    engine_loader_rate,
    engine_train_rate,
)
from benchmarks.full_trial import (  # noqa: E402
    eval_seconds,
    full_trial,
    trial_estimate,
)
from benchmarks.packing import pack, pack_worker  # noqa: E402
from benchmarks.summarize_gpu import speed_md  # noqa: E402
from resnet.config import PRECISIONS  # noqa: E402
from resnet.data import DataError  # noqa: E402
from resnet.train import resolve_device  # noqa: E402

TARGET_LOADER = 20.0
TARGET_E2E = {"cpu": 1.2, "cuda": 8.0}  # end to end, ours / reference, by device type


def _order(items: list, repeat: int) -> list:
    """Alternate who goes first, so a neighbour's load on shared cores hits all sides."""
    return items if repeat % 2 == 0 else items[::-1]


def compare(args, device, save_partial=None) -> list[dict]:
    """Per depth, the reference and each engine variant; `save_partial(rows)` is called
    after each depth, so a run killed from outside keeps the depths it finished."""
    # Imported here: torchvision takes seconds, which packed workers and full trials skip.
    from benchmarks.reference_pipeline import (
        reference_dataset,
        reference_loader_rate,
        reference_train_rate,
    )

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
                "target_ratio": target,
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


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0][:300]


# ------------------------------------------------------------------------- driver


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
            print("\n".join(speed_md({"meta": meta, "results": rows, "partial": False})))
    except DataError as e:
        raise SystemExit(f"train_bench: {e}") from None
    write_json(args.json, mode, meta, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
