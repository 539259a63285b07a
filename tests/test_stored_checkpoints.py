"""Finding a trial's checkpoints in the storage, not only through the store.

The worker writes a checkpoint to the storage before the driver hears of it; a driver
killed in between leaves a checkpoint the store never recorded. `stored_checkpoints`
finds it from the meta file each checkpoint folder carries (real files, Ray's layout:
<storage>/<study>-<time>/<trial>-<id>/checkpoint_N/).
"""

from __future__ import annotations

import json

from ablations.trainable import META_FILE, STATE_FILE, stored_checkpoints


def _checkpoint(root, tune_run: str, trial: str, n: int, meta) -> str:
    folder = root / tune_run / trial / f"checkpoint_{n:06d}"
    folder.mkdir(parents=True)
    (folder / STATE_FILE).write_bytes(b"weights")
    text = meta if isinstance(meta, str) else json.dumps(meta)
    (folder / META_FILE).write_text(text)
    return str(folder)


def test_newest_first_per_run_of_this_study_only(tmp_path):
    a = "runA"
    older = _checkpoint(tmp_path, "s-20260101-000000", "k0-1", 1, {"run": a, "iteration": 20})
    newer = _checkpoint(tmp_path, "s-20260102-000000", "k0-2", 0, {"run": a, "iteration": 60})
    middle = _checkpoint(tmp_path, "s-20260102-000000", "k0-2", 1, {"run": a, "iteration": 40})
    other = _checkpoint(tmp_path, "s-20260102-000000", "k1-3", 0, {"run": "runB", "iteration": 5})
    # Another study in the same storage, a half-written meta, and one from before run ids.
    _checkpoint(tmp_path, "t-20260102-000000", "k0-4", 0, {"run": a, "iteration": 80})
    _checkpoint(tmp_path, "s-20260103-000000", "k0-5", 0, '{"run": "runA", "itera')
    _checkpoint(tmp_path, "s-20260103-000000", "k0-6", 1, {"trial": "k0", "iteration": 100})
    (tmp_path / "s-stray-file").write_text("not a Tune run")

    found = stored_checkpoints(str(tmp_path), "s-", ["k0", "k1"])
    assert found == {a: [newer, middle, older], "runB": [other]}
    # Only the trials asked about are read.
    assert stored_checkpoints(str(tmp_path), "s-", ["k1"]) == {"runB": [other]}


def test_an_empty_or_missing_storage_finds_nothing(tmp_path):
    assert stored_checkpoints(str(tmp_path), "s-", ["k0"]) == {}
    assert stored_checkpoints(str(tmp_path / "never-made"), "s-", ["k0"]) == {}
