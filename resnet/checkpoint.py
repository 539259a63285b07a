"""Checkpoints of a training run, kept where the caller chooses (the `Checkpoints`
protocol): `FolderCheckpoints` in a local folder, atomically and with fallback (a crash
mid-write never costs the previous one); the study runner in Ray's storage.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import Protocol

import torch

_NAME = re.compile(r"^ckpt-(\d{9})\.pt$")


class CheckpointError(OSError):
    """A checkpoint could not be written; the message says which one is still intact."""


def checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoint files, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))  # zero-padded


def save(state: dict, directory: str | Path, iteration: int, keep: int = 2) -> Path:
    """Write `state` as checkpoint `iteration`: temporary file in the same directory,
    fsync, rename, fsync the directory. Keeps the newest `keep` checkpoints, so a
    truncated newest file still leaves one to fall back to."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"ckpt-{iteration:09d}.pt"
    tmp = directory / f".{final.name}.tmp-{os.getpid()}"
    # Serialized in memory first: torch.save straight into a file turns a failed write
    # (ENOSPC) into a RuntimeError ("unexpected pos") that hides the OS error.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fd = os.open(directory, os.O_RDONLY)  # the rename made durable
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        older = [p.name for p in checkpoints(directory)]
        intact = f"{older[-1]} is intact" if older else "no earlier checkpoint exists"
        raise CheckpointError(
            f"could not write checkpoint {final} ({err.strerror or err}); {intact}"
        ) from err
    for old in checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def load_latest(directory: str | Path, map_location: str | torch.device = "cpu") -> dict | None:
    """The newest checkpoint that loads, or None. A truncated or corrupt newest file is
    skipped with a warning (and moved aside, so it is not tried again)."""
    for path in reversed(checkpoints(Path(directory))):
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file means: fall back
            warnings.warn(
                f"checkpoint {path} is unreadable ({type(err).__name__}); "
                "falling back to the previous one",
                RuntimeWarning,
                stacklevel=2,
            )
            path.rename(path.with_name(path.name + ".corrupt"))
    return None


class Checkpoints(Protocol):
    def load(self, map_location: str | torch.device) -> dict | None:
        """The newest state that loads, or None to start from scratch."""

    def save(self, state: dict, iteration: int) -> str:
        """Keep `state` (safely: a failure raises CheckpointError); returns where it is."""


class FolderCheckpoints:
    """Checkpoints in one local folder (`ablate train --checkpoint-dir`)."""

    def __init__(self, directory: str | Path, keep: int = 2):
        self.directory, self.keep = Path(directory), keep

    def load(self, map_location: str | torch.device = "cpu") -> dict | None:
        return load_latest(self.directory, map_location)

    def save(self, state: dict, iteration: int) -> str:
        return str(save(state, self.directory, iteration, self.keep))
