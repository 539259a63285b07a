"""How fast the streamed image-folder pipeline makes ImageNet batches: images/s of training
batches (the paper's augmentation, 224 crops, normalized) and of evaluation batches
(shorter side 256, centre 224), resnet.streaming against the PIL DataLoader it replaced,
at the same core count.

    python benchmarks/input_bench.py [--cores 2] [--folder PATH] [--images 384]

Without --folder it writes `--images` JPEGs of `--size` (default 1000x750, `--quality` 90,
photograph-like content: a 1/f spectrum, as natural images have) with PIL into a temporary
folder and deletes it afterwards. With --folder it reads an image folder (`train/<class>/*`
and `test/` or `val/`). Both pipelines run in this process restricted to `--cores` cores:
the DataLoader with that many worker processes, resnet.streaming with that many threads.
Each measurement runs `--runs` times (alternating which pipeline goes first) and the median
is shown; each run times `--batches` batches after `--warmup` untimed ones (the pipelines
are then steady: the first batch pays the DataLoader's worker start-up, and the threads'
read-ahead fills). Beside images/s it prints the CPU time spent per image in that window
(all threads and worker processes, from /proc): on cores that other work shares, images/s
follows the others' load, while CPU time per image hardly does, so it is the steadier
comparison there. Target: the new pipeline at >= 2x the images/s of the old at equal cores.
`--device cuda` puts the batches on the GPU: the old pipeline copies its workers' batches
there, the new one decodes with nvJPEG and crops there (its threads only read files).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from resnet.data import StreamingSplits, load_dataset
from resnet.streaming import StreamingBatches, streaming_eval

# -- the pipeline resnet.streaming replaced, kept here as the reference --------------------


class _Files(torch.utils.data.Dataset):
    """(path relative to root, label) samples read with PIL, converted to RGB."""

    def __init__(self, root: Path, samples: list[tuple[str, int]], transform) -> None:
        self.root, self.samples, self.transform = root, samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        rel, y = self.samples[i]
        with Image.open(self.root / rel) as im:
            return self.transform(im.convert("RGB")), y


def reference_loader(
    splits: StreamingSplits, samples: list, batch_size: int, seed: int, train: bool, workers: int
) -> torch.utils.data.DataLoader:
    """The PIL DataLoader of the earlier resnet/streaming.py, as it was: per-image PIL
    transforms in worker processes; RandomResize(256, 481) + RandomCrop(224) +
    RandomHorizontalFlip for training, Resize(256) + CenterCrop(224) for evaluation."""
    from torchvision.transforms import v2

    if train:
        geometry = [v2.RandomResize(256, 481), v2.RandomCrop(224), v2.RandomHorizontalFlip()]
    else:
        geometry = [v2.Resize(256), v2.CenterCrop(224)]
    transform = v2.Compose(
        [
            *geometry,
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(splits.mean), list(splits.std)),
        ]
    )
    g = torch.Generator().manual_seed(seed * 1_000_003)
    order = torch.randperm(len(samples), generator=g).tolist() if train else None
    return torch.utils.data.DataLoader(
        _Files(splits.root, samples, transform),
        batch_size=batch_size,
        sampler=order,
        drop_last=train,
        num_workers=workers,
        generator=g,
        pin_memory=torch.cuda.is_available(),
    )


# -- the images -----------------------------------------------------------------------------


def photographs(rng: np.random.Generator, w: int, h: int, n: int, fields: int = 6):
    """`n` stand-ins for photographs: per channel a random field with a 1/f amplitude
    spectrum (the spectrum of natural images), channels correlated, plus sensor noise.
    A few fields are drawn and each image is one of them shifted (they are periodic) with
    its own colors and noise: the same statistics, at a fraction of the cost."""
    f = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :])
    f[0, 0] = 1.0

    def field() -> np.ndarray:
        x = np.fft.irfft2(np.exp(2j * np.pi * rng.random(f.shape)) / f, s=(h, w))
        return ((x - x.mean()) / x.std()).astype(np.float32)

    drawn = [np.stack([field(), field(), field()], axis=-1) for _ in range(fields)]
    for i in range(n):
        shift = (int(rng.integers(h)), int(rng.integers(w)))
        light, a, b = np.moveaxis(np.roll(drawn[i % fields], shift, axis=(0, 1)), -1, 0)
        mix = rng.uniform(0.1, 0.5, 3).astype(np.float32)
        rgb = np.stack([light + mix[0] * a, light - mix[1] * a + mix[2] * b, light - b * mix[0]])
        rgb = rng.uniform(90, 150) + rng.uniform(30, 55) * rgb.transpose(1, 2, 0)
        rgb += rng.normal(0, 2, rgb.shape).astype(np.float32)
        yield Image.fromarray(rgb.clip(0, 255).astype(np.uint8))


def write_folder(root: Path, n: int, size: tuple[int, int], quality: int, classes: int = 4) -> None:
    """root/train/<class>/*.jpg (n images) and root/val/<class>/*.jpg (one per class)."""
    images = photographs(np.random.default_rng(0), *size, n + classes)
    for split, count in (("train", n), ("val", classes)):
        for i in range(count):
            folder = root / split / f"c{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            next(images).save(folder / f"{i:05d}.jpg", quality=quality)


# -- timing ---------------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) so far of this process's threads and of the processes
    `pids` (the DataLoader's workers), read from /proc."""
    ticks = 0
    for pid in ("self", *pids):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def rate(batches, pids: list[int], warmup: int, count: int, device) -> tuple[float, float]:
    """Images/s of `count` batches taken after `warmup` untimed ones (on CUDA until the
    device has them), and the CPU milliseconds spent per image meanwhile (all threads and
    worker processes)."""
    for _ in range(warmup):
        next(batches)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, cpu, images = time.perf_counter(), cpu_seconds(pids), 0
    for _ in range(count):
        images += len(next(batches)[1])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    cpu = cpu_seconds(pids) - cpu
    return images / (time.perf_counter() - start), 1000 * cpu / images


def reference_batches(splits, args, train: bool, pids: list[int]):
    """The earlier StreamingBatches' per-batch work: the loader's batch to the device, in
    channels_last."""
    loader = reference_loader(splits, splits.train_samples, args.batch_size, 0, train, args.cores)
    batches = iter(loader)
    pids.extend(w.pid for w in batches._workers)
    for x, y in batches:
        x = x.to(args.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        yield x, y.to(args.device, non_blocking=True)


def new_batches(splits, args, train: bool, pids: list[int]):
    if not train:
        yield from streaming_eval(
            splits, "train", args.device, batch_size=args.batch_size, threads=args.cores
        )
        return
    batches = StreamingBatches(splits, args.batch_size, 0, args.device, threads=args.cores)
    while True:
        yield batches.next()


def measure(splits: StreamingSplits, args) -> dict[str, list[tuple[float, float]]]:
    runs: dict[str, list[tuple[float, float]]] = {}
    for kind in ("train", "eval"):
        for r in range(args.runs):
            pair = [("reference", reference_batches), ("streaming", new_batches)]
            for name, make in pair if r % 2 == 0 else pair[::-1]:
                pids: list[int] = []
                batches = make(splits, args, kind == "train", pids)
                speed, cpu = rate(batches, pids, args.warmup, args.batches, args.device)
                batches.close()
                runs.setdefault(f"{kind} {name}", []).append((speed, cpu))
                print(f"  {kind} run {r + 1}: {name} {speed:.1f} images/s, {cpu:.2f} CPU ms/image")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", type=int, default=2, help="cores; DataLoader workers; threads")
    parser.add_argument("--folder", type=Path, help="an image folder to read instead")
    parser.add_argument("--images", type=int, default=384, help="training images to write")
    parser.add_argument("--size", default="1000x750", help="WIDTHxHEIGHT of the images written")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of those")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: nvJPEG and the GPU")
    args = parser.parse_args()
    args.device = torch.device(args.device)
    if args.warmup % args.cores or args.batches % args.cores:
        # The workers finish their batches together: a window must take whole rounds.
        sys.exit("--warmup and --batches must be multiples of --cores")
    warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
    available = sorted(os.sched_getaffinity(0))
    if args.cores > len(available):
        sys.exit(f"--cores {args.cores}: this process may use {len(available)}")
    os.sched_setaffinity(0, available[: args.cores])  # the DataLoader's workers inherit it
    torch.set_num_threads(args.cores)
    with tempfile.TemporaryDirectory(prefix="input-bench-") as tmp:
        root = args.folder
        if root is None:
            root = Path(tmp)
            w, h = (int(v) for v in args.size.split("x"))
            start = time.perf_counter()
            write_folder(root, args.images, (w, h), args.quality)
            took = time.perf_counter() - start
            print(f"wrote {args.images} {w}x{h} JPEGs (quality {args.quality}) in {took:.0f} s")
        splits = load_dataset(f"imagefolder:{root.resolve()}", tmp, val_size=0)
        if not isinstance(splits, StreamingSplits):
            sys.exit(f"{root} holds small images, which are not streamed")
        need = (args.warmup + args.batches) * args.batch_size
        if need > splits.train_size:
            sys.exit(
                f"{need} images needed for --warmup + --batches, {root} has {splits.train_size}"
            )
        sizes = [(root / rel).stat().st_size for rel, _ in splits.train_samples]
        print(f"{splits.train_size} training images, {np.mean(sizes) / 1024:.0f} KiB on average")
        load = os.getloadavg()
        runs = measure(splits, args)
        after = os.getloadavg()
    print(
        f"\n{args.cores} cores (of {os.cpu_count()}), batch {args.batch_size}, "
        f"{args.batches} batches timed after {args.warmup}, median of {args.runs} runs; load "
        f"average {load[0]:.2f} before, {after[0]:.2f} after; torch {torch.__version__}; "
        f"batches on {args.device}"
    )
    print("| batches | pipeline | images/s | CPU ms/image |")
    print("|---|---|--:|--:|")
    for kind, what in (
        ("train", "training (random size, crop, flip)"),
        ("eval", "evaluation (256, centre 224)"),
    ):
        (ref_s, ref_c), (new_s, new_c) = (
            (statistics.median(v) for v in zip(*runs[f"{kind} {n}"], strict=True))
            for n in ("reference", "streaming")
        )
        print(f"| {what} | PIL DataLoader, {args.cores} workers | {ref_s:.0f} | {ref_c:.2f} |")
        print(f"| | resnet.streaming, {args.cores} threads | {new_s:.0f} | {new_c:.2f} |")
        print(f"| | ratio | **{new_s / ref_s:.2f}x** | {ref_c / new_c:.2f}x less |")
        verdict = "met" if new_s >= 2 * ref_s else "not met"
        print(f"{what}: target >= 2x images/s {verdict}", file=sys.stderr)


if __name__ == "__main__":
    main()
