"""`ablate rm`: a study's MLflow experiment and its folder in Ray's storage (checkpoints and
Ray's own files), removed after saying what will go. Nothing of another study is touched:
each study owns its experiment and its storage folder (ablations/checkpoints.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ablations import ledger as ledgers
from ablations.checkpoints import remove_study, storage_uri, study_uri
from ablations.errors import AblateError
from ablations.store import Store, StudyIds, probe, resolve_uri
from ablations.study import experiment_name


@dataclass(frozen=True)
class Removal:
    name: str
    uri: str
    storage: str
    study: StudyIds | None  # None: not in the store
    runs: int
    folder: bool  # the storage holds a folder of the study

    def describe(self) -> str:
        parts = []
        if self.study is not None:
            parts.append(f"the MLflow experiment {self.name} in {self.uri} ({self.runs} runs)")
        if self.folder:
            parts.append(f"{study_uri(self.storage, self.name)} (checkpoints, Ray's files)")
        return f"ablate rm {self.name} will remove " + " and ".join(parts)

    def run(self) -> str:
        if self.study is not None:
            Store(self.uri).delete_study(self.study)
        if self.folder:
            remove_study(self.storage, self.name)
        return (
            f"removed {self.name}; MLflow keeps deleted runs until `mlflow gc "
            f"--backend-store-uri {self.uri}`"
        )


def plan_removal(
    study: str, preset: str | None, tracking_uri: str | None, storage: str | None
) -> Removal:
    """What `ablate rm` would remove; nothing is removed here."""
    name = experiment_name(study, preset)
    uri = resolve_uri(tracking_uri)
    probe(uri)
    where = storage_uri(storage)
    found, runs = None, 0
    if not (uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file()):
        store = Store(uri)
        found = store.find_study(name)
        if found is not None:
            ledger = ledgers.read(store, found)
            runs = 1 + len(ledger.trials) + len(ledger.tuning)  # the parent and its children
    folder = _has_folder(where, name)
    if found is None and not folder:
        raise AblateError(f"no study {name} in the store {uri} nor in the storage {where}")
    return Removal(name, uri, where, found, runs, folder)


def _has_folder(storage: str, name: str) -> bool:
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(storage)
    return fs.get_file_info(f"{root.rstrip('/')}/{name}").type == pyarrow.fs.FileType.Directory
