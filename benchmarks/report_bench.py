"""How long `ablate report` takes on a big study, and how big the page is.

Builds a synthetic study of 500 finished trials (40 evaluation points each, every metric,
tag and artifact of docs/tracking.md) in a temporary SQLite store, then times the report:
fetching from MLflow, rendering (factorial effects of 3 factors included), writing and
logging it to the parent run. Target: under 10 s on 2 cores.

    python benchmarks/report_bench.py [--seeds 5] [--points 40] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

_start = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import report_fixtures as rf  # noqa: E402  (lives in tests/, used by the tests too)

from reports import build_report  # noqa: E402
from reports.fetch import fetch_study  # noqa: E402
from reports.page import render_report  # noqa: E402

IMPORT_S = time.perf_counter() - _start
TARGET_S = 10.0


def big_study(seeds: int, iterations: int, eval_every: int) -> rf.StudySpec:
    # 5 depths x 4 shortcuts x 5 weight decays = 100 arms; x 5 seeds = 500 trials.
    factors = {
        "depth": [20, 32, 44, 56, 110],
        "shortcut": ["none", "A", "B", "C"],
        "weight_decay": [0.0, 5e-5, 1e-4, 5e-4, 1e-3],
    }
    fixed = {"iterations": iterations, "eval_every": eval_every, "dataset": "cifar10"}
    trials = rf.grid_trials(factors, seeds=list(range(seeds)), fixed=fixed)
    return rf.StudySpec(
        name="bench",
        question="How long does a report of a big study take?",
        factors=list(factors),
        reference={"shortcut": "A"},
        seeds=list(range(seeds)),
        trials=trials,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per arm (100 arms)")
    parser.add_argument("--points", type=int, default=40, help="evaluation points per run")
    parser.add_argument(
        "--keep", type=Path, help="build the store here and keep it (reused when it exists)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = (args.keep or Path(tmp)).resolve()
        root.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        spec = big_study(args.seeds, iterations=100 * args.points, eval_every=100)
        t0 = time.perf_counter()
        if args.keep and (root / "mlflow.db").exists():
            print(f"reusing the store in {root}")
        else:
            rf.write_study(uri, spec, artifact_root=root / "artifacts")
        write_s = time.perf_counter() - t0

        # The whole command as a user runs it (fetch + render + write + log to MLflow) ...
        t0 = time.perf_counter()
        index = build_report("bench", uri, root / "report")
        total_s = time.perf_counter() - t0
        # ... and its parts, timed again separately (the store is warm by now).
        t0 = time.perf_counter()
        data = fetch_study("bench", uri)
        fetch_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = render_report(data)
        render_s = time.perf_counter() - t0

        size_mb = index.stat().st_size / 1e6
        print(f"cores: {os.cpu_count()}  runs: {len(spec.trials)}  points per run: {args.points}")
        print(f"imports:             {IMPORT_S:6.2f} s  (once per CLI call)")
        print(f"building the store:  {write_s:6.2f} s  (setup, not part of the report)")
        print(f"build_report total:  {total_s:6.2f} s  (target < {TARGET_S:.0f} s)")
        print(f"  fetch from MLflow: {fetch_s:6.2f} s")
        print(f"  render page:       {render_s:6.2f} s")
        print(f"page size:           {size_mb:6.2f} MB  (plotly.js alone is about 4.8 MB)")
        figures = report.html.count('class="plotly-graph-div"')
        print(f"figures on page:     {figures}")
        verdict = "within" if total_s < TARGET_S else "OVER"
        print(f"{verdict} target: {total_s / TARGET_S:.2f} of {TARGET_S:.0f} s")


if __name__ == "__main__":
    main()
