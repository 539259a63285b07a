"""The versions a run records: the code (ablate's commit, a model builder's source) on
every run, and a training process's side of the manifest (docs/tracking.md)."""

from __future__ import annotations

import contextlib
import functools
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ablations.events import Environment
from ablations.tracking import CodeVersion
from resnet.builders import git, load_builder


def package_version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


@functools.lru_cache(maxsize=8)
def code_version(model: str | None = None) -> CodeVersion:
    """ablate's version and commit (none outside a git checkout), and with a model builder
    where its code is (resnet/builders.py)."""
    here = Path(__file__).resolve().parent
    source = load_builder(model).source() if model is not None else None
    commit, dirty = "", False
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = git(here, "rev-parse", "HEAD")
        dirty = bool(git(here, "status", "--porcelain", "--untracked-files=no"))
    return CodeVersion(package_version("ablate"), commit, dirty, source)


def environment(config, data, threads: int) -> Environment:
    """The training process's side of the manifest (docs/tracking.md): versions, device,
    and the data it trains on."""
    import platform

    import torch

    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device).index or 0)
    else:
        name = f"cpu ({threads} thread{'s' if threads != 1 else ''})"
    if config.replicas > 1:
        name = f"{config.replicas} replicas x {name}"
    source = str(Path(config.data_dir))
    if config.dataset.startswith("imagefolder:"):
        source = config.dataset.removeprefix("imagefolder:")
    elif config.dataset == "digits":
        source = "scikit-learn load_digits"
    versions = {
        "ablate": package_version("ablate"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "ray": package_version("ray"),
        "mlflow": package_version("mlflow"),
    }
    return Environment(versions, name, data.digest(), config.dataset, source)
