"""Would decoding fewer pixels beat the decoder? CPU time of one large JPEG's full decode
(Pillow, torchvision) against libjpeg's DCT scaling to the half size (Pillow's `draft`
mode), and how far the scaled decode moves the evaluation crop (shorter side 256, centre
224) from the full decode's.

    python benchmarks/jpeg_scaling.py [--images 48] [--size 1000 750] [--quality 90]

One thread, the median of `--passes` passes over the images (written as input_bench.py
writes them, into a temporary folder). The answer is in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.io import decode_jpeg

sys.path.insert(0, str(Path(__file__).parent))
from input_bench import write_folder  # noqa: E402

EVAL_SHORT, EVAL_CROP = 256, 224


def full(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def scaled(data: bytes) -> Image.Image:
    """Decoded at the smallest DCT scale whose shorter side still covers EVAL_SHORT."""
    image = Image.open(io.BytesIO(data))
    w, h = image.size
    image.draft("RGB", (w * EVAL_SHORT // min(w, h), h * EVAL_SHORT // min(w, h)))
    return image.convert("RGB")


def torchvision_full(data: bytes) -> torch.Tensor:
    return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))


def eval_crop(image: Image.Image) -> np.ndarray:
    return np.asarray(F.center_crop(F.resize(image, EVAL_SHORT), EVAL_CROP)).astype(np.int16)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--size", type=int, nargs=2, default=(1000, 750))
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--passes", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        write_folder(Path(tmp), args.images, tuple(args.size), args.quality)
        files = sorted((Path(tmp) / "train").rglob("*.jpg"))
        datas = [f.read_bytes() for f in files]
    print(f"{len(datas)} JPEGs {args.size[0]}x{args.size[1]} q{args.quality}, one thread")
    for name, decode in (("Pillow, full", full), ("Pillow, DCT-scaled", scaled)) + (
        ("torchvision, full", torchvision_full),
    ):
        ms = []
        for _ in range(args.passes):
            start = time.process_time()
            for data in datas:
                decode(data)
            ms.append((time.process_time() - start) / len(datas) * 1e3)
        print(
            f"  {name}: {statistics.median(ms):.2f} ms CPU an image (passes: "
            + ", ".join(f"{m:.2f}" for m in ms)
            + ")"
        )
    print(f"  DCT-scaled size: {scaled(datas[0]).size[0]}x{scaled(datas[0]).size[1]}")
    diff = np.concatenate(
        [np.abs(eval_crop(full(d)) - eval_crop(scaled(d))).ravel() for d in datas]
    )
    print(
        f"  evaluation crop, scaled vs full decode: mean |difference| {diff.mean():.2f} levels,"
        f" 99th percentile {np.percentile(diff, 99):.0f}, max {diff.max()}"
    )


if __name__ == "__main__":
    main()
