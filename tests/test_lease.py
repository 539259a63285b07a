"""One driver per study (ablations/lease.py): the lease in the tracking store, with real
processes on a real SQLite store. Drivers that contend at once get one winner, waiting ones
never overlap, a driver killed with SIGKILL leaves a lease that expires after the timeout,
`ablate rm` and `ablate show` see a running study; and two `ablate run` of one study
started together: one runs, the other refuses naming it, or waits and then resumes, and
every trial trains once and logs each evaluation once."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import socket
import sqlite3
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from test_faults import (
    Ablate,
    assert_steps_once,
    attempts,
    status_count,
    study_yaml,
    trial_runs,
    wait_for,
)

from ablations.cli import main

TIMEOUT = 6.0  # ABLATE_LEASE_TIMEOUT for these tests: heartbeats every second


def _contender(uri, name, hold_s, wait, barrier, out):
    """One driver's side: take the lease, hold it, record when (or the refusal)."""
    os.environ["ABLATE_LEASE_TIMEOUT"] = str(TIMEOUT)
    from ablations.errors import AblateError
    from ablations.lease import Lease
    from ablations.tracking import Store

    store = Store(uri)
    barrier.wait(timeout=120)
    try:
        with Lease(store, name, wait=wait):
            start = time.time()
            time.sleep(hold_s)
            result = {"won": [start, time.time()], "pid": os.getpid()}
    except AblateError as err:
        result = {"refused": str(err), "pid": os.getpid()}
    Path(out).write_text(json.dumps(result))


def _holder_then_sleep(uri, name, ready):
    os.environ["ABLATE_LEASE_TIMEOUT"] = str(TIMEOUT)
    from ablations.lease import Lease
    from ablations.tracking import Store

    with Lease(Store(uri), name):
        Path(ready).write_text(str(os.getpid()))
        time.sleep(600)


def _contend(tmp_path, n: int, hold_s: float, wait: bool) -> list[dict]:
    ctx = multiprocessing.get_context("spawn")
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    barrier = ctx.Barrier(n)
    outs = [tmp_path / f"{i}.json" for i in range(n)]
    procs = [
        ctx.Process(target=_contender, args=(uri, "race", hold_s, wait, barrier, str(out)))
        for out in outs
    ]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join(timeout=240)
            assert proc.exitcode == 0
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    return [json.loads(out.read_text()) for out in outs]


def test_drivers_claiming_at_once_get_one_winner(tmp_path):
    """Four drivers claim one study at the same moment: exactly one wins, and each other
    refuses naming the winner's host and process."""
    results = _contend(tmp_path, 4, hold_s=4.0, wait=False)
    winners = [r for r in results if "won" in r]
    assert len(winners) == 1, results
    for r in results:
        if "refused" in r:
            assert f"on {socket.gethostname()} (process {winners[0]['pid']})" in r["refused"]
            assert "--wait" in r["refused"]


def test_waiting_drivers_never_overlap(tmp_path):
    """Four drivers that wait: each holds the study in turn, never two at once."""
    results = _contend(tmp_path, 4, hold_s=1.5, wait=True)
    spans = sorted(r["won"] for r in results)
    assert len(spans) == 4, results
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, spans
    # every claim of the study was released: no lease run is left active
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    exp = client.get_experiment_by_name("race")
    assert client.search_runs([exp.experiment_id], "tags.`ablate.lease` = 'claim'") == []


def test_a_killed_holder_expires_after_the_timeout_and_blocks_rm_until_then(tmp_path, monkeypatch):
    """SIGKILL leaves the lease behind: while its heartbeat is fresh `ablate rm` refuses
    naming the holder; after the timeout the next driver takes the study over."""
    monkeypatch.setenv("ABLATE_LEASE_TIMEOUT", str(TIMEOUT))
    from ablations.lease import Lease, holder
    from ablations.tracking import Store

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    ready = tmp_path / "ready"
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_holder_then_sleep, args=(uri, "gone", str(ready)))
    proc.start()
    try:
        wait_for(ready.exists, 120, "the holder to take the lease")
        store = Store(uri)
        # a parent run, so that rm finds a study to refuse to remove
        exp = store.client.get_experiment_by_name("gone")
        store.client.create_run(exp.experiment_id, tags={"ablate.role": "parent"})
        assert holder(store, "gone").pid == proc.pid
        code = main(["rm", "gone", "--tracking-uri", uri, "--yes"])
        assert code == 2
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.time()
    finally:
        proc.kill()
        proc.join(timeout=30)
    with Lease(store, "gone", wait=True):
        taken = time.time() - killed
    print(f"lease taken over {taken:.1f} s after SIGKILL (timeout {TIMEOUT:g} s)")
    # the last heartbeat was at most TIMEOUT/6 before the kill; the claim then settles
    assert TIMEOUT - TIMEOUT / 6 - 1 <= taken <= TIMEOUT + 3 + 2
    assert holder(store, "gone") is None


def test_rm_refuses_a_running_study_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ABLATE_LEASE_TIMEOUT", str(TIMEOUT))
    from ablations.lease import Lease
    from ablations.tracking import Store

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    store = Store(uri)
    with Lease(store, "busy"):
        exp = store.client.get_experiment_by_name("busy")
        store.client.create_run(exp.experiment_id, tags={"ablate.role": "parent"})
        capsys.readouterr()  # MLflow's own lines creating the store
        assert main(["rm", "busy", "--tracking-uri", uri, "--yes"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert re.search(rf"study busy is running on .+ \(process {os.getpid()}\) since ", err), err
    assert main(["rm", "busy", "--tracking-uri", uri, "--yes"]) == 0  # released: it goes


# -- real `ablate run` processes --------------------------------------------------------


@pytest.fixture
def ablate(tmp_path):
    runner = Ablate(tmp_path)
    runner.env["ABLATE_LEASE_TIMEOUT"] = str(TIMEOUT)
    yield runner
    runner.close()


def _evaluations(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as con:
            query = "select count(*) from metrics where key = 'train/error'"
            return con.execute(query).fetchone()[0]
    except sqlite3.Error:
        return 0


def _held_by(db: Path, pid: int) -> bool:
    client = MlflowClient(f"sqlite:///{db}")
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id], "tags.`ablate.lease` = 'claim'"):
            tags = run.data.tags
            if tags.get("ablate.lease_held") == "true" and tags.get("ablate.lease_pid") == str(pid):
                return True
    return False


@pytest.mark.slow
def test_two_runs_of_one_study_started_together(ablate, tmp_path):
    """Two `ablate run` of one study started at the same moment: one runs it, the other
    refuses (exit 2, one line naming the host and process); a third started while it runs
    refuses in seconds, and one with --wait waits, then finds nothing left to run. Every
    trial trained once, every evaluation logged once."""
    iterations, every = 100, 20
    (tmp_path / "s.yaml").write_text(study_yaml("twice", iterations, every))
    db, storage = tmp_path / "m.db", tmp_path / "res"
    args = ["run", "s.yaml", "--quiet", "--tracking-uri", f"sqlite:///{db}"]
    args += ["--storage", str(storage), "--max-concurrent", "1"]
    first = ablate.start(*args, tag="a")
    second = ablate.start(*args, tag="b")

    def one_ended():
        return [p for p in (first, second) if p.poll() is not None]

    (loser,) = wait_for(one_ended, 300, "one of the two drivers to refuse")
    winner = second if loser is first else first
    tag = "a" if loser is first else "b"
    code, output = ablate.finish(loser, 10, tag=tag)
    assert code == 2, output[-3000:]
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert f"on {socket.gethostname()} (process {winner.pid}) since " in lines[0]

    wait_for(lambda: _held_by(db, winner.pid), 120, "the winner to hold the lease", winner)
    began = time.monotonic()
    third = ablate.start(*args, tag="c")
    code, output = ablate.finish(third, 120, tag="c")
    refused_in = time.monotonic() - began
    print(f"a driver of a running study refused in {refused_in:.1f} s")
    assert code == 2 and f"(process {winner.pid})" in output, output[-3000:]
    assert winner.poll() is None, "the study ended before the third driver was refused"

    waiting = ablate.start(*args, "--wait", tag="d")
    code, output = ablate.finish(winner, 300, tag="b" if loser is first else "a")
    assert code == 0, output[-3000:]
    code, output = ablate.finish(waiting, 300, tag="d")
    assert code == 0, output[-3000:]
    assert "waiting for it to end" in output and "2 already done" in output, output[-3000:]

    client, runs = trial_runs(db, "twice")
    assert len(runs) == 2
    for run in runs:
        assert run.data.tags["ablate.status"] == "finished"
        assert len(attempts(storage, run.data.tags["ablate.trial_key"])) == 1
        assert_steps_once(client, run, iterations, every)


@pytest.mark.slow
def test_a_killed_driver_is_taken_over_after_the_timeout_and_resumed(ablate, tmp_path):
    """SIGKILL of the driver (and everything it started) part-way: the next `ablate run
    --wait` takes the study over once the lease expires and resumes it; each evaluation is
    logged once."""
    iterations, every = 200, 20
    (tmp_path / "s.yaml").write_text(study_yaml("dies", iterations, every, seeds="[0]"))
    db, storage = tmp_path / "m.db", tmp_path / "res"
    args = ["run", "s.yaml", "--quiet", "--tracking-uri", f"sqlite:///{db}"]
    args += ["--storage", str(storage)]
    proc = ablate.start(*args, tag="first")

    def part_way():
        ablate.watch(proc)
        # raw SQL: an MLflow client would race the driver creating the store's tables
        return status_count(db, "running") and _evaluations(db) >= 2

    wait_for(part_way, 300, "two evaluations logged", proc)
    for pid in ablate.watch(proc):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    killed = time.monotonic()
    proc.wait(timeout=30)
    assert _held_by(db, proc.pid)  # nothing released it

    rerun = ablate.start(*args, "--wait", tag="second")
    wait_for(lambda: _held_by(db, rerun.pid), 300, "the rerun to take the lease", rerun)
    print(f"the next driver took the study over {time.monotonic() - killed:.1f} s after SIGKILL")
    code, output = ablate.finish(rerun, 300, tag="second")
    assert code == 0, output[-3000:]
    client, runs = trial_runs(db, "dies")
    (run,) = runs
    assert run.data.tags["ablate.status"] == "finished"
    assert int(run.data.tags["ablate.resumed_from"]) > 0  # from its checkpoint
    assert_steps_once(client, run, iterations, every)


def test_show_says_where_a_study_runs(tmp_path, monkeypatch):
    """`ablate show` of a study another driver holds names its host and process."""
    monkeypatch.setenv("ABLATE_LEASE_TIMEOUT", str(TIMEOUT))
    from conftest import TINY_STUDY, plan_of

    from ablations import describe
    from ablations.lease import Lease
    from ablations.ledger import stored
    from ablations.tracking import Store

    (tmp_path / "tiny.yaml").write_text(TINY_STUDY)
    plan = plan_of(str(tmp_path / "tiny.yaml"))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    with Lease(Store(uri), plan.experiment):
        ledger = stored(plan, uri, str(tmp_path / "res"))
    assert ledger.running.startswith(f"on {socket.gethostname()} (process {os.getpid()}) since ")
    text = describe.render(describe.describe(plan, ledger) | {"estimate": {"basis": "-"}})
    assert f"running now {ledger.running}" in text
    assert stored(plan, uri, str(tmp_path / "res")).running == ""  # released
