"""The helpers of benchmarks/gpu_check.sh: the environment, the dry run's data, and the
Markdown report of everything the check measured.

    python benchmarks/summarize_gpu.py env --data NAME --data-dir DIR --json OUT/env.json
    python benchmarks/summarize_gpu.py tiny-folder OUT.tar.gz
    python benchmarks/summarize_gpu.py report OUT [--md OUT/gpu-check.md]

`report` reads what the steps left in OUT (steps.tsv, env.json, sync.json, speed.json,
graph.json, full.json, pack.json, equivalence.md and the logs) and needs neither torch
nor a GPU; a step that failed, timed out or was skipped shows as such, with the end of
its log. Over 400 lines: one formatter per measurement, kept in the one file the GPU
script calls; split it when a measurement grows its own logic.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The report's sections, in order; tests/test_gpu_check.py checks that each is there.
SECTIONS = (
    "## Steps",
    "## Speed",
    "## Targets",
    "## ResNet-110 in eager",
    "## Graph step vs eager step",
    "## Host syncs",
    "## Full ResNet-20 trial",
    "## Packing",
    "## Engine vs reference",
)
PAPER_ERROR_20 = 8.75  # He et al. 2015, Table 6: ResNet-20 on CIFAR-10, test error (%)


# ------------------------------------------------------------------------------ env


def env(args) -> int:
    """Versions, the device, and the data set loaded once (which also fills the engine's
    decode cache, so later steps read it in seconds)."""
    sys.path.insert(0, str(ROOT))
    import torch
    import torchvision

    from resnet.data import load_dataset

    cuda = torch.cuda.is_available()
    info = {
        "dry_run": args.dry_run,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "device": "cuda" if cuda else "cpu",
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30
        if cuda
        else None,
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if cuda else None,
        "driver": _driver() if cuda else None,
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "data": args.data,
    }
    start = time.perf_counter()
    data = load_dataset(args.data, args.data_dir)
    info["load_s"] = time.perf_counter() - start
    info["train_images"] = len(data.train_x)
    info["val_images"] = len(data.val_x)
    info["test_images"] = len(data.test_x)
    Path(args.json).write_text(json.dumps(info, indent=1))
    for k, v in info.items():
        print(f"{k}: {v}")
    return 0


def _driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


# ---------------------------------------------------------------------- tiny folder


def tiny_folder(args) -> int:
    """scikit-learn's digits as a JPEG image folder (32x32 RGB, quality 75, 4:2:0 chroma,
    like the CIFAR-10 JPEG copy; 1,500 train and 297 test images), packed as a .tar.gz
    holding one `digits-jpeg/` folder: the dry run unpacks and reads it the way the GPU
    run reads CIFAR-10. Without torch, which takes seconds to import on busy cores."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    n_train = 1500
    with tempfile.TemporaryDirectory(prefix="tiny-folder-") as tmp:
        root = Path(tmp) / "digits-jpeg"
        for i, (img, label) in enumerate(zip(digits.images, digits.target, strict=True)):
            split = "train" if i < n_train else "test"
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            gray = Image.fromarray(np.round(img * 255 / 16).astype(np.uint8))
            rgb = gray.resize((32, 32), Image.BILINEAR).convert("RGB")
            rgb.save(folder / f"{i:04d}.jpg", "JPEG", quality=75, subsampling=2)
        with tarfile.open(args.dest, "w:gz") as tar:
            tar.add(root, arcname="digits-jpeg")
    print(f"{args.dest}: {n_train} train and {len(digits.target) - n_train} test JPEGs")
    return 0


# --------------------------------------------------------------------------- report


def _load(out: Path, name: str) -> dict | None:
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return None


def _steps(out: Path) -> dict[str, dict]:
    steps = {}
    try:
        lines = (out / "steps.tsv").read_text().splitlines()
    except OSError:
        return steps
    for line in lines:
        parts = line.split("\t")
        if len(parts) == 5:
            name, limit, took, rc, status = parts
            steps[name] = {"limit": limit, "took": took, "rc": rc, "status": status}
    return steps


def _tail(out: Path, step: str, lines: int = 8) -> str:
    try:
        text = (out / f"{step}.log").read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def _missing(out: Path, steps: dict, step: str) -> list[str]:
    s = steps.get(step, {"status": "not run"})
    lines = [f"_Not measured: step `{step}` {s['status']}._"]
    tail = _tail(out, step)
    if tail:
        lines += ["", "```", tail, "```"]
    return lines


def _f(x, fmt: str = ",.0f", none: str = "-") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return none
    return format(x, fmt)


def _pct(x) -> str:
    return _f(None if x is None else 100 * x, ".2f")


def _yes(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "**NOT met**")


def section_steps(out: Path, steps: dict, env_info: dict | None) -> list[str]:
    lines = ["## Steps", ""]
    lines += ["| step | limit (s) | took (s) | exit | status |", "|---|--:|--:|--:|---|"]
    for name, s in steps.items():
        lines.append(f"| {name} | {s['limit']} | {s['took']} | {s['rc']} | {s['status']} |")
    if env_info:
        lines += [
            "",
            f"Data `{env_info['data']}`: {env_info['train_images']:,} train / "
            f"{env_info['val_images']:,} validation / {env_info['test_images']:,} test images, "
            f"loaded (and the decode cache filled) in {env_info['load_s']:.1f} s.",
        ]
    return lines


def _best(engines: list[dict], key) -> dict | None:
    usable = [e for e in engines if e["images_per_s"] is not None and not e.get("contiguous")]
    return max(usable, key=key) if usable else None


def section_speed(out: Path, steps: dict) -> tuple[list[str], list[str], list[str]]:
    """The speed table, the targets and the ResNet-110 eager question."""
    speed = _load(out, "speed.json")
    full = _load(out, "full.json")
    head = ["## Speed", ""]
    targets = ["## Targets", ""]
    slow = ["## ResNet-110 in eager", ""]
    if not speed:
        missing = _missing(out, steps, "speed")
        return head + missing, targets + missing, slow + missing
    meta, rows = speed["meta"], speed["results"]
    which = "fastest" if meta["stat"] == "best" else "median"
    if speed.get("partial"):
        head += [
            f"**Partial**: the step ended ({steps.get('speed', {}).get('status', '?')}) after "
            f"{', '.join(r['model'] for r in rows)}.",
            "",
        ]
    head += [
        f"{meta['device_name']}, torch {meta['torch']}; data `{meta['data']}`, batch "
        f"{meta['batch_size']}, {meta['warmup']} warm-up + {meta['iterations']} timed steps, "
        f"the {which} of {meta['repeats']} run(s). Reference: torchvision DataLoader with "
        f"{meta['workers']} workers, per-image PIL transforms, fp32. Full-trial minutes are "
        "**estimates**: 64,000 iterations at the measured rate plus the measured time of "
        "the evaluations a trial runs (validation + test images, once per pass over the "
        "training split, the engine's default, and once at the end); data loading not "
        "included.",
        "",
        "| model | pipeline | images/s | vs reference | est. full trial (min) "
        "| of which eval (min) |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for r in rows:
        head.append(f"| {r['model']} | reference | {_f(r['ref_images_per_s'])} | 1.00x | - | - |")
        for e in r["engines"]:
            if e["images_per_s"] is None:
                head.append(f"| {r['model']} | {e['variant']} | failed: {e['error']} | - | - | - |")
                continue
            t = e["trial"]
            head.append(
                f"| {r['model']} | {e['variant']} | {_f(e['images_per_s'])} "
                f"| {e['ratio']:.2f}x | {t['minutes']:.2f} "
                f"| {_f(t['eval_s'] / 60 if t['eval_s'] is not None else None, '.2f')} |"
            )
    r0 = rows[0] if rows else None
    if r0:
        head += [
            "",
            f"Loaders alone: reference {_f(r0['ref_loader_images_per_s'])}, engine "
            f"{_f(r0['ours_loader_images_per_s'])} images/s ({r0['loader_ratio']:.1f}x).",
        ]
        evals = [
            f"ResNet-{r['depth']} {p} {s:.3f} s"
            for r in rows
            for p, s in sorted(r.get("eval_s", {}).items())
        ]
        errors = [
            f"ResNet-{r['depth']} {k}: {v}" for r in rows for k, v in r.get("errors", {}).items()
        ]
        if errors:
            head += ["", "Failed: " + "; ".join(errors) + " (see speed.log)."]
        if evals:
            ok = [e for e in r0["engines"] if e["images_per_s"] is not None]
            n = ok[0]["trial"]["evaluations"] if ok else "?"
            head.append(f"One evaluation takes {', '.join(evals)}; a full trial runs {n}.")

    # Targets, per depth: the fastest variant against the reference, and the variant with
    # the shortest full trial (they differ when evaluation costs differ by precision).
    # Benchmark-only variants (-contiguous) are not the engine, so they are left out.
    targets += [
        "| model | fastest variant | vs reference | >= target | met "
        "| shortest-trial variant | full trial (min) | <= target (min) | met |",
        "|---|---|--:|--:|---|---|--:|--:|---|",
    ]
    for r in rows:
        fastest = _best(r["engines"], key=lambda e: e["images_per_s"])
        shortest = _best(r["engines"], key=lambda e: -e["trial"]["minutes"])
        if fastest is None:
            continue
        limit = r.get("target_trial_minutes")
        minutes, how = shortest["trial"]["minutes"], "estimate"
        measured = (full or {}).get("results") or []
        if r["depth"] == 20 and measured and not full.get("partial"):
            f = measured[0]
            if f.get("status") == "finished" and f.get("depth") == 20:
                shortest = {"variant": f["variant"]}
                minutes, how = f["wall_s"] / 60, "measured"
        targets.append(
            f"| {r['model']} | {fastest['variant']} | {fastest['ratio']:.2f}x "
            f"| {r['target_ratio']:g}x | {_yes(fastest['ratio'] >= r['target_ratio'])} "
            f"| {shortest['variant']} | {minutes:.2f} ({how}) | {_f(limit, 'g')} "
            f"| {_yes(None if limit is None else minutes <= limit)} |"
        )
    targets += [
        "",
        "Per variant (end to end >= target / full-trial estimate <= target): "
        + "; ".join(
            f"{r['model']} "
            + ", ".join(
                f"{e['variant']} failed"
                if e["images_per_s"] is None
                else f"{e['variant']} {_yes(e['ratio'] >= r['target_ratio'])}"
                + (
                    ""
                    if r.get("target_trial_minutes") is None
                    else f" / {_yes(e['trial']['minutes'] <= r['target_trial_minutes'])}"
                )
                for e in r["engines"]
            )
            for r in rows
        ),
    ]

    # What makes the deepest net slow in eager: precision and memory format at one depth.
    deepest = max(rows, key=lambda r: r["depth"]) if rows else None
    if deepest:
        by = {e["variant"]: e for e in deepest["engines"] if e["images_per_s"] is not None}
        slow += [
            f"{deepest['model']}, eager step, images/s (reference "
            f"{_f(deepest['ref_images_per_s'])}):",
            "",
            "| variant | images/s | vs reference | vs eager-fp32 |",
            "|---|--:|--:|--:|",
        ]
        base = by.get("eager-fp32")
        for name in ("eager-fp32", "eager-bf16", "eager-fp32-contiguous", "eager-bf16-contiguous"):
            e = by.get(name)
            if e:
                rel = e["images_per_s"] / base["images_per_s"] if base else None
                slow.append(
                    f"| {name} | {_f(e['images_per_s'])} | {e['ratio']:.2f}x | {_f(rel, '.2f')}x |"
                )
        notes = []
        if base and "eager-bf16" in by:
            r = by["eager-bf16"]["images_per_s"] / base["images_per_s"]
            notes.append(
                f"bf16 autocast is {r:.2f}x the speed of fp32 in eager"
                + (" (its casts cost more than they save)" if r < 1 else "")
            )
        if base and "eager-fp32-contiguous" in by:
            r = by["eager-fp32-contiguous"]["images_per_s"] / base["images_per_s"]
            notes.append(
                f"the default (contiguous) layout is {r:.2f}x the speed of channels_last"
                + (" (channels_last with BN costs time here)" if r > 1 else "")
            )
        slow += ["", "; ".join(notes) + "." if notes else "_No eager variants at this depth._"]
    return head, targets, slow


def section_graph(out: Path, steps: dict) -> list[str]:
    lines = ["## Graph step vs eager step", ""]
    g = _load(out, "graph.json")
    if not g:
        return lines + _missing(out, steps, "graph")
    m = g["meta"]
    lines += [
        f"ResNet-{m['depth']} on `{m['data']}`, {m['iterations']} iterations of "
        f"{m['batch_size']} from seed {m['seed']}, an evaluation every {m['eval_every']}; "
        "eager, eager again (control) and graph. Largest difference over the history "
        "(loss in nats, errors in points). Tolerance: max("
        f"{m['control_factor']:g} x control, floor); floors "
        + ", ".join(f"{k} {v if k == 'train/loss' else 100 * v:g}" for k, v in m["floors"].items())
        + ".",
        "",
        "| precision | metric | graph - eager | eager - eager | tolerance | first window |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for r in g["results"]:
        gd, cd, tol = r["graph_vs_eager"], r["eager_vs_eager"], r["tolerance"]
        for metric in ("train/loss", "train/error", "val/error", "test/error"):
            scale = 1 if metric == "train/loss" else 100
            first = gd["first_window"].get(metric)
            lines.append(
                f"| {r['precision']} | {metric} "
                f"| {_f(None if gd[metric] is None else scale * gd[metric], '.4f')} "
                f"| {_f(None if cd[metric] is None else scale * cd[metric], '.4f')} "
                f"| {_f(scale * tol[metric], '.4f')} "
                f"| {_f(None if first is None else scale * first, '.4f')} |"
            )
    lines.append("")
    for r in g["results"]:
        fin = r["final"]
        lines.append(
            f"- {r['precision']}: **{'AGREE' if r['agree'] else 'DISAGREE'}**; graph vs eager "
            f"bitwise {r['graph_vs_eager']['bitwise']}, eager vs eager bitwise "
            f"{r['eager_vs_eager']['bitwise']}; final test error eager "
            f"{_pct(fin['eager']['test/error'])}%, graph {_pct(fin['graph']['test/error'])}%; "
            f"seconds eager {r['seconds']['eager']:.1f}, graph {r['seconds']['graph']:.1f}."
        )
    return lines


def section_sync(out: Path, steps: dict) -> list[str]:
    lines = ["## Host syncs", ""]
    s = _load(out, "sync.json")
    if not s:
        return lines + _missing(out, steps, "sync")
    m = s["meta"]
    lines += [
        f"ResNet-{m['depth']} on digits ({m['train_images']} training images, batch "
        f"{m['batch_size']}), steps {m['on']}-{m['off']} under torch's sync debug mode. "
        "Expected: one sync per data pass begun (the new permutation's copy to the device).",
        "",
        "| form | steps | synchronizing calls | data passes begun | extra | per step |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for r in s["results"]:
        if "error" in r:
            lines.append(f"| {r['form']} | failed: {r['error']} | | | | |")
            continue
        lines.append(
            f"| {r['form']} | {r['steps']} | {_f(r['syncs'], 'd', 'n/a')} | {r['data_passes']} "
            f"| {_f(r['extra'], 'd', 'n/a')} | {_f(r['per_step'], '.3f', 'n/a')} |"
        )
    if m["device"] != "cuda":
        lines += ["", "_No CUDA: the trainings ran, nothing was counted._"]
    return lines


def section_full(out: Path, steps: dict) -> list[str]:
    lines = ["## Full ResNet-20 trial", ""]
    f = _load(out, "full.json")
    if not f or not f.get("results"):
        return lines + _missing(out, steps, "full")
    m, r = f["meta"], f["results"][0]
    state = r["status"]
    if f.get("partial"):
        state = f"killed while running (last record at iteration {r['iterations']})"
    elif r["status"] == "stopped":
        state = f"stopped by its time limit ({_f(m.get('time_limit_s'), '.0f')} s)"
    target = r.get("target_minutes")
    finished = r["status"] == "finished" and not f.get("partial")
    lines += [
        f"{r['model']}, {r['variant']}, the paper's recipe (lr 0.1, /10 at 50% and 75%, "
        f"momentum 0.9, wd 1e-4, batch {m['batch_size']}) for {r['target_iterations']:,} "
        f"iterations on `{m['data']}` ({_f(r.get('train_images'), ',')} training / "
        f"{_f(r.get('val_images'), ',')} validation images), evaluations included.",
        "",
        "| status | iterations | wall (s) | minutes | training images/s | evaluation (s) "
        "| evaluations | test error (%) | val error (%) | target (min) | met |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
        f"| {state} | {r['iterations']:,} | {r['wall_s']:.1f} | {r['wall_s'] / 60:.2f} "
        f"| {_f(r['train_images_per_s'])} | {_f(r['eval_s'], '.1f')} | {r['evaluations']} "
        f"| {_pct(r['test_error'])} | {_pct(r['val_error'])} | {_f(target, 'g')} "
        f"| {_yes(r['wall_s'] / 60 <= target) if finished and target else '-'} |",
        "",
    ]
    if not finished and r.get("projected_wall_s"):
        lines.append(
            f"Not finished: at this pace a whole trial takes about "
            f"{r['projected_wall_s'] / 60:.1f} min (projected from "
            f"{r['iterations']:,} iterations); the test error is from iteration "
            f"{r.get('last_eval_iteration')}."
        )
    speed = _load(out, "speed.json") or {"meta": {}, "results": []}
    for row in speed["results"] if speed["meta"].get("batch_size") == m["batch_size"] else []:
        for e in row["engines"] if row["depth"] == r["depth"] else []:
            same = (e.get("trial") or {}).get("iterations") == r["target_iterations"]
            whole = r["wall_s"] if finished else r.get("projected_wall_s")
            if e["variant"] == r["variant"] and same and whole:
                lines.append(
                    f"The speed step estimated this trial at {e['trial']['minutes']:.2f} min, "
                    f"against {whole / 60:.2f} min {'measured' if finished else 'projected'} "
                    "here: how far to trust the estimates for the deeper nets."
                )
    lines.append(
        f"The paper's ResNet-20: {PAPER_ERROR_20}% test error (He et al. 2015, Table 6); the "
        "data here is the JPEG copy (quality 75, 4:2:0 chroma), not the official batches."
    )
    return lines


def section_pack(out: Path, steps: dict) -> list[str]:
    lines = ["## Packing", ""]
    p = _load(out, "pack.json")
    if not p:
        return lines + _missing(out, steps, "pack")
    lines += [
        "K trainings as separate processes on one device, timed windows started together: "
        "aggregate images/s over (last finish - common start), against one alone.",
        "",
        "| model | variant | alone images/s | K | packed images/s | sum of own rates | gain |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for r in p["results"]:
        a, k = r["alone"], r["packed"]
        lines.append(
            f"| {r['model']} | {r.get('variant', '-')} | {_f(a['aggregate_images_per_s'])} "
            f"| {k['processes']} | {_f(k['aggregate_images_per_s'])} "
            f"| {_f(k['sum_images_per_s'])} | {r['gain']:.2f}x |"
        )
    return lines


def section_equivalence(out: Path, steps: dict) -> list[str]:
    lines = ["## Engine vs reference", ""]
    try:
        text = (out / "equivalence.md").read_text().strip()
    except OSError:
        return lines + _missing(out, steps, "equivalence")
    verdict = next((ln for ln in text.splitlines() if ln.startswith("**")), None)
    lines += [
        "`benchmarks/equivalence.py` (engine eager fp32 against the independent reference "
        "trainer, same model, recipe, data and seeds; Welch test over seeds):",
        "",
        f"Verdict: {verdict or '_no verdict line_'}",
        "",
        text,
    ]
    return lines


def report(args) -> int:
    out = Path(args.out)
    steps = _steps(out)
    env_info = _load(out, "env.json")
    dry = bool(env_info and env_info.get("dry_run"))
    title = "# GPU check"
    if env_info:
        device = env_info["gpu"] or f"CPU ({env_info['cpus']} cores)"
        title += f": {device}, torch {env_info['torch']}"
        if env_info.get("device") == "cuda":
            title += f" (CUDA {env_info['cuda']}, cuDNN {env_info['cudnn']}"
            title += f", driver {env_info['driver']})" if env_info.get("driver") else ")"
        title += f", {env_info['date']}"
    lines = [title, ""]
    if dry:
        lines += [
            "**Dry run** on CPU with tiny settings: it shows that every step runs; its "
            "numbers say nothing about speed or accuracy.",
            "",
        ]
    total = steps.get("total", {}).get("took")
    lines += [f"`bash benchmarks/gpu_check.sh{' --dry-run' if dry else ''}`: {total or '?'} s.", ""]
    speed, targets, slow = section_speed(out, steps)
    for block in (
        section_steps(out, steps, env_info),
        speed,
        targets,
        slow,
        section_graph(out, steps),
        section_sync(out, steps),
        section_full(out, steps),
        section_pack(out, steps),
        section_equivalence(out, steps),
    ):
        lines += [*block, ""]
    text = "\n".join(lines).rstrip() + "\n"
    Path(args.md or out / "gpu-check.md").write_text(text)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("env", help="versions, device and the data set's load time")
    e.add_argument("--data", required=True)
    e.add_argument("--data-dir", default="./data")
    e.add_argument("--json", required=True)
    e.add_argument("--dry-run", action="store_true")
    t = sub.add_parser("tiny-folder", help="digits as a JPEG image-folder tarball")
    t.add_argument("dest")
    r = sub.add_parser("report", help="the Markdown report of a check's output folder")
    r.add_argument("out")
    r.add_argument("--md", default=None, help="default OUT/gpu-check.md")
    args = p.parse_args(argv)
    return {"env": env, "tiny-folder": tiny_folder, "report": report}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
