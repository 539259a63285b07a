"""Where a trial's checkpoints live in Ray's storage and which one it resumes from
(ablations/checkpoints.py), on real files: STORAGE/STUDY/checkpoints/TRIAL/RUN/iteration-N/.
A folder counts only with a readable meta file of its own trial and run; the newest that
loads wins; two are kept."""

from __future__ import annotations

import json

import pytest
import torch

from ablations.checkpoints import (
    TrialCheckpoints,
    remove_study,
    study_uri,
)
from resnet.checkpoint import META_FILE, STATE_FILE, CheckpointLost


def _state(iteration: int) -> dict:
    return {"iteration": iteration, "weights": torch.full((3,), float(iteration))}


def test_saved_checkpoints_are_found_newest_first_and_two_are_kept(tmp_path):
    mine = TrialCheckpoints(str(tmp_path), "s", "depth=8 seed=0", "runA")
    for it in (10, 20, 30):
        folder = mine.save(_state(it), it)
        assert folder.endswith(f"s/checkpoints/depth=8_seed=0/runA/iteration-{it:09d}")
    assert [i for i, _ in mine.found()] == [30, 20]  # the oldest was pruned
    assert mine.load("cpu")["iteration"] == 30
    meta = json.loads((tmp_path / mine.found()[0][1] / META_FILE).read_text())
    assert meta == {"trial": "depth=8 seed=0", "run": "runA", "iteration": 30}


def test_other_runs_trials_and_half_written_folders_are_not_candidates(tmp_path):
    mine = TrialCheckpoints(str(tmp_path), "s", "k0", "runA")
    mine.save(_state(10), 10)
    # Another MLflow run of the same trial key, another trial, another study.
    TrialCheckpoints(str(tmp_path), "s", "k0", "runB").save(_state(50), 50)
    TrialCheckpoints(str(tmp_path), "s", "k1", "runA").save(_state(60), 60)
    TrialCheckpoints(str(tmp_path), "t", "k0", "runA").save(_state(70), 70)
    # A newer folder of this run killed before its meta file (written last), one whose
    # meta names another trial, and one whose meta is junk.
    folder = tmp_path / "s/checkpoints/k0/runA"
    (folder / "iteration-000000040").mkdir()
    torch.save(_state(40), folder / "iteration-000000040" / STATE_FILE)
    for it, meta in ((30, json.dumps({"trial": "k9", "run": "runA", "iteration": 30})), (20, "{")):
        (folder / f"iteration-{it:09d}").mkdir()
        (folder / f"iteration-{it:09d}" / META_FILE).write_text(meta)
    assert [i for i, _ in mine.found()] == [10]
    assert mine.load("cpu")["iteration"] == 10
    assert TrialCheckpoints(str(tmp_path / "never-made"), "s", "k0", "r").found() == []


def test_an_unreadable_newest_state_falls_back_with_a_warning_then_fails_clearly(tmp_path):
    mine = TrialCheckpoints(str(tmp_path), "s", "k0", "runA")
    mine.save(_state(10), 10)
    newest = mine.save(_state(20), 20)
    state = tmp_path / newest / STATE_FILE
    state.write_bytes(state.read_bytes()[:20])  # cut short
    with pytest.warns(RuntimeWarning, match=f"checkpoint {newest} is unreadable"):
        assert mine.load("cpu")["iteration"] == 10
    older = mine.found()[1][1]
    (tmp_path / older / STATE_FILE).write_bytes(b"junk")
    with pytest.warns(RuntimeWarning), pytest.raises(CheckpointLost, match="no checkpoint of"):
        mine.load("cpu")


def test_a_study_folder_is_removed_whole_and_no_other(tmp_path):
    TrialCheckpoints(str(tmp_path), "s", "k0", "runA").save(_state(10), 10)
    TrialCheckpoints(str(tmp_path), "s@smoke", "k0", "runA").save(_state(10), 10)
    assert remove_study(str(tmp_path), "s") == str(tmp_path / "s")
    assert not (tmp_path / "s").exists() and (tmp_path / "s@smoke").is_dir()
    assert remove_study(str(tmp_path), "s") is None


def test_a_bucket_uri_keeps_its_query_after_the_study_folder():
    uri = "s3://b/results?endpoint_override=127.0.0.1:9000&scheme=http"
    assert study_uri(uri, "depth@demo") == (
        "s3://b/results/depth@demo?endpoint_override=127.0.0.1:9000&scheme=http"
    )
    assert study_uri("/srv/res/", "depth") == "/srv/res/depth"
