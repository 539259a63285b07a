"""How fast the command line answers: wall time of `ablate --help`, `--version`, `list` and
`show`, each run several times in a fresh process; prints the median and the range.

    python benchmarks/cli_bench.py [--runs 5]

The cores are shared on many machines: the load average is printed beside the table, and
a busy machine reads slower. Targets: --help, --version and list under 1 s; show under 3 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = [
    ["--help"],
    ["--version"],
    ["list"],
    ["show", "depth"],
    ["show", "shortcut_types", "--preset", "smoke"],
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    exe = Path(sys.executable).with_name("ablate")
    rows = []
    with tempfile.TemporaryDirectory() as work:  # no store, no data: a first-hour machine
        for cmd in COMMANDS:
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                done = subprocess.run([str(exe), *cmd], cwd=work, capture_output=True)
                times.append(time.perf_counter() - start)
                if done.returncode != 0:
                    sys.exit(f"ablate {' '.join(cmd)} failed: {done.stderr.decode()[-500:]}")
            rows.append((" ".join(cmd), statistics.median(times), min(times), max(times)))
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} cores, "
          f"{args.runs} runs each")  # fmt: skip
    print("| command | median s | min s | max s |")
    print("|---|--:|--:|--:|")
    for cmd, median, low, high in rows:
        print(f"| `ablate {cmd}` | {median:.2f} | {low:.2f} | {high:.2f} |")


if __name__ == "__main__":
    main()
