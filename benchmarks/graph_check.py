"""Does the graph step train like the eager step? Same seed, same data, both forms.

Per precision it trains the same model three times through `resnet.train.train`: eager,
eager again (the control: how far two runs of the very same program drift apart on
this device), and graph. Each run evaluates every `--eval-every` iterations, so each has
a history of windows: mean training loss and error over the window, validation and test
error after it. It reports, per metric, the largest difference over the history between
graph and eager, and between the two eager runs, and whether every window is
bitwise the same.

On a CPU the graph form runs its static body without capture and must equal eager
bit for bit. On a GPU it need not: cuDNN may pick nondeterministic kernels and atomic
reductions sum in varying order, so runs drift apart over training. The graph form
agrees when, for every metric, its largest difference from eager is at most
max(2 x the eager-vs-eager difference, the metric's floor): train loss 0.05, train
error 2 points, validation and test error 3 points (early in training, at lr 0.1, a
snapshot's error moves by points from one evaluation to the next).

    python benchmarks/graph_check.py --data imagefolder:PATH --depth 20 \
        --iterations 300 --eval-every 50 --precisions fp32 bf16 --json graph.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from resnet.config import TrainConfig  # noqa: E402
from resnet.data import load_dataset  # noqa: E402
from resnet.train import Callback, resolve_device, train  # noqa: E402

METRICS = ("train/loss", "train/error", "val/error", "test/error")
FLOORS = {"train/loss": 0.05, "train/error": 0.02, "val/error": 0.03, "test/error": 0.03}
CONTROL_FACTOR = 2.0


class Records(Callback):
    def __init__(self) -> None:
        self.records: list[dict] = []

    def on_eval(self, record: dict) -> None:
        self.records.append({k: record.get(k) for k in ("iteration", *METRICS)})


def run(step: str, precision: str, args, data) -> dict:
    config = TrainConfig(
        dataset=args.data,
        data_dir=args.data_dir,
        depth=args.depth,
        batch_size=args.batch_size,
        iterations=args.iterations,
        eval_every=args.eval_every,
        seed=args.seed,
        device=args.device,
        step=step,
        precision=precision,
    )
    cb = Records()
    start = time.perf_counter()
    result = train(config, cb, data=data)
    return {
        "step": step,
        "status": result.status,
        "history": cb.records,
        "seconds": time.perf_counter() - start,
    }


def differences(a: list[dict], b: list[dict]) -> dict:
    """Per metric, the largest |a - b| over the windows both have (None where a run has
    no value, e.g. no validation split); plus whether all windows are bitwise equal."""
    out: dict = {}
    for m in METRICS:
        pairs = [(x[m], y[m]) for x, y in zip(a, b, strict=False)]
        if not pairs or any(x is None or y is None for x, y in pairs):
            out[m] = None
            continue
        out[m] = max(abs(x - y) for x, y in pairs)
    out["first_window"] = {
        m: abs(a[0][m] - b[0][m]) if a and b and a[0][m] is not None else None
        for m in ("train/loss", "train/error")
    }
    out["bitwise"] = len(a) == len(b) and all(x == y for x, y in zip(a, b, strict=True))
    return out


def verdict(graph: dict, control: dict) -> tuple[bool, dict]:
    """Agreement per metric: graph's difference <= max(factor x control's, floor)."""
    tolerance, ok = {}, True
    for m in METRICS:
        tolerance[m] = max(CONTROL_FACTOR * (control[m] or 0.0), FLOORS[m])
        if graph[m] is not None and graph[m] > tolerance[m]:
            ok = False
    return ok, tolerance


def check(precision: str, args, data) -> dict:
    runs = {
        "eager": run("eager", precision, args, data),
        "eager_repeat": run("eager", precision, args, data),
        "graph": run("graph", precision, args, data),
    }
    for name, r in runs.items():
        if r["status"] != "finished":
            raise RuntimeError(f"{precision} {name} run ended {r['status']}")
    eager = runs["eager"]["history"]
    graph = differences(runs["graph"]["history"], eager)
    control = differences(runs["eager_repeat"]["history"], eager)
    agree, tolerance = verdict(graph, control)
    final = {name: r["history"][-1] for name, r in runs.items()}
    return {
        "precision": precision,
        "windows": len(eager),
        "graph_vs_eager": graph,
        "eager_vs_eager": control,
        "tolerance": tolerance,
        "agree": agree,
        "final": final,
        "seconds": {name: r["seconds"] for name, r in runs.items()},
        "histories": {name: r["history"] for name, r in runs.items()},
    }


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="digits", help="imagefolder:PATH | digits | cifar10")
    p.add_argument("--data-dir", default="./data")
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--precisions", nargs="+", default=["fp32"], choices=("fp32", "bf16"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto|cpu|cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    args.device = str(device)
    start = time.perf_counter()
    data = load_dataset(args.data, args.data_dir)
    print(
        f"{args.data}: {len(data.train_x)} train images ({time.perf_counter() - start:.1f} s); "
        f"ResNet-{args.depth}, {args.iterations} iterations of {args.batch_size}, an evaluation "
        f"every {args.eval_every}, seed {args.seed}, device {device}"
    )
    meta = {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "data": args.data,
        "depth": args.depth,
        "batch_size": args.batch_size,
        "iterations": args.iterations,
        "eval_every": args.eval_every,
        "seed": args.seed,
        "floors": FLOORS,
        "control_factor": CONTROL_FACTOR,
    }
    rows = []
    for precision in args.precisions:
        row = check(precision, args, data)
        rows.append(row)
        if args.json:  # after each precision, so a run cut short keeps what it finished
            Path(args.json).write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
        g, c = row["graph_vs_eager"], row["eager_vs_eager"]
        print(
            f"{precision}: graph vs eager bitwise {g['bitwise']}, eager vs eager bitwise "
            f"{c['bitwise']}; largest differences over {row['windows']} windows (graph / "
            "control / tolerance): "
            + ", ".join(
                f"{m} {_fmt(g[m])} / {_fmt(c[m])} / {_fmt(row['tolerance'][m])}" for m in METRICS
            )
            + f": {'AGREE' if row['agree'] else 'DISAGREE'}"
        )
    return 0 if all(r["agree"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
