"""benchmarks/gpu_check.sh, the one-call GPU check, cannot rot unnoticed: its dry run on
CPU runs every step with tiny settings and must write a report with every section and
numbers that parse. Also the parts a dry run does not reach: a full trial stopped by its
time limit, an engine variant that fails, and variant names."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is not installed

from benchmarks import summarize_gpu, train_bench  # noqa: E402

STEPS = ("tiny", "unpack", "env", "sync", "speed", "graph", "equivalence", "pack", "full")


def table_rows(md: str, heading: str) -> list[list[str]]:
    """The cells of the first Markdown table after `heading` (header and rule dropped)."""
    body = md.split(heading, 1)[1]
    rows, started = [], False
    for line in body.splitlines():
        if line.startswith("|"):
            started = True
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif started:
            break
    return rows[2:]


def number(cell: str) -> float:
    """A table cell as a number: '1,234', '1.63x', '57.90 (estimate)', '0.0000'."""
    m = re.match(r"-?[\d,]*\.?\d+", cell)
    assert m, f"not a number: {cell!r}"
    return float(m.group().replace(",", ""))


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu-check")
    env = {k: v for k, v in os.environ.items() if k not in ("CIFAR_DIR", "CIFAR_TARBALL")}
    env.update(OUT=str(root / "out"), WORK=str(root / "work"), PYTHON=sys.executable)
    env.pop("BUDGET_S", None)
    proc = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=800,
    )
    return proc, root / "out"


@pytest.mark.slow
def test_dry_run_runs_every_step_and_reports_every_section(dry_run):
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    steps = {}
    for line in (out / "steps.tsv").read_text().splitlines():
        name, _limit, _took, _rc, status = line.split("\t")
        steps[name] = status
    for name in STEPS:
        log = (out / f"{name}.log").read_text()[-2000:] if (out / f"{name}.log").exists() else ""
        assert steps.get(name, "missing").startswith("ok"), f"{name}: {steps.get(name)}\n{log}"

    md = (out / "gpu-check.md").read_text()
    for section in summarize_gpu.SECTIONS:
        assert section in md, section
    assert "_Not measured" not in md and "failed" not in md
    assert "**Dry run**" in md

    # Speed: the reference and each engine variant at both depths, positive rates, ratios
    # and full-trial estimates; the contiguous variant at the deeper depth only.
    speed = table_rows(md, "## Speed")
    pipelines = {(r[0], r[1]) for r in speed}
    for depth in (8, 14):
        for p in ("reference", "eager-fp32", "eager-bf16", "graph-fp32", "graph-bf16"):
            assert (f"ResNet-{depth}", p) in pipelines
    assert ("ResNet-14", "eager-fp32-contiguous") in pipelines
    assert ("ResNet-8", "eager-fp32-contiguous") not in pipelines
    for row in speed:
        assert number(row[2]) > 0 and number(row[3]) > 0
        if row[1] != "reference":
            assert number(row[4]) > 0 and number(row[5]) > 0  # trial minutes, of which eval
    assert len(speed) == 11

    # On a CPU the graph form runs its static body uncaptured: equal to eager bit for bit.
    graph = table_rows(md, "## Graph step vs eager step")
    assert {r[0] for r in graph} == {"fp32", "bf16"} and len(graph) == 8
    assert all(number(r[2]) == 0 and number(r[3]) == 0 and number(r[4]) > 0 for r in graph)
    assert md.count("**AGREE**; graph vs eager bitwise True") == 2

    sync = table_rows(md, "## Host syncs")
    assert [r[0] for r in sync] == ["eager", "graph"] and all(r[2] == "n/a" for r in sync)

    full = table_rows(md, "## Full ResNet-20 trial")
    assert len(full) == 1 and full[0][0] == "finished" and number(full[0][1]) == 20
    assert 0 <= number(full[0][7]) <= 100 and number(full[0][2]) > 0

    pack = table_rows(md, "## Packing")
    assert len(pack) == 1 and number(pack[0][3]) == 2 and number(pack[0][6]) > 0

    assert re.search(r"Verdict: \*\*(AGREE|DISAGREE)\*\*: test error: difference", md)
    env = json.loads((out / "env.json").read_text())
    assert env["dry_run"] and env["torch"] and env["train_images"] == 1350


def test_full_trial_stopped_by_its_time_limit_is_reported_as_such(tmp_path):
    path = tmp_path / "full.json"
    argv = ["--data", "digits", "--device", "cpu", "--threads", "1", "--full-trial"]
    argv += ["--depths", "8", "--batch-size", "16", "--iterations", "100000"]
    train_bench.main([*argv, "--step", "graph", "--time-limit", "4", "--json", str(path)])
    blob = json.loads(path.read_text())
    row = blob["results"][0]
    assert not blob["partial"] and row["status"] == "stopped" and row["variant"] == "graph-fp32"
    assert 0 < row["iterations"] < 100_000 and row["projected_wall_s"] > row["wall_s"]
    assert row["train_images"] == 1350 and row["val_images"] == 150

    summarize_gpu.main(["report", str(tmp_path)])
    md = (tmp_path / "gpu-check.md").read_text()
    full = table_rows(md, "## Full ResNet-20 trial")
    assert full[0][0].startswith("stopped by its time limit (4 s)")
    assert "Not finished: at this pace a whole trial takes about" in md
    # The steps that left nothing say so, section by section.
    for section in summarize_gpu.SECTIONS:
        assert section in md
    assert md.count("_Not measured: step") == 5  # speed, graph, sync, pack, equivalence
    assert "`equivalence` not run" in md


def test_a_failing_engine_variant_leaves_the_others_measured(tmp_path):
    real = train_bench.engine_train_rate

    def graph_breaks(data, depth, args, variant):
        if variant.step == "graph":
            raise RuntimeError("capture failed\nsecond line")
        return real(data, depth, args, variant)

    argv = ["--data", "digits", "--device", "cpu", "--threads", "1", "--depths", "8"]
    argv += ["--batch-size", "16", "--warmup", "1", "--iterations", "2", "--repeats", "1"]
    argv += ["--workers", "0", "--engine-variants", "eager-fp32", "graph-fp32"]
    with mock.patch.object(train_bench, "engine_train_rate", graph_breaks):
        train_bench.main([*argv, "--estimate", "--json", str(tmp_path / "speed.json")])
    row = json.loads((tmp_path / "speed.json").read_text())["results"][0]
    eager, graph = row["engines"]
    assert eager["images_per_s"] > 0 and eager["trial"]["minutes"] > 0
    assert graph["images_per_s"] is None and graph["error"] == "RuntimeError: capture failed"

    summarize_gpu.main(["report", str(tmp_path)])
    md = (tmp_path / "gpu-check.md").read_text()
    speed = {r[1]: r for r in table_rows(md, "## Speed")}
    assert speed["graph-fp32"][2] == "failed: RuntimeError: capture failed"
    assert number(speed["eager-fp32"][2]) > 0 and speed["graph-fp32"][3:] == ["-", "-", "-"]


def test_variant_names():
    v = train_bench.Variant.parse("graph-bf16-contiguous@20,110")
    assert (v.step, v.precision, v.compile, v.contiguous) == ("graph", "bf16", False, True)
    assert v.depths == (20, 110) and v.applies(110) and not v.applies(56)
    assert v.label == "graph-bf16-contiguous@20,110"
    c = train_bench.Variant.parse("compile-fp32")
    assert (c.step, c.compile, c.name, c.applies(56)) == ("eager", True, "compile-fp32", True)
    for bad in ("graph", "graph-fp16", "fast-fp32", "eager-fp32-nhwc", "eager-fp32@x"):
        with pytest.raises(Exception, match="expected|integers"):
            train_bench.Variant.parse(bad)
