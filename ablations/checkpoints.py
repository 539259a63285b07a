"""Where a study keeps its files in Ray's storage (`--storage`: a folder or a bucket URI
every node reaches; pyarrow reads both), and which checkpoint a trial resumes from:

    STORAGE/STUDY/checkpoints/TRIAL/RUN/iteration-000000040/{state.pt, meta.json}
    STORAGE/STUDY/seeds-YYYYmmdd-HHMMSS/...    Ray Tune's own files (and tuning-...)

TRIAL is the trial key as a folder name, RUN its MLflow run id. meta.json is written after
state.pt, so a folder with a readable meta.json is whole. The resume rule (docs/design.md):
a trial resumes from the newest whole checkpoint of its own key and run that loads.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from ablations.errors import AblateError
from resnet.checkpoint import FolderCheckpoints


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


class TrialCheckpoints(FolderCheckpoints):
    """The checkpoints of one trial run in Ray's storage: resnet's folder layout and rule
    (resnet/checkpoint.py), read and written through pyarrow, so buckets too."""

    def __init__(self, storage: str, study: str, key: str, run: str):
        self.fs, folder = _study_folder(storage, study)
        super().__init__(
            f"{folder}/checkpoints/{trial_folder(key)}/{run}", {"trial": key, "run": run}
        )

    def _folders(self) -> list[str]:
        import pyarrow.fs

        try:
            infos = self.fs.get_file_info(pyarrow.fs.FileSelector(self.folder, True))
        except OSError:
            return []  # an unreadable storage: nothing to resume from
        return [info.base_name for info in infos]

    def _read(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def _write(self, path: str, data: bytes) -> None:
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(path) as f:
            f.write(data)

    def _remove(self, path: str) -> None:
        self.fs.delete_dir(path)


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
