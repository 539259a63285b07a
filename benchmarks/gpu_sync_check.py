"""GPU check: no host synchronization inside the training step loop.

Trains a ResNet on digits through the real engine, once per step form (eager, graph,
and optionally compile), with torch's sync debug mode on between two steps, and counts
the synchronizing CUDA calls it reports. The only ones expected are the copies of each
new data-order permutation to the device: one per pass over the training set, not per
step. Passes that start inside the counted window are computed exactly and reported
beside the count; `extra` is the count beyond them.

torch's sync debug mode does not see every synchronizing operation (it says so itself),
so zero extra syncs is necessary, not sufficient, for a sync-free loop.

On a machine without CUDA it runs the same trainings without counting (syncs: null):
that only checks the code path.

    python benchmarks/gpu_sync_check.py [--forms eager graph compile] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from resnet.config import TrainConfig  # noqa: E402
from resnet.data import load_dataset  # noqa: E402
from resnet.train import Callback, resolve_device, train  # noqa: E402

SYNC_MESSAGE = "called a synchronizing CUDA operation"


class SyncWatch(Callback):
    """Turns the sync debug mode on after step `on` and off after step `off`."""

    def __init__(self, on: int, off: int, cuda: bool) -> None:
        self.on, self.off, self.cuda = on, off, cuda

    def on_step(self, iteration: int) -> None:
        if not self.cuda:
            return
        if iteration == self.on:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("warn")
        elif iteration == self.off:
            torch.cuda.set_sync_debug_mode("default")


def passes_started(on: int, off: int, batches_per_pass: int) -> int:
    """New data passes begin at the steps (0-based) that are multiples of batches_per_pass;
    the steps counted are those with index on .. off - 1."""
    return sum(1 for i in range(on, off) if i % batches_per_pass == 0)


def check(form: str, args, data, device: torch.device) -> dict:
    config = TrainConfig(
        dataset="digits",
        depth=args.depth,
        batch_size=args.batch_size,
        iterations=args.off + 2,
        eval_every=args.off + 2,
        device=str(device),
        step="graph" if form == "graph" else "eager",
        compile=form == "compile",
        precision=args.precision,
    )
    cuda = device.type == "cuda"
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(config, SyncWatch(args.on, args.off, cuda), data=data)
    messages = [str(w.message).splitlines()[0] for w in caught]
    syncs = [m for m in messages if SYNC_MESSAGE in m]
    steps = args.off - args.on
    passes = passes_started(args.on, args.off, len(data.train_x) // args.batch_size)
    return {
        "form": form,
        "precision": args.precision,
        "status": result.status,
        "steps": steps,
        "data_passes": passes,
        "syncs": len(syncs) if cuda else None,
        "extra": len(syncs) - passes if cuda else None,
        "per_step": len(syncs) / steps if cuda else None,
        "messages": sorted(set(syncs))[:5],
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--forms", nargs="+", default=["eager", "graph"], choices=("eager", "graph", "compile")
    )
    p.add_argument("--device", default="auto", help="auto|cpu|cuda")
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--on", type=int, default=20, help="steps before counting starts")
    p.add_argument("--off", type=int, default=120, help="step at which counting stops")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if not 0 < args.on < args.off:
        p.error("need 0 < --on < --off")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type != "cuda":
        print("gpu_sync_check: no CUDA GPU; training without counting (code path only)")
    data = load_dataset("digits", "./data")
    rows = []
    for form in args.forms:
        try:
            row = check(form, args, data, device)
        except Exception as e:  # one failing form must not lose the others' counts
            traceback.print_exc()
            rows.append({"form": form, "error": f"{type(e).__name__}: {e}".splitlines()[0]})
            print(f"{form}: failed ({rows[-1]['error']})")
            continue
        rows.append(row)
        if row["syncs"] is None:
            print(f"{form}: {row['status']}, {row['steps']} steps not counted (no CUDA)")
        else:
            print(
                f"{form}: {row['syncs']} synchronizing calls in {row['steps']} steps, "
                f"{row['data_passes']} data passes began in them: {row['extra']} extra"
            )
        for line in row["messages"]:
            print("   ", line[:160])
    if args.json:
        meta = {
            "device": device.type,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "depth": args.depth,
            "batch_size": args.batch_size,
            "train_images": len(data.train_x),
            "on": args.on,
            "off": args.off,
        }
        Path(args.json).write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
