"""Stopping ablate however it was started: a background job of a script (`ablate ... &`,
which starts with SIGINT ignored), nohup, a terminal's Ctrl-C. SIGTERM or Ctrl-C ends it
with exit code 130, with nothing of it left running, the port free and the checkpoints
kept; the trials it stopped say `interrupted`.

Each test ends only the processes it started (by pid)."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from test_faults import Ablate, alive, newest_checkpoints, study_yaml, tree, trial_runs, wait_for
from test_scaleout import BIN, clean_env, free_port, http_ok, listeners

# How a script starts a background job and learns its exit code.
JOB = "> out.log 2>&1 & echo $! > pid; wait $!; echo $? > rc"
BACKGROUND = {
    "bash -c '... &'": f'cd "$1"; shift; "$@" {JOB}',
    "nohup ... &": f'cd "$1"; shift; nohup "$@" {JOB}',
}


@pytest.fixture
def ablate(tmp_path):
    runner = Ablate(tmp_path)
    yield runner
    runner.close()


def background(how: str, cwd: Path, argv: list[str], env: dict) -> tuple[subprocess.Popen, int]:
    """Run argv as a background job of a non-interactive bash; (the bash, the job's pid)."""
    shell = subprocess.Popen(
        ["bash", "-c", BACKGROUND[how], "bash", str(cwd), *argv],
        env=env,
        start_new_session=True,
    )
    pid = wait_for(
        lambda: (cwd / "pid").exists() and (cwd / "pid").read_text().strip(), 30, "the job's pid"
    )
    return shell, int(pid)


def exit_code(cwd: Path, shell: subprocess.Popen, timeout: float) -> int:
    shell.wait(timeout=timeout)
    return int((cwd / "rc").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("how", list(BACKGROUND))
def test_sigterm_stops_a_background_ablate_ui_and_its_server(tmp_path, how):
    db = tmp_path / "ui.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()  # an (empty) store to serve
    port = free_port()
    argv = [str(BIN / "ablate"), "ui", "--tracking-uri", f"sqlite:///{db}", "--port", str(port)]
    shell, pid = background(how, tmp_path, argv, clean_env())
    family = {}
    try:

        def answering():
            family.update(tree(pid))
            return http_ok(f"http://127.0.0.1:{port}/")

        wait_for(answering, 120, "ablate ui to answer", shell)
        family.update(tree(pid))
        servers = {p: t for p, t in alive(family).items() if p != pid}
        assert servers, family  # the MLflow server it started, still serving
        os.kill(pid, signal.SIGTERM)
        assert exit_code(tmp_path, shell, 30) == 130
        wait_for(lambda: not alive(family), 30, "every server process to exit")
        assert not listeners(port)
        assert "holds 0 studies" in (tmp_path / "out.log").read_text()
    finally:
        for p in alive(family):
            os.kill(p, signal.SIGKILL)


@pytest.mark.slow
def test_sigterm_stops_a_background_ablate_run_and_keeps_its_checkpoints(ablate, tmp_path):
    iterations, every = 160, 20
    (tmp_path / "s.yaml").write_text(study_yaml("bgrun", iterations, every, seeds="[0]"))
    db, storage = tmp_path / "m.db", tmp_path / "res"
    argv = [str(BIN / "ablate"), "run", "s.yaml", "--tracking-uri", f"sqlite:///{db}"]
    argv += ["--storage", str(storage)]
    shell, pid = background("bash -c '... &'", tmp_path, argv, ablate.env)
    try:

        def part_way():
            ablate.seen.update(tree(pid))
            its = newest_checkpoints(storage, "bgrun").values()
            return its and every <= max(its) < iterations - every

        wait_for(part_way, 240, "the trial to checkpoint part-way", shell)
        family = {**ablate.seen, **tree(pid)}
        os.kill(pid, signal.SIGTERM)
        assert exit_code(tmp_path, shell, 60) == 130, (tmp_path / "out.log").read_text()[-3000:]
        output = (tmp_path / "out.log").read_text()
        assert "run the same command again to resume" in output
        assert re.search(r"shortcut=A seed=0: interrupted at \d+", output), output[-3000:]
        wait_for(
            lambda: not [t for t in alive(family).values() if "ImplicitFunc" in t],
            30,
            "the trial's worker to exit",
        )
        _, (run,) = trial_runs(db, "bgrun")
        assert (run.info.status, run.data.tags["ablate.status"]) == ("KILLED", "interrupted")
        kept = newest_checkpoints(storage, "bgrun")["shortcut=A seed=0"]
        assert every <= kept < iterations
    finally:
        if shell.poll() is None:
            shell.kill()


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_shows_the_stopped_trials_as_interrupted(ablate, tmp_path):
    """On a terminal the live table is drawn; after Ctrl-C its last rows say interrupted."""
    iterations, every = 160, 20
    (tmp_path / "s.yaml").write_text(study_yaml("tty", iterations, every, seeds="[0]"))
    db, storage = tmp_path / "m.db", tmp_path / "res"
    argv = [str(BIN / "ablate"), "run", "s.yaml", "--tracking-uri", f"sqlite:///{db}"]
    argv += ["--storage", str(storage)]
    main, child = pty.openpty()
    env = {**ablate.env, "COLUMNS": "160", "LINES": "40", "TERM": "xterm"}
    proc = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdin=child, stdout=child, stderr=child,
        start_new_session=True,
    )  # fmt: skip
    os.close(child)
    ablate.started.append(proc)
    screen = bytearray()

    def read() -> None:
        while select.select([main], [], [], 0)[0]:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                return
            if not chunk:
                return
            screen.extend(chunk)

    def part_way():
        read()
        ablate.watch(proc)
        its = newest_checkpoints(storage, "tty").values()
        return its and every <= max(its) < iterations - every

    wait_for(part_way, 240, "the trial to checkpoint part-way", proc)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        read()
        time.sleep(0.1)
    read()
    os.close(main)
    assert proc.returncode == 130
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", bytes(screen)).decode(errors="replace")
    last = text[text.rindex("trials done") :]
    assert re.search(r"shortcut=A seed=0\s*│\s*interrupted", last), last[-2000:]
    for column in ("iteration", "train err", "val err", "img/s", "left", "note"):
        assert column in text
