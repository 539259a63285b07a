"""What makes a trial reproducible besides its settings: the code version (from the
driver's checkout), the library versions and the device (from the process that trains),
and the data it trained on (a digest of the data set)."""

from __future__ import annotations

import functools
import json
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


@functools.lru_cache(maxsize=8)
def code_version(model: str | None = None) -> dict:
    """{"version", "commit", "dirty"}: the ablate version and, in a git checkout, its
    commit and whether it had uncommitted changes (commit "" outside a checkout); with a
    model builder, also where its code is ("model_source", resnet/builders.py)."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=here, timeout=10, check=True
        ).stdout.strip()

    out = {"version": _version("ablate"), "commit": "", "dirty": False}
    if model is not None:
        from resnet.builders import load_builder

        out["model_source"] = load_builder(model).source()
    try:
        out["commit"] = git("rev-parse", "HEAD")
        out["dirty"] = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def environment(config, data, threads: int) -> dict:
    """The training process's side of the manifest (docs/tracking.md)."""
    import torch

    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        name = torch.cuda.get_device_name(index)
    else:
        name = f"cpu ({threads} thread{'s' if threads != 1 else ''})"
    if config.replicas > 1:
        name = f"{config.replicas} replicas x {name}"
    return {
        "versions": {
            "ablate": _version("ablate"),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda or "none",
            "ray": _version("ray"),
            "mlflow": _version("mlflow"),
        },
        "device": name,
        "data_digest": data.digest(),
        "dataset": config.dataset,
        "data_source": _source(config),
    }


def _source(config) -> str:
    if config.dataset.startswith("imagefolder:"):
        return config.dataset.removeprefix("imagefolder:")
    if config.dataset == "digits":
        return "scikit-learn load_digits"
    return str(Path(config.data_dir))


def code_tags(code: dict, source: str) -> dict[str, str]:
    """The MLflow tags of a code version (docs/tracking.md), as the store writes them."""
    tags = {
        "ablate.version": code["version"],
        "mlflow.source.name": source,
        "mlflow.source.type": "LOCAL",
    }
    if code.get("commit"):
        tags["mlflow.source.git.commit"] = code["commit"]
        tags["ablate.git_dirty"] = "true" if code["dirty"] else "false"
    if code.get("model_source"):
        tags["ablate.model_source"] = json.dumps(code["model_source"], sort_keys=True)
    return tags
