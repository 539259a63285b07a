"""Faults, made for real: signals to the `ablate run` process, a trial's worker killed, a
diverging arm, a truncated checkpoint, a full disk, two studies sharing one SQLite store.

Each test bounds its waits, and ends in a finally only the processes it started (by pid).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from mlflow.tracking import MlflowClient

from ablations.cli import main

STEP_KEYS = ("train/loss", "train/error", "val/error", "test/error", "lr")


def study_yaml(name: str, iterations: int, eval_every: int, seeds: str = "[0, 1]", **fixed) -> str:
    settings = {"depth": 8, "iterations": iterations, "eval_every": eval_every, "batch_size": 32}
    settings.update(fixed)
    return textwrap.dedent(
        f"""\
        name: {name}
        question: Does ablate survive this fault without losing or repeating work?
        dataset: digits
        scientific:
          shortcut: [A]
        fixed: {json.dumps(settings)}
        seeds: {seeds}
        """
    )


# -- processes -------------------------------------------------------------------------


class Proc(NamedTuple):
    ppid: int
    state: str
    title: str  # command line, or the title Ray's workers give themselves (ray::...)
    start: int  # clock ticks after boot: with the pid, names the process (pids get reused)


def procs() -> dict[int, Proc]:
    """Every process, from /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        title = cmd.replace(b"\0", b" ").decode(errors="replace").strip()
        out[int(entry)] = Proc(int(fields[1]), fields[0], title, int(fields[19]))
    return out


def tree(root: int) -> dict[int, Proc]:
    """root and its descendants."""
    table = procs()
    found = {root} if root in table else set()
    grew = True
    while grew:
        grew = False
        for pid, proc in table.items():
            if proc.ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return {pid: table[pid] for pid in found}


def alive(family: dict[int, Proc]) -> dict[int, str]:
    """pid -> title of those still running (zombies count as gone; a reused pid too)."""
    table = procs()
    return {
        pid: table[pid].title
        for pid, proc in family.items()
        if pid in table and table[pid].start == proc.start and table[pid].state != "Z"
    }


def kill_pids(family: dict[int, Proc]) -> None:
    for pid in alive(family):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"ablate exited ({proc.returncode}) before {what}")
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


class Ablate:
    """`ablate` through its console script, in its own session, in a working folder, with
    its own Ray temp dir (so it neither joins nor disturbs other Ray instances here)."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: socket paths
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "ABLATE_STORAGE")
        }
        self.env.update(RAY_TMPDIR=str(self.ray_tmp), RAY_USAGE_STATS_ENABLED="0")
        # A driver killed with -9 leaves its study's lease until it expires (docs/tracking.md):
        # a short timeout keeps the reruns here from waiting a minute for it.
        self.env.update(ABLATE_LEASE_TIMEOUT="6")
        self.started: list[subprocess.Popen] = []
        self.seen: dict[int, Proc] = {}  # every process seen under our drivers

    def start(self, *args: str, tag: str = "run") -> subprocess.Popen:
        out = open(self.cwd / f"{tag}.out", "w")
        err = open(self.cwd / f"{tag}.err", "w")
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("ablate")), *args],
            cwd=self.cwd,
            env=self.env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        out.close()
        err.close()
        self.started.append(proc)
        return proc

    def watch(self, proc: subprocess.Popen) -> dict[int, Proc]:
        family = tree(proc.pid)
        self.seen.update(family)
        return family

    def finish(self, proc: subprocess.Popen, timeout: float, tag: str = "run") -> tuple[int, str]:
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"ablate did not finish within {timeout} s")
        return code, (self.cwd / f"{tag}.out").read_text() + (self.cwd / f"{tag}.err").read_text()

    def close(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                self.seen.update(tree(proc.pid))
                proc.kill()
                proc.wait(timeout=30)
        kill_pids(self.seen)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)


@pytest.fixture
def ablate(tmp_path):
    runner = Ablate(tmp_path)
    yield runner
    runner.close()


# -- the store and the checkpoints -----------------------------------------------------


def status_count(db: Path, status: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute(
                "select count(*) from tags where key = 'ablate.status' and value = ?", (status,)
            ).fetchone()[0]
    except sqlite3.Error:
        return 0


def checkpoints_of(storage: Path, study: str = "*") -> dict[str, list[tuple[int, Path]]]:
    """Trial key -> its checkpoints in Ray's storage, oldest first: (iteration, folder)
    (STORAGE/STUDY/checkpoints/TRIAL/RUN/iteration-N/meta.json)."""
    found: dict[str, list[tuple[int, Path]]] = {}
    for meta in storage.glob(f"{study}/checkpoints/*/*/iteration-*/meta.json"):
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue  # being written
        found.setdefault(info["trial"], []).append((info["iteration"], meta.parent))
    return {key: sorted(v) for key, v in found.items()}


def newest_checkpoints(storage: Path, experiment: str) -> dict[str, int]:
    """Trial key -> iteration of its newest checkpoint (of the study's)."""
    found = checkpoints_of(storage, experiment)
    return {key: max(i for i, _ in kept) for key, kept in found.items()}


def loads(path: Path) -> bool:
    try:
        torch.load(path, weights_only=True)
    except Exception:  # noqa: BLE001 - half-written, whatever torch says
        return False
    return True


def trial_runs(db: Path, experiment: str):
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`ablate.role` = 'trial'")
    return client, runs


def assert_steps_once(client: MlflowClient, run, iterations: int, eval_every: int) -> None:
    """Each evaluation logged exactly once: every key's steps are unique and complete."""
    expected = list(range(eval_every, iterations + 1, eval_every))
    for key in STEP_KEYS:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == expected, (run.data.tags["ablate.trial_key"], key, steps)


def attempts(storage: Path, key: str) -> list[dict]:
    """The 'start' results Ray Tune recorded for the trial: one per attempt, over every
    `ablate run` (each Tuner has its own folder in the study's folder of the storage)."""
    starts = []
    for result in sorted(storage.glob("*/*/*/result.json")):
        for line in result.read_text().splitlines():
            record = json.loads(line)
            if record.get("kind") == "start" and record["config"]["trial"]["key"] == key:
                starts.append({**record, **json.loads(record["event"])})
    return starts


# -- 1. SIGKILL of the driver only ----------------------------------------------------


@pytest.mark.slow
def test_sigkill_of_driver_only_then_rerun_resumes_from_checkpoint(ablate, tmp_path):
    """The driver dies with no chance to clean up; Ray's processes must not outlive it in a
    way that disturbs the rerun, which resumes the cut trial from its newest checkpoint."""
    iterations, every = 120, 20
    (tmp_path / "s.yaml").write_text(study_yaml("sigkill", iterations, every))
    db, storage = tmp_path / "m.db", tmp_path / "res"
    args = ["run", "s.yaml", "--max-concurrent", "1", "--quiet"]
    args += ["--tracking-uri", f"sqlite:///{db}", "--storage", str(storage)]
    proc = ablate.start(*args, tag="first")

    def one_done_one_partial():
        ablate.watch(proc)
        partial = [i for i in newest_checkpoints(storage, "sigkill").values() if i < iterations]
        return status_count(db, "finished") == 1 and partial and max(partial) >= 2 * every

    wait_for(one_done_one_partial, 240, "one finished trial and one part-way", proc)
    family = ablate.watch(proc)
    assert any(p.title.startswith("ray::ImplicitFunc") for p in family.values()), family
    os.kill(proc.pid, signal.SIGKILL)  # the driver alone, not its process group
    proc.wait(timeout=30)

    # Everything that can train or write a checkpoint goes with the driver (Ray's core
    # processes share its fate). Ray's two agents stay orphaned until their GCS reconnect
    # timeout (60 s) ends them; they hold no trial. The fixture ends them by pid.
    agents = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")

    def only_agents_left():
        return not [t for t in alive(family).values() if not t.startswith(agents)]

    wait_for(only_agents_left, 30, "the trial's worker and Ray's core to exit")
    newest = newest_checkpoints(storage, "sigkill")
    cut = {folder: it for folder, it in newest.items() if it < iterations}
    assert len(cut) == 1
    ((cut_folder, cut_at),) = cut.items()
    assert cut_at >= 2 * every
    client, runs = trial_runs(db, "sigkill")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "RUNNING"]  # no cleanup ran
    # The store hears of a checkpoint only after the worker wrote it, so a driver killed in
    # between leaves the newest one unrecorded. Forget what the store heard: the rerun must
    # find the cut trial's checkpoints in the storage itself.
    (cut_run,) = [r for r in runs if r.data.tags["ablate.trial_key"] == cut_folder]
    for tag in ("ablate.checkpoint", "ablate.checkpoint_previous"):
        if tag in cut_run.data.tags:
            client.delete_tag(cut_run.info.run_id, tag)

    # The killed driver's lease outlives it until it expires: --wait takes it over then.
    rerun = ablate.start(*args, "--wait", tag="second")
    code, output = ablate.finish(rerun, 300, tag="second")
    assert code == 0, output[-3000:]
    assert "1 already done" in output

    client, runs = trial_runs(db, "sigkill")
    assert len(runs) == 2 and len({r.data.tags["ablate.trial_key"] for r in runs}) == 2
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.tags["ablate.status"] == "finished" for r in runs)
    resumed = {
        r.data.tags["ablate.trial_key"]: int(r.data.tags["ablate.resumed_from"]) for r in runs
    }
    assert resumed[cut_folder] == cut_at  # from its newest checkpoint, not from 0
    assert [v for k, v in resumed.items() if k != cut_folder] == [0]
    for run in runs:
        assert_steps_once(client, run, iterations, every)
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"


# -- 2. SIGTERM and Ctrl-C --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM to the driver", "SIGINT to the process group"])
def test_sigterm_and_ctrl_c_stop_gracefully_and_resume(ablate, tmp_path, how):
    """Two of three trials run at once; stopped part-way, those two are interrupted and
    the third, never started, stays pending (not counted as interrupted); a rerun
    resumes the two from their checkpoints and runs the third from scratch."""
    iterations, every = 160, 20
    (tmp_path / "s.yaml").write_text(study_yaml("stopme", iterations, every, seeds="[0, 1, 2]"))
    db, storage = tmp_path / "m.db", tmp_path / "res"
    args = ["run", "s.yaml", "--max-concurrent", "2", "--quiet"]
    args += ["--tracking-uri", f"sqlite:///{db}", "--storage", str(storage)]
    proc = ablate.start(*args, tag="first")

    def both_part_way():
        ablate.watch(proc)
        its = newest_checkpoints(storage, "stopme").values()
        return len(its) == 2 and all(every <= i < iterations - every for i in its)

    wait_for(both_part_way, 240, "both trials to checkpoint part-way", proc)
    family = ablate.watch(proc)
    sent = time.monotonic()
    if how.startswith("SIGTERM"):
        os.kill(proc.pid, signal.SIGTERM)
    else:  # what a terminal's Ctrl-C does: SIGINT to the foreground process group
        os.killpg(proc.pid, signal.SIGINT)
    code, output = ablate.finish(proc, 60, tag="first")
    took = time.monotonic() - sent
    assert code == 130, output[-3000:]
    assert took < 30, f"took {took:.1f} s to stop"
    assert "run the same command again to resume" in output
    assert "this run: 2 interrupted, 1 not started" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    wait_for(
        lambda: not [t for t in alive(family).values() if "ImplicitFunc" in t],
        30,
        "the trials' workers to exit",
    )

    client, runs = trial_runs(db, "stopme")
    assert len(runs) == 3
    assert sorted((r.info.status, r.data.tags["ablate.status"]) for r in runs) == [
        ("KILLED", "interrupted"),
        ("KILLED", "interrupted"),
        ("SCHEDULED", "pending"),
    ]
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "KILLED"
    stopped_at = newest_checkpoints(storage, "stopme")
    assert all(0 < i < iterations for i in stopped_at.values()), stopped_at

    rerun = ablate.start(*args, tag="second")
    code, output = ablate.finish(rerun, 300, tag="second")
    assert code == 0, output[-3000:]
    client, runs = trial_runs(db, "stopme")
    assert len(runs) == 3
    for run in runs:
        assert (run.info.status, run.data.tags["ablate.status"]) == ("FINISHED", "finished")
        key = run.data.tags["ablate.trial_key"]
        assert int(run.data.tags["ablate.resumed_from"]) == stopped_at.get(key, 0)
        assert_steps_once(client, run, iterations, every)


# -- 3. a trial's worker process killed -------------------------------------------------


@pytest.mark.slow
def test_killed_worker_is_retried_from_its_checkpoint_into_the_same_run(ablate, tmp_path):
    iterations, every = 120, 20
    (tmp_path / "s.yaml").write_text(study_yaml("workerkill", iterations, every, seeds="[0]"))
    db, storage = tmp_path / "m.db", tmp_path / "res"
    args = ["run", "s.yaml", "--quiet", "--tracking-uri", f"sqlite:///{db}"]
    proc = ablate.start(*args, "--storage", str(storage))

    def worker_part_way():
        family = ablate.watch(proc)
        workers = {p: v for p, v in family.items() if v.title.startswith("ray::ImplicitFunc")}
        its = newest_checkpoints(storage, "workerkill").values()
        return workers if its and 2 * every <= max(its) < iterations - every else None

    workers = wait_for(worker_part_way, 240, "the trial to checkpoint part-way", proc)
    assert len(workers) == 1
    (worker,) = workers
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: not alive(workers), 30, "the worker to die")
    # The newest checkpoint in the storage, registered with Ray or not (the worker may die
    # between writing one and the driver hearing of it), unless the kill cut its copy short.
    ((_, kept),) = checkpoints_of(storage).items()
    killed_at = max(i for i, folder in kept if loads(folder / "state.pt"))

    code, output = ablate.finish(proc, 300)
    assert code == 0, output[-3000:]
    client, runs = trial_runs(db, "workerkill")
    assert len(runs) == 1
    (run,) = runs
    assert (run.info.status, run.data.tags["ablate.status"]) == ("FINISHED", "finished")
    assert int(run.data.tags["ablate.resumed_from"]) == killed_at
    assert_steps_once(client, run, iterations, every)
    tries = attempts(storage, "shortcut=A seed=0")
    assert [t["resumed_from"] for t in tries] == [0, killed_at]
    assert tries[0]["pid"] == worker != tries[1]["pid"]  # a new worker process


# -- 4. divergence ----------------------------------------------------------------------

DIVERGE = """\
name: diverge
question: Is a diverging arm recorded as diverged, and does the study still finish?
dataset: digits
scientific:
  lr: [0.1, 100000]
fixed: {depth: 8, iterations: 30, eval_every: 10, batch_size: 32}
seeds: [0]
"""


def test_divergence_is_recorded_once_not_retried_and_study_finishes(
    ray_local, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.yaml").write_text(DIVERGE)
    db, storage = tmp_path / "m.db", tmp_path / "res"
    code = main(
        ["run", "d.yaml", "--quiet", "--tracking-uri", f"sqlite:///{db}", "--storage", str(storage)]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "this run: 1 diverged, 1 finished" in out
    client, runs = trial_runs(db, "diverge")
    by_lr = {r.data.params["lr"]: r for r in runs}
    assert set(by_lr) == {"0.1", "100000.0"}  # a float setting, read as one
    bad, good = by_lr["100000.0"], by_lr["0.1"]
    assert bad.info.status == "FINISHED"
    assert bad.data.tags["ablate.status"] == "diverged"
    assert 0 <= int(bad.data.tags["ablate.diverged_at"]) < 10
    assert bad.data.tags["ablate.resumed_from"] == "0"
    assert "ablate.error" not in bad.data.tags
    assert [t["resumed_from"] for t in attempts(storage, "lr=100000.0 seed=0")] == [0]
    history = client.get_metric_history(bad.info.run_id, "train/loss")
    assert [m.step for m in history] == [10]  # stopped at the first evaluation
    assert (good.info.status, good.data.tags["ablate.status"]) == ("FINISHED", "finished")
    assert "ablate.diverged_at" not in good.data.tags
    parent = client.get_run(bad.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"
    # A rerun treats diverged as done: nothing runs again.
    code = main(
        ["run", "d.yaml", "--quiet", "--tracking-uri", f"sqlite:///{db}", "--storage", str(storage)]
    )
    assert code == 0 and "2 already done" in capsys.readouterr().out


# -- 5. a truncated newest checkpoint ---------------------------------------------------


@pytest.mark.slow
def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(ablate, tmp_path):
    iterations, every = 140, 20
    (tmp_path / "s.yaml").write_text(study_yaml("truncated", iterations, every, seeds="[0]"))
    db, storage = tmp_path / "m.db", tmp_path / "res"
    args = ["run", "s.yaml", "--quiet", "--tracking-uri", f"sqlite:///{db}"]
    args += ["--storage", str(storage)]
    proc = ablate.start(*args, tag="first")
    wait_for(
        lambda: (
            ablate.watch(proc)
            and 3 * every
            <= max(newest_checkpoints(storage, "truncated").values(), default=0)
            < iterations - every
        ),
        240,
        "two checkpoints part-way",
        proc,
    )
    os.kill(proc.pid, signal.SIGTERM)
    code, output = ablate.finish(proc, 60, tag="first")
    assert code == 130, output[-3000:]
    (kept,) = checkpoints_of(storage).values()
    (older_at, older), (newest_at, newest) = kept  # Tune keeps the newest two
    tags = trial_runs(db, "truncated")[1][0].data.tags
    assert (tags["ablate.checkpoint"], tags["ablate.checkpoint_previous"]) == (
        str(newest),
        str(older),
    )
    logged = {
        m.step: m.value
        for m in MlflowClient(f"sqlite:///{db}").get_metric_history(
            trial_runs(db, "truncated")[1][0].info.run_id, "val/error"
        )
    }
    assert logged  # evaluations past the older checkpoint get replayed; none may repeat
    state = newest / "state.pt"
    with open(state, "r+b") as f:
        f.truncate(state.stat().st_size // 2)

    rerun = ablate.start(*args, tag="second")
    code, output = ablate.finish(rerun, 300, tag="second")
    assert code == 0, output[-3000:]
    client, (run,) = trial_runs(db, "truncated")
    assert (run.info.status, run.data.tags["ablate.status"]) == ("FINISHED", "finished")
    assert int(run.data.tags["ablate.resumed_from"]) == older_at < newest_at
    assert_steps_once(client, run, iterations, every)
    # Replayed evaluations were not logged again: the stored values are the first ones.
    again = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val/error")}
    assert {s: again[s] for s in logged} == logged
    # The worker warned (Ray keeps worker output in its session logs, not on the terminal).
    warned = [
        p
        for p in ablate.ray_tmp.glob(f"**/session_*_{rerun.pid}/logs/worker-*.err")
        if f"checkpoint {newest} is unreadable" in p.read_text(errors="replace")
    ]
    assert warned, "no worker logged the fallback warning"


# -- 6. disk full while writing a checkpoint --------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1.1 MB tmpfs: one depth-8 checkpoint (~650 KB) fits, a second one does not."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1100k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True, timeout=30).returncode:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def test_disk_full_fails_the_trial_clearly_and_keeps_the_previous_checkpoint(
    ray_local, small_tmpfs, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(study_yaml("diskfull", 40, 10, seeds="[0]"))
    db = tmp_path / "m.db"
    code = main(
        [
            "run",
            "s.yaml",
            "--quiet",
            "--tracking-uri",
            f"sqlite:///{db}",
            "--storage",
            str(small_tmpfs),
        ]
    )
    out = capsys.readouterr().out
    assert code == 1, out
    assert "1 failed" in out
    client, (run,) = trial_runs(db, "diskfull")
    assert (run.info.status, run.data.tags["ablate.status"]) == ("FAILED", "failed")
    error = run.data.tags["ablate.error"]
    assert f"could not write the checkpoint at iteration 20 to {small_tmpfs}" in error, error
    assert "No space left on device" in error and "previous checkpoint is intact" in error, error
    assert "\n" not in error
    # The checkpoint on record is the one of iteration 10, whole.
    kept = Path(run.data.tags["ablate.checkpoint"])
    assert json.loads((kept / "meta.json").read_text())["iteration"] == 10
    state = torch.load(kept / "state.pt", weights_only=True)
    assert state["iteration"] == 10 and len(state["history"]) == 1


# -- 7. two studies at once on one SQLite store -----------------------------------------


@pytest.mark.slow
def test_two_studies_at_once_share_one_sqlite_store(ablate, tmp_path):
    iterations, every = 40, 10
    db = tmp_path / "shared.db"
    procs_ = []
    for name in ("alpha", "beta"):
        (tmp_path / f"{name}.yaml").write_text(study_yaml(name, iterations, every))
        procs_.append(
            ablate.start(
                "run",
                f"{name}.yaml",
                "--quiet",
                "--max-concurrent",
                "1",
                "--tracking-uri",
                f"sqlite:///{db}",
                tag=name,
            )
        )
    for name, proc in zip(("alpha", "beta"), procs_, strict=True):
        code, output = ablate.finish(proc, 400, tag=name)
        assert code == 0, (name, output[-3000:])
    client = MlflowClient(f"sqlite:///{db}")
    for name in ("alpha", "beta"):
        client, runs = trial_runs(db, name)
        assert sorted(r.data.tags["ablate.trial_key"] for r in runs) == [
            "shortcut=A seed=0",
            "shortcut=A seed=1",
        ]
        for run in runs:
            assert (run.info.status, run.data.tags["ablate.status"]) == ("FINISHED", "finished")
            assert run.data.tags["ablate.study"] == name
            assert_steps_once(client, run, iterations, every)
