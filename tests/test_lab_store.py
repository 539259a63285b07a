"""A lab's shared store, for real (tests/lab_store.py): PostgreSQL in a throwaway cluster
and `mlflow server --app-name basic-auth` over it. A study runs through the server, is
interrupted, loses the server part-way, resumes, is reported, browsed and removed, and its
runs equal those of the same study in a SQLite file; a wrong password, a user without
permission and a database that is down are refused in one line before anything is written;
no password appears in what ablate prints or records. Skipped where PostgreSQL's binaries
are absent (.ci/run installs them)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import lab_store as lab
import pytest
from mlflow.tracking import MlflowClient
from test_faults import Ablate, assert_steps_once, study_yaml, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not lab.available(), reason="PostgreSQL's binaries are not installed"),
]

SECRETS = (lab.PASSWORD, lab.READER_PASSWORD, lab.DB_PASSWORD, lab.ADMIN_PASSWORD)
ITERATIONS, EVERY = 100, 20


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(PostgreSQL, the server); the server may be restarted by a test (same port)."""
    pg = lab.start_postgres()
    root = tmp_path_factory.mktemp("lab")
    servers = {}
    try:
        servers["server"] = lab.start_server(pg, root)
        yield pg, servers
    finally:
        if "server" in servers:
            servers["server"].stop()  # the one running now: a test may have restarted it
        lab.remove_postgres(pg)


@pytest.fixture
def ablate(tmp_path, store):
    runner = Ablate(tmp_path)
    runner.env["ABLATE_LEASE_TIMEOUT"] = "6"
    # A server that is gone is given up on in seconds, not MLflow's minutes of retries.
    runner.env |= {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
    runner.env["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    yield runner
    runner.close()


def _client(server, monkeypatch, user=lab.USER, password=lab.PASSWORD) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    return MlflowClient(server.url)


def _runs(client: MlflowClient, name: str) -> list:
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id]) if exp else []


def _trials(client: MlflowClient, name: str) -> dict:
    return {
        r.data.tags["ablate.trial_key"]: r
        for r in _runs(client, name)
        if r.data.tags.get("ablate.role") == "trial"
    }


def _no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_a_study_through_the_lab_server_end_to_end(ablate, tmp_path, store, monkeypatch):
    """run, Ctrl-C (SIGTERM), resume, the server gone part-way, resume, report, ui, rm; the
    runs equal a SQLite store's run of the same study in params and metric counts."""
    pg, servers = store
    server = servers["server"]
    (tmp_path / "s.yaml").write_text(study_yaml("labrun", ITERATIONS, EVERY))
    ablate.env |= server.env()
    args = ["run", "s.yaml", "--quiet", "--max-concurrent", "1", "--storage", str(tmp_path / "r")]
    args += ["--tracking-uri", server.url]
    client = _client(server, monkeypatch)

    def evaluations() -> int:
        return sum(
            len(client.get_metric_history(r.info.run_id, "train/error"))
            for r in _trials(client, "labrun").values()
        )

    # 1. interrupted part-way: exit 130, the lease released
    first = ablate.start(*args, tag="first")
    wait_for(lambda: evaluations() >= 2, 300, "two evaluations on the server", first)
    os.kill(first.pid, signal.SIGTERM)
    code, output = ablate.finish(first, 120, tag="first")
    assert code == 130, output[-3000:]
    claims = client.search_runs(
        [client.get_experiment_by_name("labrun").experiment_id], "tags.`ablate.lease` = 'claim'"
    )
    assert claims == []

    # 2. resumed, and the server goes away part-way: one line, exit 2
    before = evaluations()
    second = ablate.start(*args, tag="second")
    wait_for(lambda: evaluations() >= before + 2, 300, "two more evaluations", second)
    server.stop()
    code, output = ablate.finish(second, 180, tag="second")
    assert code == 2, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("ablate: error:")]
    assert len(errors) == 1 and "stopped answering" in errors[0], output[-3000:]
    assert "Traceback" not in output

    # 3. the server back on its port: the study resumes (--wait: the driver that lost the
    # server could not release its lease, which expires) and ends
    server = servers["server"] = lab.start_server(pg, server.root, int(server.url.rsplit(":")[-1]))
    third = ablate.start(*args, "--wait", tag="third")
    code, output = ablate.finish(third, 400, tag="third")
    assert code == 0, output[-3000:]
    trials = _trials(client, "labrun")
    assert len(trials) == 2
    for run in trials.values():
        assert run.data.tags["ablate.status"] == "finished"
        assert_steps_once(client, run, ITERATIONS, EVERY)

    # the same study in a SQLite file: the same params and metric counts
    db = tmp_path / "m.db"
    sqlite_args = [a if a != server.url else f"sqlite:///{db}" for a in args]
    sqlite_args[sqlite_args.index(str(tmp_path / "r"))] = str(tmp_path / "r2")
    code, output = ablate.finish(ablate.start(*sqlite_args, tag="sqlite"), 400, tag="sqlite")
    assert code == 0, output[-3000:]
    local = _trials(MlflowClient(f"sqlite:///{db}"), "labrun")
    assert set(local) == set(trials)
    for key, run in trials.items():
        assert run.data.params == local[key].data.params
        for metric in run.data.metrics:
            there = client.get_metric_history(run.info.run_id, metric)
            here = MlflowClient(f"sqlite:///{db}").get_metric_history(
                local[key].info.run_id, metric
            )
            assert len(there) == len(here), (key, metric)

    # report, show and ui against the server; no password anywhere
    cli = ["--tracking-uri", server.url]
    code, output = ablate.finish(
        ablate.start("report", "s.yaml", *cli, tag="report"), 300, "report"
    )
    assert code == 0 and (tmp_path / "ablate-reports/labrun/index.html").exists(), output[-2000:]
    _no_secret((tmp_path / "ablate-reports/labrun/index.html").read_text())
    code, output = ablate.finish(ablate.start("ui", "labrun", *cli, tag="ui"), 120, "ui")
    exp_id = client.get_experiment_by_name("labrun").experiment_id
    assert code == 0 and f"{server.url}/#/experiments/{exp_id}" in output, output[-2000:]
    for run in _runs(client, "labrun"):
        _no_secret(repr(run.data.params) + repr(run.data.tags))
    for tag in ("first", "second", "third", "report", "ui"):
        _no_secret((tmp_path / f"{tag}.out").read_text() + (tmp_path / f"{tag}.err").read_text())

    # rm: the study leaves the server
    rm = ablate.start("rm", "s.yaml", *cli, "--storage", str(tmp_path / "r"), "--yes", tag="rm")
    code, output = ablate.finish(rm, 120, "rm")
    assert code == 0, output[-2000:]
    assert client.get_experiment_by_name("labrun") is None


def test_a_wrong_password_or_no_permission_is_one_line_and_writes_nothing(
    ablate, tmp_path, store, monkeypatch
):
    _, servers = store
    server = servers["server"]
    (tmp_path / "s.yaml").write_text(study_yaml("labauth", 40, EVERY, seeds="[0]"))
    args = ["run", "s.yaml", "--quiet", "--tracking-uri", server.url]

    ablate.env |= server.env(lab.USER, "not-the-password")
    code, output = ablate.finish(ablate.start(*args, tag="wrong"), 180, "wrong")
    assert code == 2 and output.strip().count("\n") == 0, output[-2000:]
    assert "refused the login (user 'lab'" in output and "not-the-password" not in output
    admin = _client(server, monkeypatch, lab.ADMIN, lab.ADMIN_PASSWORD)
    assert admin.get_experiment_by_name("labauth") is None

    # the study is lab's; reader (default permission READ) may look, not run it
    owner = _client(server, monkeypatch)
    exp_id = owner.create_experiment("labauth")
    ablate.env |= server.env(lab.READER, lab.READER_PASSWORD)
    code, output = ablate.finish(ablate.start(*args, tag="reader"), 180, "reader")
    assert code == 2 and output.strip().count("\n") == 0, output[-2000:]
    assert "user 'reader' has no permission" in output
    assert owner.search_runs([exp_id]) == []
    _no_secret(output)


def test_a_database_that_is_down_is_one_line_before_anything(ablate, tmp_path, store):
    """PostgreSQL stopped: `--tracking-uri postgresql://...` straight to it and the server
    over it are both refused in one line; started again, the same URI works."""
    pg, servers = store
    (tmp_path / "s.yaml").write_text(study_yaml("labdown", 40, EVERY, seeds="[0]"))
    args = ["run", "s.yaml", "--quiet", "--storage", str(tmp_path / "r")]
    pg.stop()
    try:
        direct = ablate.start(*args, "--tracking-uri", pg.uri(), tag="direct")
        code, output = ablate.finish(direct, 180, "direct")
        assert code == 2 and output.strip().count("\n") == 0, output[-2000:]
        assert "cannot use database postgresql://ablate:***@127.0.0.1" in output
        _no_secret(output)
    finally:
        pg.start()
    started = time.monotonic()
    code, output = ablate.finish(
        ablate.start(*args, "--tracking-uri", pg.uri(), tag="up"), 400, "up"
    )
    assert code == 0, output[-3000:]
    assert f"Store: postgresql://ablate:***@127.0.0.1:{pg.port}/mlflow" in output
    _no_secret(output)
    print(f"a one-trial study straight on PostgreSQL: {time.monotonic() - started:.0f} s")
    assert Path(tmp_path / "r" / "labdown").is_dir()
