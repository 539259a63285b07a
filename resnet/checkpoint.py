"""Checkpoints of a training run, one folder each: DIR/iteration-000000040/{state.pt,
meta.json}. The meta file is written after the state, so a folder with a readable one is
whole; the newest two are kept, and a run resumes from the newest that loads (one that does
not is skipped with a warning). `train()` takes any object with `load(map_location)` and
`save(state, iteration)` (the `Checkpoints` protocol); `FolderCheckpoints` keeps them on
the local disk (`ablate train --checkpoint-dir`), and the study runner keeps the same
layout in Ray's storage by replacing its four file operations (ablations/checkpoints.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Protocol

import torch

STATE_FILE = "state.pt"
META_FILE = "meta.json"  # {"iteration": N, and what names its owner (trial key, run)}
_FOLDER = re.compile(r"^iteration-(\d{9})$")


class CheckpointLost(RuntimeError):
    """There are checkpoints, but none of them can be read."""


class Checkpoints(Protocol):
    def load(self, map_location: str | torch.device) -> dict | None:
        """The newest state that loads, or None to start from scratch."""

    def save(self, state: dict, iteration: int) -> str:
        """Keep `state` (a failure raises OSError saying the previous one is intact)."""


class FolderCheckpoints:
    """The checkpoints in `folder` whose meta files carry `owner` (e.g. a trial key and
    run), on the local disk; subclasses keep them elsewhere through the file operations."""

    keep = 2  # the newest checkpoint and one to fall back to

    def __init__(self, folder: str | Path, owner: dict | None = None):
        self.folder, self.owner = str(folder), dict(owner or {})

    # -- the file operations --------------------------------------------------------------
    def _folders(self) -> list[str]:
        """The names in the folder (none when it does not exist)."""
        return os.listdir(self.folder) if os.path.isdir(self.folder) else []

    def _read(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def _write(self, path: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the state is on the disk before its meta file says so

    def _remove(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    # -- the rule -------------------------------------------------------------------------
    def found(self) -> list[tuple[int, str]]:
        """(iteration, folder) of the whole checkpoints, newest first."""
        out = []
        for name in self._folders():
            match = _FOLDER.match(name)
            path = f"{self.folder}/{name}"
            try:
                meta = json.loads(self._read(f"{path}/{META_FILE}")) if match else None
            except (OSError, ValueError):
                meta = None  # being written, or cut short: not whole
            if meta and all(meta.get(k) == v for k, v in self.owner.items()):
                out.append((int(match.group(1)), path))
        return sorted(out, reverse=True)

    def load(self, map_location: str | torch.device = "cpu") -> dict | None:
        """The newest state that loads; None when there is no checkpoint yet."""
        tried = []
        for _, path in self.found():
            try:
                blob = io.BytesIO(self._read(f"{path}/{STATE_FILE}"))
                return torch.load(blob, map_location=map_location, weights_only=True)
            except Exception as err:  # noqa: BLE001 - any unreadable state: fall back
                warnings.warn(
                    f"checkpoint {path} is unreadable ({type(err).__name__}: {err}); "
                    "falling back to the previous one",
                    RuntimeWarning,
                    stacklevel=2,
                )
                tried.append(path)
        if tried:
            raise CheckpointLost(
                f"no checkpoint of this run can be read from {self.folder} (tried "
                f"{', '.join(tried)})"
            )
        return None

    def save(self, state: dict, iteration: int) -> str:
        """Write the state, then its meta file; keep the newest two. Returns the folder."""
        path = f"{self.folder}/iteration-{iteration:09d}"
        # Serialized in memory first: torch.save straight into a file turns a failed write
        # (ENOSPC) into a RuntimeError ("unexpected pos") that hides the OS error.
        buffer = io.BytesIO()
        torch.save(state, buffer)
        try:
            self._write(f"{path}/{STATE_FILE}", buffer.getvalue())
            meta = {**self.owner, "iteration": iteration}
            self._write(f"{path}/{META_FILE}", json.dumps(meta).encode())
        except OSError as err:
            with contextlib.suppress(OSError):  # a stale folder costs only space
                self._remove(path)
            detail = " ".join((err.strerror or str(err)).split())
            raise OSError(
                f"could not write the checkpoint at iteration {iteration} to {self.folder} "
                f"({detail}); the previous checkpoint is intact"
            ) from err
        for _, old in self.found()[self.keep :]:
            with contextlib.suppress(OSError):  # already gone, or the storage refuses
                self._remove(old)
        return path
