"""A study killed mid-run (SIGKILL, no chance to clean up) resumes where it stopped."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

STUDY = """\
name: killme
question: Does a killed study resume from its checkpoints without losing or repeating?
dataset: digits
scientific:
  shortcut: [A]
fixed: {depth: 8, iterations: 300, eval_every: 20, batch_size: 32}
seeds: [0, 1]
"""


def _ablate(*args: str, cwd: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from ablations.cli import main; sys.exit(main())",
        *args,
    ]


def _finished_trials(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute(
                "select count(*) from tags where key = 'ablate.status' and value = 'finished'"
            ).fetchone()[0]
    except sqlite3.Error:
        return 0


def _checkpoint_iterations(root: Path) -> list[int]:
    """The newest checkpoint's iteration of each trial, in Ray's storage."""
    from test_faults import checkpoints_of

    return [max(i for i, _ in kept) for kept in checkpoints_of(root / "ablate-results").values()]


@pytest.mark.slow
def test_sigkill_mid_study_then_rerun_completes_without_duplicates(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY)
    cmd = _ablate("run", "study.yaml", "--max-concurrent", "1", "--quiet", cwd=tmp_path)
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    db = tmp_path / "mlflow.db"
    deadline = time.monotonic() + 240
    try:
        # Kill once one trial has finished and the other has checkpointed part-way.
        while time.monotonic() < deadline:
            partial = [i for i in _checkpoint_iterations(tmp_path) if 0 < i < 300]
            if _finished_trials(db) == 1 and partial and max(partial) >= 60:
                break
            assert proc.poll() is None, "the study ended before it could be interrupted"
            time.sleep(0.1)
        else:
            pytest.fail("the study never reached a point to interrupt")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: a crash
        proc.wait()
    killed_at = max(i for i in _checkpoint_iterations(tmp_path) if i < 300)

    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 already done" in done.stdout

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("killme")
    runs = client.search_runs([exp.experiment_id], "tags.`ablate.role` = 'trial'")
    assert len(runs) == 2  # one run per trial key, across both invocations
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.tags["ablate.status"] == "finished" for r in runs)
    resumed = [r for r in runs if int(r.data.tags["ablate.resumed_from"]) > 0]
    assert len(resumed) == 1
    assert int(resumed[0].data.tags["ablate.resumed_from"]) >= killed_at - 20
    for run in runs:
        for key in ("val/error", "train/error", "lr"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert sorted(steps) == list(range(20, 301, 20)), (key, steps)
