"""A lab's shared store under load: 4 drivers each run a small digits study against one
`mlflow server --app-name basic-auth` over PostgreSQL (tests/lab_store.py starts both, for
real, on 127.0.0.1) while reports of one study are built and the UI is read. Afterwards it
checks that every trial has exactly one run, every evaluation one point and no driver
failed, and prints how long the tracking calls of one evaluation took (Store.log_evaluation:
one batch of the evaluation's metrics) on that server, busy and idle, against a local
SQLite file.

    .venv/bin/python benchmarks/lab_store_load.py [--drivers 4] [--iterations 60]

Needs PostgreSQL's binaries (Debian's `postgresql`) and the `server` extra."""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.request import Request, urlopen

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import lab_store as lab  # noqa: E402 - tests/ holds the store's set-up

STUDY = """\
name: {name}
question: Does the shared store keep every trial once under load?
dataset: digits
scientific:
  shortcut: [none, A]
fixed: {{depth: 8, iterations: {iterations}, eval_every: 20, batch_size: 32}}
seeds: [0, 1]
"""
EVALUATION = {"train/loss": 0.5, "train/error": 0.1, "val/loss": 0.6, "val/error": 0.12,
              "test/loss": 0.6, "test/error": 0.13, "lr": 0.1, "images_per_s": 900.0}  # fmt: skip


def per_evaluation(uri: str, n: int) -> list[float]:
    """Seconds each of n evaluations' tracking calls took, into a run of its own."""
    from ablations.tracking import Store

    store = Store(uri)
    exp = store.experiment_id(f"probe-{time.time_ns()}")
    run_id = store.client.create_run(exp).info.run_id
    times = []
    for i in range(n):
        start = time.perf_counter()
        store.log_evaluation(run_id, {"iteration": 20 * (i + 1), **EVALUATION})
        times.append(time.perf_counter() - start)
    return times


def describe(times: list[float]) -> str:
    times = sorted(times)
    p90 = times[int(0.9 * (len(times) - 1))]
    return f"median {1000 * statistics.median(times):.1f} ms, p90 {1000 * p90:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drivers", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--probes", type=int, default=100, help="evaluations timed per store")
    args = parser.parse_args()
    if not lab.available():
        print("PostgreSQL's binaries are not installed (apt-get install postgresql)")
        return 2
    work = Path(tempfile.mkdtemp(prefix="ablate-load-"))
    pg = lab.start_postgres()
    server = lab.start_server(pg, work / "server")
    os.environ |= server.env()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    drivers, stop = [], threading.Event()
    reads = {"report": [], "ui": []}
    try:
        began = time.monotonic()
        for i in range(args.drivers):
            folder = work / f"driver{i}"
            folder.mkdir()
            (folder / "s.yaml").write_text(
                STUDY.format(name=f"load{i}", iterations=args.iterations)
            )
            denv = {**env, "RAY_TMPDIR": tempfile.mkdtemp(prefix=f"rt{i}", dir="/tmp")}
            cmd = [str(Path(sys.executable).with_name("ablate")), "run", "s.yaml", "--quiet"]
            cmd += ["--max-concurrent", "1", "--tracking-uri", server.url]
            out = open(folder / "out.txt", "w")
            drivers.append(
                subprocess.Popen(
                    cmd, cwd=folder, env=denv, stdout=out, stderr=out, start_new_session=True
                )  # fmt: skip
            )

        def readers() -> None:
            """Reports of the first study and the UI's study list, until the drivers end."""
            while not stop.is_set():
                start = time.perf_counter()
                proc = subprocess.run(
                    [str(Path(sys.executable).with_name("ablate")), "report", "load0",
                     "--tracking-uri", server.url, "--out", str(work / "report")],
                    env=env, capture_output=True, text=True,
                )  # fmt: skip
                if proc.returncode == 0:
                    reads["report"].append(time.perf_counter() - start)
                start = time.perf_counter()
                request = Request(f"{server.url}/ajax-api/2.0/mlflow/experiments/search",
                                  data=b'{"max_results": 100}', method="POST",
                                  headers={"Content-Type": "application/json"})  # fmt: skip
                login = base64.b64encode(f"{lab.USER}:{lab.PASSWORD}".encode()).decode()
                page = Request(server.url)  # the UI's page, then its study list
                for each in (page, request):
                    each.add_header("Authorization", f"Basic {login}")
                    with urlopen(each, timeout=60):
                        pass
                reads["ui"].append(time.perf_counter() - start)
                stop.wait(5)

        reader = threading.Thread(target=readers, daemon=True)
        reader.start()
        time.sleep(30)  # the drivers past their planning, writing
        busy = per_evaluation(server.url, args.probes)
        codes = [d.wait(timeout=3600) for d in drivers]
        wall = time.monotonic() - began
        stop.set()
        reader.join(timeout=600)
        idle = per_evaluation(server.url, args.probes)
        sqlite = per_evaluation(f"sqlite:///{work / 'local.db'}", args.probes)
        server.stop()  # again, trusting a checked login for a minute
        server = lab.start_server(pg, work / "server", int(server.url.rsplit(":")[-1]), 60)
        cached = per_evaluation(server.url, args.probes)
        problems = check(server.url, args.drivers, args.iterations)
        for i, code in enumerate(codes):
            text = (work / f"driver{i}" / "out.txt").read_text()
            if code != 0 or "Traceback" in text:
                problems.append(f"driver {i} exited {code}: {text[-500:]}")
        print(f"{args.drivers} drivers x 4 trials ({args.iterations} iterations, evaluations "
              f"every 20) on one server over PostgreSQL: all ended in {wall:.0f} s")  # fmt: skip
        print(
            f"reports of load0 built meanwhile: {len(reads['report'])} "
            f"({describe(reads['report']) if reads['report'] else '-'}); "
            f"UI reads: {len(reads['ui'])} ({describe(reads['ui']) if reads['ui'] else '-'})"
        )
        print("tracking calls per evaluation (Store.log_evaluation, one batch of 8 metrics):")
        print(f"  server over PostgreSQL, 4 drivers writing: {describe(busy)}")
        print(f"  server over PostgreSQL, idle:              {describe(idle)}")
        print(f"  the same, auth_cache_ttl_seconds = 60:     {describe(cached)}")
        print(f"  local SQLite file:                         {describe(sqlite)}")
        print("problems: " + ("; ".join(problems) if problems else "none"))
        return 1 if problems else 0
    finally:
        stop.set()
        for d in drivers:
            if d.poll() is None:
                os.killpg(d.pid, 9)
        server.stop()
        lab.remove_postgres(pg)
        shutil.rmtree(work, ignore_errors=True)


def check(url: str, drivers: int, iterations: int) -> list[str]:
    """Every trial one run, every evaluation one point."""
    from mlflow.tracking import MlflowClient

    client, problems = MlflowClient(url), []
    steps = list(range(20, iterations + 1, 20))
    for i in range(drivers):
        exp = client.get_experiment_by_name(f"load{i}")
        runs = client.search_runs([exp.experiment_id], "tags.`ablate.role` = 'trial'")
        keys = [r.data.tags["ablate.trial_key"] for r in runs]
        if len(keys) != 4 or len(set(keys)) != 4:
            problems.append(f"load{i}: trial runs {sorted(keys)}")
        for run in runs:
            for key in EVALUATION:
                found = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
                if found != steps:
                    problems.append(f"load{i} {run.data.tags['ablate.trial_key']} {key}: {found}")
    return problems


if __name__ == "__main__":
    sys.exit(main())
