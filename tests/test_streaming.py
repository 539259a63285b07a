"""resnet.streaming on real files: image folders of "large" images (over 64 px, so they
stream) written with PIL, against torchvision's PIL transforms, on CPU."""

from __future__ import annotations

import dataclasses
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.transforms.v2 import functional as TF

from resnet import streaming
from resnet.data import DataError, StreamingSplits, channel_stats, load_dataset
from resnet.streaming import StreamingBatches, streaming_eval

CPU = torch.device("cpu")
# torchvision.io's decoders warn that TorchCodec will replace them, on every call.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def picture(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Smooth random shapes plus fine noise: edges and texture for the resampling to show."""
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    img = np.asarray(coarse.resize((w, h), Image.BICUBIC)).astype(np.int16)
    img = img + rng.integers(-12, 13, (h, w, 3))
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def write_pictures(root: Path, n: dict[str, int], classes=("a", "b"), sizes=((96, 72),)):
    """root/<split>/<class>/<i>.jpg, JPEG quality 90, sizes taken in turn."""
    rng = np.random.default_rng(0)
    for split, count in n.items():
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(count):
                w, h = sizes[i % len(sizes)]
                picture(rng, w, h).save(root / split / c / f"{i:03d}.jpg", quality=90)


def levels(x: torch.Tensor, s: StreamingSplits) -> torch.Tensor:
    """Normalized batches back to 0..255 levels (float)."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (s.mean, s.std))
    return (x * std + mean) * 255


def pil_eval(path: Path) -> torch.Tensor:
    """Evaluation as it was made with PIL: Resize(256) + CenterCrop(224) on the RGB image."""
    with Image.open(path) as im:
        return TF.pil_to_tensor(TF.center_crop(TF.resize(im.convert("RGB"), 256), 224))


def batches(sb: StreamingBatches, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [sb.next() for _ in range(n)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> StreamingSplits:
    """22 training images in 2 classes (landscape and portrait), 4 validation, 4 test."""
    root = tmp_path_factory.mktemp("big")
    write_pictures(root, {"train": 13, "test": 2}, sizes=((96, 72), (72, 100), (80, 80)))
    return load_dataset(f"imagefolder:{root}", root, val_size=4)


def test_evaluation_crop_is_the_pil_paths(tmp_path):
    """Shorter side 256 then the centre 224, as torchvision's Resize + CenterCrop on PIL
    images made it, for JPEG (colour, gray, CMYK), PNG (palette, alpha) and BMP.

    Tolerance: at most 2 levels a pixel, and 0.05 on average. Pillow and torchvision both
    decode JPEGs with libjpeg-turbo, and here the decoded pixels agree exactly; resizing
    differs in rounding only (Pillow's fixed-point resampler against torch's antialiased
    bilinear on uint8, built to match it): 1 level at most, measured. The second level
    leaves room for another libjpeg-turbo build. A crop shifted by one pixel, or a resize
    without antialiasing, misses by tens of levels on these textured images.
    """
    root = tmp_path / "mixed"
    write_pictures(root, {"train": 2, "test": 3}, ("x", "y"), ((300, 200), (150, 330), (600, 450)))
    rng = np.random.default_rng(1)
    extra = {
        "g.jpg": picture(rng, 120, 90).convert("L"),
        "k.jpg": picture(rng, 90, 120).convert("CMYK"),
        "p.png": picture(rng, 100, 80).convert("P"),
        "q.png": picture(rng, 80, 100).convert("RGBA"),
        "r.bmp": picture(rng, 77, 99),  # a format torchvision.io cannot read: PIL's
    }
    for name, im in extra.items():
        im.save(root / "test" / "y" / name)
    s = load_dataset(f"imagefolder:{root}", root, val_size=0)
    ref = ImageFolder(str(root / "test"))
    got = list(streaming_eval(s, "test", CPU, batch_size=4))
    assert [len(y) for _, y in got] == [4, 4, 3]
    x, y = torch.cat([b for b, _ in got]), torch.cat([b for _, b in got])
    assert y.tolist() == ref.targets and y.dtype == torch.int64
    assert x.shape == (11, 3, 224, 224) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    expect = torch.stack([pil_eval(Path(p)) for p, _ in ref.samples]).double()
    diff = (levels(x, s).double() - expect).abs()
    assert diff.max() <= 2 + 1e-3 and diff.mean() < 0.05
    one = next(streaming_eval(s, "test", CPU, limit=3))  # the layer-response probe
    assert torch.equal(one[0], x[:3]) and torch.equal(one[1], y[:3])
    with pytest.raises(DataError):
        next(streaming_eval(s, "holdout", CPU))


def test_statistics_come_from_the_evaluation_crops(folder):
    """Mean/std of a streamed folder: the training images (all 22: fewer than the sample)
    as evaluation crops them, through the same decoder."""
    x = torch.cat([b for b, _ in streaming_eval(folder, "train", CPU)])
    mean, std = channel_stats(levels(x, folder).round().to(torch.uint8))
    assert folder.mean == pytest.approx(mean, abs=1e-9)
    assert folder.std == pytest.approx(std, abs=1e-9)


def test_training_crop_is_resize_then_crop_then_flip():
    """A crop (size, top and left as fractions of the free range, flip) is torchvision's
    Resize(size) + crop + horizontal flip, and the fractions reach both edges."""
    img = torch.randint(0, 256, (3, 90, 120), dtype=torch.uint8)
    for size, u, v, flip in (
        (256, 0.0, 0.0, False),
        (480, 0.9999, 0.9999, True),
        (300, 0.5, 0.3, True),
    ):
        resized = TF.resize(img, size, antialias=True)
        h, w = resized.shape[-2:]
        top, left = int(u * (h - 223)), int(v * (w - 223))
        expect = TF.crop(resized, top, left, 224, 224)
        expect = TF.horizontal_flip(expect) if flip else expect
        assert torch.equal(streaming._crop(img, size, (u, v, flip)), expect)
    assert streaming._crop(img, 480, (0.9999, 0.9999, False)).shape == (3, 224, 224)
    assert int(0.9999 * (480 - 223)) == 480 - 224  # the bottom edge: the last free row


def test_training_batches(folder, tmp_path):
    """Shapes, dtype, layout, normalization, label pairing, the epoch's order, and the
    distribution of the crops the paper's recipe asks for."""
    solid = tmp_path / "solid"
    for c, color in (("a", (250, 20, 20)), ("b", (20, 20, 250))):
        for split, n in (("train", 5), ("test", 1)):
            (solid / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (90 + i, 70), color).save(solid / split / c / f"{i}.jpg")
    s = load_dataset(f"imagefolder:{solid}", solid, val_size=0)
    for x, y in batches(StreamingBatches(s, 4, 0, CPU), 5):  # 2 batches a pass
        assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32
        assert x.is_contiguous(memory_format=torch.channels_last) and y.dtype == torch.int64
        pixels = levels(x, s)
        assert torch.equal(pixels[:, 0].mean((1, 2)) > 128, y == 0)  # images keep labels
        assert (pixels - pixels.mean((2, 3), keepdim=True)).abs().max() < 3  # one color
        assert (pixels[:, 1] - 20).abs().max() < 4  # normalized with the folder's mean/std

    # The order of epoch e is randperm(seed * 1_000_003 + e), as the DataLoader drew it.
    sb = StreamingBatches(folder, 4, 0, CPU)
    _, y = sb.next()
    perm = torch.randperm(22, generator=torch.Generator().manual_seed(0)).tolist()
    assert y.tolist() == [folder.train_samples[i][1] for i in perm[:4]]
    assert sb._ahead[1][0] == [folder.train_samples[i] for i in perm[4:8]]  # read ahead
    sb.load_state_dict({"epoch": 1, "pos": 0})
    sb.next()
    perm = torch.randperm(22, generator=torch.Generator().manual_seed(1)).tolist()
    assert sb._ahead[1][0] == [folder.train_samples[i] for i in perm[4:8]]

    # The crops of a 4000-image epoch (one file, listed 4000 times).
    many = dataclasses.replace(folder, train_samples=folder.train_samples[:1] * 4000)
    sb = StreamingBatches(many, 2, 5, CPU)
    sb.next()
    _, _, sizes, at, flips = sb._draws
    assert sizes.min() == 256 and sizes.max() == 480 and len(sizes.unique()) == 225
    assert 0.47 < flips.double().mean() < 0.53 and 0.48 < at.mean() < 0.52
    assert at.min() >= 0 and at.max() < 1


def test_resume_is_exact_and_threads_do_not_matter(folder, tmp_path):
    a = StreamingBatches(folder, 4, 3, CPU, threads=2)  # 5 batches a pass
    batches(a, 3)
    torch.save(a.state_dict(), tmp_path / "state.pt")
    expect = batches(a, 4)  # across the end of the pass
    b = StreamingBatches(folder, 4, 3, CPU, threads=1)
    b.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    for (ex, ey), (gx, gy) in zip(expect, batches(b, 4), strict=True):
        assert torch.equal(ex, gx) and torch.equal(ey, gy)
    c = StreamingBatches(folder, 4, 3, CPU)
    c.load_state_dict({"epoch": 0, "pos": 5})  # the end of a pass is the next one's start
    assert torch.equal(c.next()[0], expect[2][0])
    other = StreamingBatches(folder, 4, 4, CPU)  # another seed: other batches
    assert not torch.equal(other.next()[0], StreamingBatches(folder, 4, 3, CPU).next()[0])


@pytest.mark.parametrize("replicas", [1, 2, 4])
def test_replica_shards_concatenate_to_the_global_batch(folder, replicas):
    """Each rank's part, put together, is the one-replica batch bit for bit, also after a
    resume taken mid-pass and across the end of a pass; each rank reads only its files."""
    expect = batches(StreamingBatches(folder, 8, 1, CPU), 4)  # 2 batches a pass
    parts = []
    for rank in range(replicas):
        sb = StreamingBatches(folder, 8, 1, CPU, rank=rank, replicas=replicas)
        first = sb.next()
        resumed = StreamingBatches(folder, 8, 1, CPU, rank=rank, replicas=replicas)
        resumed.load_state_dict(sb.state_dict())
        parts.append([first, *batches(resumed, 3)])
        assert first[0].shape == (8 // replicas, 3, 224, 224)
        assert len(resumed._ahead[1][0]) == 8 // replicas  # the batch read ahead: its part
    for step, (ex, ey) in enumerate(expect):
        assert torch.equal(torch.cat([p[step][0] for p in parts]), ex)
        assert torch.equal(torch.cat([p[step][1] for p in parts]), ey)
    with pytest.raises(DataError) as e:
        StreamingBatches(folder, 6, 1, CPU, rank=0, replicas=4)
    assert "replicas=4" in str(e.value)


def test_training_wires_the_replica_shard(folder):
    from resnet.config import TrainConfig
    from resnet.train import _data_on_device

    cfg = TrainConfig(dataset=f"imagefolder:{folder.root}", batch_size=8, seed=1)
    whole, whole_eval, probe = _data_on_device(cfg, folder, CPU)
    part = _data_on_device(cfg, folder, CPU, rank=1, replicas=4)[0]
    assert isinstance(part, StreamingBatches) and probe.shape == (4, 3, 224, 224)
    (wx, wy), (px, py) = whole.next(), part.next()
    assert torch.equal(px, wx[2:4]) and torch.equal(py, wy[2:4])
    # Evaluation: each of 4 replicas reads its contiguous share of val and test; put
    # together they are the one-replica splits.
    shares = [_data_on_device(cfg, folder, CPU, rank=r, replicas=4)[1]() for r in range(4)]
    for split, expect in enumerate(whole_eval()):
        ex, ey = (torch.cat(t) for t in zip(*expect, strict=True))
        got = [b for share in shares for b in share[split]]
        assert torch.equal(torch.cat([x for x, _ in got]), ex)
        assert torch.equal(torch.cat([y for _, y in got]), ey)
        assert len(ey) == (4 if split == 0 else len(folder.test_samples))


def test_the_cuda_branch_run_on_the_cpu(tmp_path):
    """The CUDA branch (one decode_jpeg call a batch, then the crops where it decoded) gives
    the batches the threads give; a PNG in a batch fails the call, and the threads decode
    that batch instead."""
    root = tmp_path / "mixed"
    write_pictures(root, {"train": 4, "test": 1})
    Image.open(root / "train" / "a" / "000.jpg").save(root / "train" / "b" / "png.png")
    s = load_dataset(f"imagefolder:{root}", root, val_size=0)
    threads, cuda = StreamingBatches(s, 3, 2, CPU), StreamingBatches(s, 3, 2, CPU)
    cuda._reader.gpu = True
    for (ex, ey), (gx, gy) in zip(batches(threads, 6), batches(cuda, 6), strict=True):
        assert torch.equal(ex, gx) and torch.equal(ey, gy)


def _eval_images(s: StreamingSplits, child: bool = False) -> int:
    if child:  # as a DataLoader worker: the parent's OpenMP threads are not in the child
        torch.set_num_threads(1)
    return sum(len(y) for _, y in streaming_eval(s, "test", CPU))


def test_a_forked_child_reads_with_threads_of_its_own(folder):
    """A child forked after the parent read (a DataLoader worker, say) has none of the
    parent's reading threads: it must start its own, not wait on the dead ones forever."""
    assert _eval_images(folder) == 4
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_eval_images, (folder, True)).get(timeout=60) == 4


@pytest.mark.parametrize(
    "spoil, words",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:400]), "cannot decode"),  # truncated
        (lambda p: p.write_bytes(b"\xff\xd8 not a jpeg"), "cannot decode"),
        (lambda p: p.write_bytes(b""), "cannot decode"),
        (lambda p: p.unlink(), "cannot read"),  # gone since the folder was scanned
    ],
)
def test_unreadable_files_are_one_line_errors_naming_them(tmp_path, spoil, words):
    root = tmp_path / "bad"
    write_pictures(root, {"train": 5, "test": 2})
    s = load_dataset(f"imagefolder:{root}", root, val_size=0)
    spoil(root / "test" / "b" / "000.jpg")
    with pytest.raises(DataError) as e:
        list(streaming_eval(s, "test", CPU, batch_size=3))
    msg = str(e.value)
    assert f"imagefolder:{root}: {words} test/b/000.jpg" in msg and "\n" not in msg
    spoil(root / "train" / "a" / "003.jpg")
    with pytest.raises(DataError) as e:
        StreamingBatches(s, 10, 0, CPU).next()  # the whole pass in one batch
    assert f"{words} train/a/003.jpg" in str(e.value) and "\n" not in str(e.value)
    if words == "cannot decode":  # the statistics read every training image here
        with pytest.raises(DataError) as e:
            load_dataset(f"imagefolder:{root}", root, val_size=0)
        assert f"{words} train/a/003.jpg" in str(e.value)
