"""The helpers of benchmarks/gpu_check.sh, and the Markdown summary of what it measured.

    python benchmarks/summarize_gpu.py env --data NAME --data-dir DIR --json OUT/env.json
    python benchmarks/summarize_gpu.py tiny-folder OUT.tar.gz
    python benchmarks/summarize_gpu.py report OUT

`env` records the versions and loads the data once (filling the decode cache the later
steps read); `tiny-folder` writes the dry run's data; `report` turns what the steps left in
OUT into OUT/gpu-check.md, without torch: a step that left nothing shows the end of its log.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path


def env(a) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch

    from resnet.data import load_dataset

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    info = {"dry_run": a.dry_run, "date": time.strftime("%Y-%m-%d %H:%M %Z"), "data": a.data}
    info.update(torch=torch.__version__, cuda=torch.version.cuda, gpu=gpu, cpus=os.cpu_count())
    start = time.perf_counter()
    d = load_dataset(a.data, a.data_dir)
    info.update(load_s=time.perf_counter() - start, train_images=len(d.train_x))
    info.update(val_images=len(d.val_x), test_images=len(d.test_x))
    Path(a.json).write_text(json.dumps(info, indent=1))
    print(info)


def tiny_folder(a) -> None:
    """scikit-learn's digits as 32x32 RGB JPEGs (quality 75, 4:2:0 chroma, as the CIFAR-10
    copy), 1,500 train and 297 test, in a .tar.gz holding `digits-jpeg/{train,test}/`."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "digits-jpeg"
        for i, (img, label) in enumerate(zip(digits.images, digits.target, strict=True)):
            folder = root / ("train" if i < 1500 else "test") / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            gray = Image.fromarray(np.round(img * 255 / 16).astype(np.uint8))
            rgb = gray.resize((32, 32), Image.BILINEAR).convert("RGB")
            rgb.save(folder / f"{i:04d}.jpg", quality=75, subsampling=2)
        with tarfile.open(a.dest, "w:gz") as tar:
            tar.add(root, arcname="digits-jpeg")


def cell(x) -> str:
    """None as '-', integers as 12,345, other numbers as 12,345 or 1.23, the rest as is."""
    if x is None or isinstance(x, str | bool | int):
        return "-" if x is None else f"{x:,}" if isinstance(x, int) else str(x)
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}"


def table(header: str, rows) -> list[str]:
    rule = "|" + "---|" * (header.count("|") + 1)
    return [f"| {header} |", rule, *("| " + " | ".join(map(cell, r)) + " |" for r in rows)]


def speed_md(speed: dict) -> list[str]:
    """Per depth, images/s of the reference and each engine variant, and each variant's
    estimated full trial: 64k steps at that rate plus the evaluations such a trial runs."""
    m, rows, r = speed["meta"], [], speed["results"][0]
    for d in speed["results"]:
        rows.append([d["model"], "reference", d["ref_images_per_s"], "1.00x", None, None])
        for e in d["engines"]:
            t, rate = e.get("trial") or {}, e["images_per_s"] or f"failed: {e['error']}"
            ratio, evals = e.get("ratio") and f"{e['ratio']:.2f}x", t.get("eval_s")
            rows.append([d["model"], e["variant"], rate, ratio, t.get("minutes"), evals])
            rows[-1][-1] = evals and evals / 60
    return [
        f"Batch {m['batch_size']}, {m['iterations']} steps timed after {m['warmup']}, the "
        f"{m['stat']} of {m['repeats']} run(s); the reference with {m['workers']} workers."
        + (" **Partial**: the step ended early." if speed["partial"] else ""),
        "",
        *table("model | pipeline | images/s | vs reference | est. trial (min) | of it eval", rows),
        "",
        f"Loaders alone: reference {cell(r['ref_loader_images_per_s'])}, engine "
        f"{cell(r['ours_loader_images_per_s'])} images/s ({r['loader_ratio']:.1f}x). Targets: "
        f">= {r['target_ratio']:g}x the reference; on a GPU a full trial of ResNet-20 / 56 / 110 "
        "in <= 2 / 5 / 9 min.",
    ]


def graph_md(g: dict) -> list[str]:
    rows, agree = [], [""]
    for r in g["results"]:
        for k in ("train/loss", "train/error", "val/error", "test/error"):
            s = 1 if k == "train/loss" else 100  # errors in points
            diffs = (r["graph_vs_eager"][k], r["eager_vs_eager"][k], r["tolerance"][k])
            rows.append([r["precision"], k, *(d if d is None else f"{s * d:.4f}" for d in diffs)])
        eager, graph = (cell(100 * r["final"][side]["test/error"]) for side in ("eager", "graph"))
        agree.append(
            f"- {r['precision']}: **{'AGREE' if r['agree'] else 'DISAGREE'}**; graph vs eager "
            f"bitwise {r['graph_vs_eager']['bitwise']}; test error eager {eager}%, graph {graph}%."
        )
    return table("precision | metric | graph - eager | eager - eager | tolerance", rows) + agree


def sync_md(s: dict) -> list[str]:
    rows = []
    for r in s["results"]:
        counts = ["n/a" if r.get(k) is None else r[k] for k in ("syncs", "data_passes", "extra")]
        rows.append([r["form"], r.get("steps", f"failed: {r.get('error')}"), *counts])
    return table("form | steps | synchronizing calls | data passes begun | extra", rows)


def full_md(fl: dict) -> list[str]:
    m, r = fl["meta"], fl["results"][0]
    done, target = r["status"] == "finished" and not fl["partial"], r["target_minutes"]
    state = r["status"] if done else f"stopped by its time limit ({m['time_limit_s']:.0f} s)"
    if fl["partial"]:
        state = f"killed while running (last record at iteration {r['iterations']})"
    errors = [None if x is None else 100 * x for x in (r["test_error"], r["val_error"])]
    row = [state, r["iterations"], r["wall_s"], r["wall_s"] / 60, r["train_images_per_s"]]
    row += [r["eval_s"], r["evaluations"], *errors, target]
    row.append(None if not (done and target) else "met" if row[3] <= target else "**NOT met**")
    head = "status | iterations | wall (s) | minutes | training images/s | evaluation (s) "
    head += "| evaluations | test error (%) | val error (%) | target (min) | met"
    lines = [f"{r['model']}, {r['variant']}, {r['target_iterations']:,} steps with evaluations; "]
    lines[0] += "the paper's ResNet-20: 8.75% test error (He et al. 2015, Table 6)."
    lines += ["", *table(head, [row])]
    if not done and r["projected_wall_s"]:
        minutes = r["projected_wall_s"] / 60
        lines.append(f"\nNot finished: at this pace a whole trial takes about {minutes:.1f} min; ")
        lines[-1] += f"the test error is from iteration {r['last_eval_iteration']}."
    return lines


def pack_md(p: dict) -> list[str]:
    rows = []
    for r in p["results"]:
        alone, packed = r["alone"]["aggregate_images_per_s"], r["packed"]
        rows.append([r["model"], r["variant"], alone, packed["processes"]])
        rows[-1] += [packed["aggregate_images_per_s"], packed["sum_images_per_s"], r["gain"]]
    return table(
        "model | variant | alone images/s | K | packed images/s | sum of rates | gain", rows
    )


def equivalence_md(text: str) -> list[str]:
    verdict = next((ln for ln in text.splitlines() if ln.startswith("**")), "none")
    return [f"Verdict: {verdict}", "", text.strip()]


PARTS = {  # section: the step and its file, and how it is summarized
    "## Speed": ("speed", "speed.json", speed_md),
    "## Graph step vs eager step": ("graph", "graph.json", graph_md),
    "## Host syncs": ("sync", "sync.json", sync_md),
    "## Full ResNet-20 trial": ("full", "full.json", full_md),
    "## Packing": ("pack", "pack.json", pack_md),
    "## Engine vs reference": ("equivalence", "equivalence.md", equivalence_md),
}
SECTIONS = ("## Steps", *PARTS)


def report(a) -> None:
    out = Path(a.out)

    def load(name: str):
        try:
            text = (out / name).read_text(errors="replace")
            return json.loads(text) if name.endswith(".json") else text
        except (OSError, ValueError):
            return None

    steps = [line.split("\t") for line in (load("steps.tsv") or "").splitlines()]
    status, took = {s[0]: s[4] for s in steps}, {s[0]: s[2] for s in steps}
    e = load("env.json") or {}
    dry = " --dry-run" if e.get("dry_run") else ""
    versions = f"torch {e.get('torch')} (CUDA {e.get('cuda')})"
    lines = [f"# GPU check: {e.get('gpu') or 'CPU'}, {versions}, {e.get('date')}", ""]
    if dry:
        lines += ["**Dry run** on CPU with tiny settings: its numbers say nothing.", ""]
    lines += [f"`bash benchmarks/gpu_check.sh{dry}`: {took.get('total', '?')} s.", ""]
    if e:
        lines[-2] += f" Data `{e['data']}`: {e['train_images']:,} train / {e['val_images']:,} "
        lines[-2] += f"validation / {e['test_images']:,} test images."
    lines += ["## Steps", "", *table("step | limit (s) | took (s) | exit | status", steps), ""]
    for heading, (step, name, summary) in PARTS.items():
        found = load(name)
        if found and (isinstance(found, str) or found["results"]):
            lines += [heading, "", *summary(found), ""]
            continue
        tail = "\n".join((load(f"{step}.log") or "").rstrip().splitlines()[-8:])
        note = f"_Not measured: step `{step}` {status.get(step, 'not run')}._"
        lines += [heading, "", note, *(["", "```", tail, "```"] if tail else []), ""]
    text = "\n".join(lines).rstrip() + "\n"
    (out / "gpu-check.md").write_text(text)
    print(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("env", help="versions, device and the data set's load time")
    for flag, default in (("--data", None), ("--data-dir", "./data"), ("--json", None)):
        e.add_argument(flag, default=default, required=default is None)
    e.add_argument("--dry-run", action="store_true")
    sub.add_parser("tiny-folder", help="digits as a JPEG image-folder tarball").add_argument("dest")
    sub.add_parser("report", help="OUT/gpu-check.md from a check's folder").add_argument("out")
    args = p.parse_args(argv)
    {"env": env, "tiny-folder": tiny_folder, "report": report}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
