"""Finding a trial's checkpoints in the storage, not only through the store.

The worker writes a checkpoint to the storage before the driver hears of it; a driver
killed in between leaves a checkpoint the store never recorded. `stored_checkpoints`
finds it from the meta file each checkpoint folder carries (real files, Ray's layout:
<storage>/<study>-<time>/<trial>-<id>/checkpoint_N/). A worker killed in between leaves
one Ray never registered; the retried trial finds it beside the checkpoint Ray restores.
"""

from __future__ import annotations

import json

import pyarrow.fs
from ray import tune

from ablations.trainable import META_FILE, STATE_FILE, TuneCheckpoints, stored_checkpoints


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


def test_a_retry_finds_the_checkpoints_ray_never_registered(tmp_path):
    """Ray restores checkpoint_000000 (iteration 20); the worker had also written 40 and 60
    before it died. Those come first, newest first; other runs' and trials', older ones and
    half-written metas do not."""
    run = "s-20260101-000000"
    at20 = _checkpoint(tmp_path, run, "k0-1", 0, {"trial": "k0", "run": "r", "iteration": 20})
    at60 = _checkpoint(tmp_path, run, "k0-1", 2, {"trial": "k0", "run": "r", "iteration": 60})
    at40 = _checkpoint(tmp_path, run, "k0-1", 1, {"trial": "k0", "run": "r", "iteration": 40})
    _checkpoint(tmp_path, run, "k0-1", 3, {"trial": "k0", "run": "r", "iteration": 10})
    _checkpoint(tmp_path, run, "k0-1", 4, {"trial": "k0", "run": "other", "iteration": 80})
    _checkpoint(tmp_path, run, "k0-1", 5, {"trial": "k1", "run": "r", "iteration": 80})
    _checkpoint(tmp_path, run, "k0-1", 6, '{"trial": "k0", "run": "r", "itera')
    _checkpoint(tmp_path, run, "k1-2", 0, {"trial": "k0", "run": "r", "iteration": 100})

    fs = pyarrow.fs.LocalFileSystem()
    store = TuneCheckpoints(str(tmp_path), [], key="k0", run="r")
    current = tune.Checkpoint(path=at20, filesystem=fs)
    assert [c.path for c in store._unregistered_after(current)] == [at60, at40]
    # The newest registered: nothing newer.
    newest = tune.Checkpoint(path=at60, filesystem=fs)
    assert store._unregistered_after(newest) == []
