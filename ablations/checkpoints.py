"""Where a study keeps its files in Ray's storage (`--storage`: a folder or a bucket URI
every node reaches; pyarrow reads both), and which checkpoint a trial resumes from:

    STORAGE/STUDY/checkpoints/TRIAL/RUN/iteration-000000040/{state.pt, meta.json}
    STORAGE/STUDY/seeds-YYYYmmdd-HHMMSS/...    Ray Tune's own files (and tuning-...)

TRIAL is the trial key as a folder name, RUN its MLflow run id. meta.json is written after
state.pt, so a folder with a readable meta.json is whole. The resume rule (docs/design.md):
a trial resumes from the newest whole checkpoint of its own key and run that loads.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
import warnings
from pathlib import Path

from ablations.errors import AblateError

STATE_FILE = "state.pt"
META_FILE = "meta.json"  # {"trial": key, "run": MLflow run id, "iteration": N}
KEEP = 2  # the newest checkpoint and one to fall back to
_FOLDER = re.compile(r"^iteration-(\d{9})$")


class CheckpointLost(RuntimeError):
    """The trial has checkpoints in the storage, but none of them can be read."""


def storage_uri(storage: str | None) -> str:
    """Ray's storage: a bucket URI as given (checked now), or an absolute local folder
    (default ./ablate-results, or ABLATE_STORAGE)."""
    value = storage or os.environ.get("ABLATE_STORAGE") or "ablate-results"
    if "://" in value:
        import pyarrow.fs

        try:
            pyarrow.fs.FileSystem.from_uri(value)
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types here
            raise AblateError(f"--storage {value}: {str(err).splitlines()[0]}") from None
        return value
    return str(Path(value).expanduser().resolve())


def study_uri(storage: str, study: str) -> str:
    """The study's folder as a URI Ray takes as its storage path (a bucket URI keeps its
    query, e.g. an endpoint, after the path)."""
    base, sep, query = storage.partition("?") if "://" in storage else (storage, "", "")
    return f"{base.rstrip('/')}/{study}{sep}{query}"


def tune_run_name(phase: str) -> str:
    """The folder of one Tune run inside the study's folder (`seeds` or `tuning`)."""
    return f"{phase}-{time.strftime('%Y%m%d-%H%M%S')}"


def trial_folder(key: str) -> str:
    """A trial key as a folder name."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", key)[:80]


def _study_folder(storage: str, study: str) -> tuple:
    """The storage's filesystem, and the study's folder in it."""
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(storage)
    return fs, f"{root.rstrip('/')}/{study}"


class TrialCheckpoints:
    """The checkpoints of one trial run: resnet's Checkpoints protocol (`load`, `save`) on
    Ray's storage, plus `found()` for the driver."""

    def __init__(self, storage: str, study: str, key: str, run: str):
        self.storage, self.key, self.run = storage, key, run
        self.fs, folder = _study_folder(storage, study)
        self.folder = f"{folder}/checkpoints/{trial_folder(key)}/{run}"

    def found(self) -> list[tuple[int, str]]:
        """(iteration, folder) of the whole checkpoints, newest first."""
        import pyarrow.fs

        try:
            infos = self.fs.get_file_info(pyarrow.fs.FileSelector(self.folder, True))
        except OSError:
            return []  # an unreadable storage: nothing to resume from
        out = []
        for info in infos:
            match = _FOLDER.match(info.base_name)
            if match and info.type == pyarrow.fs.FileType.Directory:
                meta = self._meta(info.path)
                if meta and (meta.get("trial"), meta.get("run")) == (self.key, self.run):
                    out.append((int(match.group(1)), info.path))
        return sorted(out, reverse=True)

    def _meta(self, folder: str) -> dict | None:
        try:
            with self.fs.open_input_stream(f"{folder}/{META_FILE}") as f:
                return json.loads(f.read())
        except (OSError, ValueError):
            return None

    def load(self, map_location) -> dict | None:
        """The newest state that loads; None when the trial has no checkpoint yet."""
        import torch

        tried = []
        for _, folder in self.found():
            try:
                with self.fs.open_input_stream(f"{folder}/{STATE_FILE}") as f:
                    blob = io.BytesIO(f.read())
                return torch.load(blob, map_location=map_location, weights_only=True)
            except Exception as err:  # noqa: BLE001 - any unreadable state: fall back
                warnings.warn(
                    f"checkpoint {folder} is unreadable ({type(err).__name__}: {err}); "
                    "falling back to the previous one",
                    RuntimeWarning,
                    stacklevel=2,
                )
                tried.append(folder)
        if tried:
            raise CheckpointLost(
                f"no checkpoint of this trial can be read from {self.storage} (tried "
                f"{', '.join(tried)})"
            )
        return None

    def save(self, state: dict, iteration: int) -> str:
        """Write the state, then its meta file; keep the newest KEEP. Returns the folder."""
        import torch

        folder = f"{self.folder}/iteration-{iteration:09d}"
        buffer = io.BytesIO()
        torch.save(state, buffer)
        meta = {"trial": self.key, "run": self.run, "iteration": iteration}
        try:
            self.fs.create_dir(folder, recursive=True)
            with self.fs.open_output_stream(f"{folder}/{STATE_FILE}") as f:
                f.write(buffer.getbuffer())
            with self.fs.open_output_stream(f"{folder}/{META_FILE}") as f:
                f.write(json.dumps(meta).encode())
        except OSError as err:
            with contextlib.suppress(OSError):  # a stale folder costs only space
                self.fs.delete_dir(folder)
            detail = " ".join((err.strerror or str(err)).split())
            raise OSError(
                f"could not write the checkpoint at iteration {iteration} to {self.storage} "
                f"({detail}); the previous checkpoint is intact"
            ) from err
        for _, old in self.found()[KEEP:]:
            with contextlib.suppress(OSError):  # already gone, or the storage refuses
                self.fs.delete_dir(old)
        return folder


def has_study(storage: str, study: str) -> bool:
    import pyarrow.fs

    fs, folder = _study_folder(storage, study)
    return fs.get_file_info(folder).type == pyarrow.fs.FileType.Directory


def remove_study(storage: str, study: str) -> str | None:
    """Delete the study's folder in the storage; returns what was deleted, or None."""
    if not has_study(storage, study):
        return None
    fs, folder = _study_folder(storage, study)
    fs.delete_dir(folder)
    return folder
