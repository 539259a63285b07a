"""resnet.data on real files: digits, image folders written with PIL, CIFAR pickles."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import CIFAR10, CIFAR100, ImageFolder

from resnet import data, folder
from resnet.data import (
    DataError,
    ImageSplits,
    StreamingSplits,
    dataset_info,
    ensure_available,
    load_dataset,
)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


def rows(x: torch.Tensor) -> Counter:
    return Counter(bytes(r) for r in x.reshape(len(x), -1).numpy())


def write_folder(
    root: Path,
    splits: dict[str, int],
    classes=("cat", "ant", "bee"),
    size=8,
    fmt="png",
    halves: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None,
) -> None:
    """root/<split>/<class>/<i>.<fmt>: `splits[split]` RGB images per class, random
    pixels unless `halves` gives the colors of the left and right halves."""
    rng = np.random.default_rng(0)
    for split, n in splits.items():
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                if halves is not None:
                    img[:, : size // 2], img[:, size // 2 :] = halves
                Image.fromarray(img).save(root / split / c / f"{i:03d}.{fmt}")


@pytest.fixture(autouse=True)
def _no_cache_env(monkeypatch):
    monkeypatch.delenv("ABLATE_CACHE_DIR", raising=False)


# --- digits ----------------------------------------------------------------------------


def test_digits_shapes_and_fixed_split():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert isinstance(a, ImageSplits) and a.num_classes == 10
    assert a.train_x.shape == (1350, 3, 32, 32) and a.val_x.shape == (150, 3, 32, 32)
    assert a.test_x.shape == (297, 3, 32, 32)
    for x in (a.train_x, a.val_x, a.test_x):
        assert x.dtype == torch.uint8 and x.is_contiguous()
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    assert a.train_y.dtype == torch.int64 and set(a.test_y.tolist()) == set(range(10))
    assert int(a.train_x.max()) > 200  # 0..16 was scaled to 0..255
    for f in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert a.val_digest == b.val_digest
    mean = (a.train_x.double() / 255).mean((0, 2, 3))
    assert a.mean == pytest.approx(mean.tolist())


def test_validation_split_is_deterministic_disjoint_and_covering():
    full = load_dataset("digits", val_size=0)
    assert full.val_x.shape == (0, 3, 32, 32) and len(full.train_y) == 1500
    s0, s0b, s1 = (load_dataset("digits", split_seed=s) for s in (0, 0, 1))
    assert s0.val_digest == s0b.val_digest and torch.equal(s0.val_x, s0b.val_x)
    assert s0.val_digest != s1.val_digest
    # train + val is exactly the full training set, as multisets of images
    assert rows(s0.train_x) + rows(s0.val_x) == rows(full.train_x)
    assert torch.equal(full.test_x, s0.test_x)  # the test set never moves


@pytest.mark.parametrize("val_size", [-1, 1500, 2000])
def test_bad_val_size(val_size):
    with pytest.raises(DataError) as e:
        load_dataset("digits", val_size=val_size)
    assert "[0, 1500)" in one_line(e)


def test_unknown_dataset():
    for call in (load_dataset, dataset_info):
        with pytest.raises(DataError) as e:
            call("mnist")
        msg = one_line(e)
        assert "mnist" in msg and all(d in msg for d in data.DATASETS)


# --- CIFAR -----------------------------------------------------------------------------


def write_cifar(root: Path, cls, monkeypatch, n_per_file: int = 6) -> dict[str, np.ndarray]:
    """Official pickle layout (rows of 3072 = R, G, B planes of 32x32). torchvision checks
    each file against the official md5s, which tiny files cannot match: the checksum
    tables are swapped for the written files' md5s; the reader itself runs for real."""
    rng = np.random.default_rng(0)
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    label_key = "labels" if cls is CIFAR10 else "fine_labels"
    k = 10 if cls is CIFAR10 else 100
    written = {}

    def dump(name: str, obj) -> list[str]:
        (folder / name).write_bytes(pickle.dumps(obj))
        return [name, hashlib.md5((folder / name).read_bytes()).hexdigest()]

    def batch(name: str) -> list[str]:
        x = rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8)
        written[name] = x
        return dump(name, {"data": x, label_key: rng.integers(0, k, n_per_file).tolist()})

    train = [batch(name) for name, _ in cls.train_list]
    test = [batch(name) for name, _ in cls.test_list]
    meta = dump(cls.meta["filename"], {cls.meta["key"]: [f"c{i}" for i in range(k)]})
    monkeypatch.setattr(cls, "train_list", train)
    monkeypatch.setattr(cls, "test_list", test)
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": meta[1]})
    return written


@pytest.mark.parametrize("cls", [CIFAR10, CIFAR100])
def test_cifar_reads_official_format(tmp_path, monkeypatch, cls):
    name = "cifar10" if cls is CIFAR10 else "cifar100"
    written = write_cifar(tmp_path, cls, monkeypatch)
    s = load_dataset(name, tmp_path, val_size=0)
    train = np.concatenate([written[n] for n, _ in cls.train_list])
    assert torch.equal(s.train_x, torch.from_numpy(train).view(-1, 3, 32, 32))
    test = np.concatenate([written[n] for n, _ in cls.test_list])
    assert torch.equal(s.test_x, torch.from_numpy(test).view(-1, 3, 32, 32))
    assert s.num_classes == (10 if cls is CIFAR10 else 100)
    split = load_dataset(name, tmp_path, val_size=3)
    assert len(split.val_y) == 3 and len(split.train_y) == len(train) - 3
    assert dataset_info(name).num_classes == s.num_classes


def test_cifar_file_lists_are_torchvisions():
    """Presence is checked without importing torchvision (a CLI that answers at once);
    the file lists it checks are torchvision's own."""
    for name, cls in (("cifar10", CIFAR10), ("cifar100", CIFAR100)):
        folder, train, test = data._CIFAR_FILES[name]
        assert folder == cls.base_folder
        assert list(train) == [f for f, _ in cls.train_list]
        assert list(test) == [f for f, _ in cls.test_list]


def test_cifar_default_validation_size_is_5000(tmp_path, monkeypatch):
    write_cifar(tmp_path, CIFAR10, monkeypatch)  # 30 training images < 5000
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path)
    assert "val_size=5000" in one_line(e)


def test_cifar_missing_and_offline(tmp_path, monkeypatch):
    # A closed local port as proxy: the download fails for real, fast, and never
    # fetches 170 MB on a machine that is online.
    for var in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    empty = tmp_path / "data"
    assert dataset_info("cifar10", empty).present is False
    with pytest.raises(DataError) as e:
        ensure_available("cifar10", empty)  # tries the download, which fails here
    msg = one_line(e)
    assert str(empty) in msg and "cifar-10-batches-py" in msg and "could not be downloaded" in msg
    assert "imagefolder:<path>" in msg and "digits" in msg
    assert e.value.__suppress_context__  # raised `from None`: no chained traceback
    # Loading never downloads (a study's trials must not each fetch their own copy).
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", empty)
    assert "not found" in one_line(e) and "downloaded" not in one_line(e).split(";")[0]


@pytest.fixture(autouse=True)
def _fresh_urllib_opener():
    """torchvision's download installs urllib's global opener with the proxy of the
    moment; left behind, it would route later tests' localhost requests to a dead port."""
    yield
    urllib.request.install_opener(None)


# --- image folders ---------------------------------------------------------------------


def test_imagefolder_small_decodes_like_imagefolder_and_caches(tmp_path, monkeypatch):
    root, data_dir = tmp_path / "imgs", tmp_path / "data"
    write_folder(root, {"train": 5, "test": 2})
    # one BMP: a format torchvision.io cannot decode, read through PIL
    Image.new("RGB", (8, 8), (1, 2, 3)).save(root / "train" / "bee" / "999.bmp")
    s = load_dataset(f"imagefolder:{root}", data_dir, val_size=0)
    ref = ImageFolder(str(root / "train"))
    assert s.num_classes == 3 and s.train_y.tolist() == ref.targets
    expect = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im, _ in ref])
    assert torch.equal(s.train_x, expect)
    assert s.test_x.shape == (6, 3, 8, 8) and s.test_y.tolist() == [0, 0, 1, 1, 2, 2]
    caches = list((data_dir / ".ablate-cache").glob("*.pt"))
    assert len(caches) == 1

    # Second load: same content, read from the cache, nothing decoded.
    def no_decode(*a, **k):
        raise AssertionError("decoded again despite the cache")

    with monkeypatch.context() as m:
        m.setattr(folder, "_decode_all", no_decode)
        again = load_dataset(f"imagefolder:{root}", data_dir, val_size=0)
    assert torch.equal(again.train_x, s.train_x) and torch.equal(again.test_y, s.test_y)

    # Change one file's pixels only: same path, same size (BMP), same mtime. The key
    # hashes content, so the folder is re-decoded.
    bmp = root / "train" / "bee" / "999.bmp"
    before = bmp.stat()
    Image.new("RGB", (8, 8), (7, 8, 9)).save(bmp)
    os.utime(bmp, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert bmp.stat().st_size == before.st_size
    changed = load_dataset(f"imagefolder:{root}", data_dir, val_size=0)
    i = [Path(p).name for p, _ in ref.samples].index("999.bmp")
    assert changed.train_x[i].flatten(1).T.tolist() == [[7, 8, 9]] * 64
    assert torch.equal(changed.train_x[:i], s.train_x[:i])
    assert len(list((data_dir / ".ablate-cache").glob("*.pt"))) == 2


def test_imagefolder_jpeg_val_folder_and_cache_env(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    write_folder(root, {"train": 10, "val": 1}, fmt="jpg", size=16)
    monkeypatch.setenv("ABLATE_CACHE_DIR", str(tmp_path / "cache"))
    s = load_dataset(f"imagefolder:{root}", tmp_path / "data")
    assert len(s.train_y) == 27 and len(s.val_y) == 3  # 10% of 30 for validation
    assert s.test_x.shape == (3, 3, 16, 16)  # val/ serves as the test set without test/
    ref = ImageFolder(str(root / "val"))
    expect = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im, _ in ref])
    assert (s.test_x.int() - expect.int()).abs().max() <= 2  # libjpeg vs PIL rounding
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    assert not (tmp_path / "data").exists()
    info = dataset_info(f"imagefolder:{root}")
    assert dataclasses.asdict(info) == {
        "num_classes": 3,
        "image_size": 16,
        "in_channels": 3,
        "train_images": 3 * 10,
        "present": True,
        "location": str(root),
    }


def test_imagefolder_layout_errors(tmp_path):
    missing = tmp_path / "nope"
    cases = {missing: "does not exist"}
    (tmp_path / "no_train" / "test" / "a").mkdir(parents=True)
    cases[tmp_path / "no_train"] = "no train/"
    write_folder(tmp_path / "no_test", {"train": 1})
    cases[tmp_path / "no_test"] = "neither test/ nor val/"
    (tmp_path / "no_classes" / "train").mkdir(parents=True)
    (tmp_path / "no_classes" / "test").mkdir()
    cases[tmp_path / "no_classes"] = "class folder"
    write_folder(tmp_path / "extra", {"train": 1})
    write_folder(tmp_path / "extra", {"test": 1}, classes=("cat", "dog"))
    cases[tmp_path / "extra"] = "not in train/: dog"
    write_folder(tmp_path / "broken", {"train": 1, "test": 1})
    (tmp_path / "broken" / "train" / "ant" / "000.png").write_bytes(b"not an image")
    cases[tmp_path / "broken"] = "cannot read"
    for path, words in cases.items():
        for call in (load_dataset, dataset_info):
            with pytest.raises(DataError) as e:
                call(f"imagefolder:{path}")
            msg = one_line(e)
            assert str(path) in msg and words in msg
    with pytest.raises(DataError) as e:
        load_dataset("imagefolder:")
    assert "needs a path" in one_line(e)


def test_imagefolder_mixed_sizes_error(tmp_path):
    root = tmp_path / "imgs"
    write_folder(root, {"train": 2, "test": 1})
    Image.new("RGB", (10, 8)).save(root / "train" / "cat" / "010.png")
    with pytest.raises(DataError) as e:
        load_dataset(f"imagefolder:{root}", tmp_path)
    assert "010.png" in one_line(e) and "one size" in str(e.value)


def test_large_images_stream(tmp_path):
    root = tmp_path / "big"
    colors = ((255, 0, 128), (0, 255, 128))
    write_folder(root, {"train": 4, "test": 1}, ("a", "b"), size=72, halves=colors)
    s = load_dataset(f"imagefolder:{root}", tmp_path, val_size=2)
    assert isinstance(s, StreamingSplits) and s.num_classes == 2
    assert len(s.train_samples) == 6 and len(s.val_samples) == 2 and len(s.test_samples) == 2
    assert all((s.root / p).is_file() for p, _ in s.train_samples + s.val_samples)
    # a center crop of a symmetric two-color image: mean and std follow from the colors
    assert s.mean == pytest.approx((0.5, 0.5, 128 / 255), abs=0.01)
    assert s.std == pytest.approx((0.5, 0.5, 1 / 255), abs=0.03)  # 1/255: the std floor
    assert dataset_info(f"imagefolder:{root}").image_size == 224
