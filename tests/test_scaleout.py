"""Scale-out for real: a study logging over HTTP to a real `mlflow server`, `ablate ui` bound
to loopback only, a study running on a real Ray cluster started with `ray start`; and
determinism: the same study and seeds give the same metrics in two fresh runs on CPU.

Servers listen on 127.0.0.1 at free ports; every process a test starts is ended by pid.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient
from test_faults import Proc, alive, attempts, kill_pids, procs, tree, wait_for

from ablations.cli import main

BIN = Path(sys.executable).parent

SMOKE = """\
name: scaleout
question: Do trials run and log the same way on a server and on a cluster?
dataset: digits
scientific:
  shortcut: [none, A]
fixed: {depth: 8, iterations: 20, eval_every: 10, batch_size: 32}
seeds: [0]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "ABLATE_STORAGE")
    }
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", **extra}


def start(cmd: list[str], cwd: Path, log: str, env: dict | None = None) -> subprocess.Popen:
    with open(cwd / f"{log}.log", "w") as out:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env or clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen, family: dict[int, Proc]) -> None:
    """SIGTERM to the process group we started, then SIGKILL to whatever of it is left."""
    family = {**family, **tree(proc.pid)}
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while alive(family) and time.monotonic() < deadline:
        time.sleep(0.2)
    kill_pids(family)


def http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def listeners(port: int) -> list[str]:
    """Local addresses of the TCP sockets listening on port, from `ss`."""
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, timeout=10).stdout
    found = []
    for line in out.splitlines():
        local = line.split()[3]
        if local.rsplit(":", 1)[1] == str(port):
            found.append(local)
    return found


# -- a real MLflow server --------------------------------------------------------------


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    artifacts = tmp_path / "server-artifacts"
    cmd = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    proc = start(cmd, tmp_path, "mlflow-server")
    family: dict[int, Proc] = {}
    try:
        url = f"http://127.0.0.1:{port}"

        def healthy():
            family.update(tree(proc.pid))
            return http_ok(f"{url}/health")

        wait_for(healthy, 120, "mlflow server /health", proc)
        yield url, artifacts
    finally:
        stop(proc, family)


@pytest.mark.slow
def test_study_logs_over_http_to_a_real_mlflow_server(
    ray_local, mlflow_server, tmp_path, monkeypatch, capsys
):
    url, artifacts = mlflow_server
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (work / "s.yaml").write_text(SMOKE)
    code = main(["run", "s.yaml", "--quiet", "--tracking-uri", url, "--storage", "res"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"Store: {url}" in out
    assert not (work / "mlflow.db").exists() and not (work / "mlruns").exists()

    client = MlflowClient(url)
    exp = client.get_experiment_by_name("scaleout")
    runs = client.search_runs([exp.experiment_id], "tags.`ablate.role` = 'trial'")
    assert sorted(r.data.tags["ablate.trial_key"] for r in runs) == [
        "shortcut=A seed=0",
        "shortcut=none seed=0",
    ]
    for run in runs:
        assert (run.info.status, run.data.tags["ablate.status"]) == ("FINISHED", "finished")
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # served by the server
        history = client.get_metric_history(run.info.run_id, "val/error")
        assert [m.step for m in history] == [10, 20]
        assert 0 <= history[-1].value <= 1
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"trial_config.json", "lr_trace.json", "layer_responses.json"} <= names
        dst = tmp_path / run.info.run_id
        dst.mkdir()
        path = client.download_artifacts(run.info.run_id, "trial_config.json", str(dst))
        assert json.loads(Path(path).read_text())["shortcut"] == run.data.params["shortcut"]
    # The artifacts went through the server into its destination folder.
    stored = sorted(p.parent.parent.name for p in artifacts.rglob("lr_trace.json"))
    assert stored == sorted(r.info.run_id for r in runs)


# -- ablate ui --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ablate_ui_on_loopback_stops_whole_and_refuses_a_busy_port(tmp_path, sig):
    """`ablate ui` serves on 127.0.0.1 only; a second one on the same port is a one-line
    error (exit 2); a signal to the `ablate` process alone (not its group) stops every
    process of the MLflow server it started and frees the port."""
    db = tmp_path / "ui.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()  # a store (empty) to serve
    port = free_port()
    cmd = [str(BIN / "ablate"), "ui", "--tracking-uri", f"sqlite:///{db}", "--port", str(port)]
    proc = start(cmd, tmp_path, "ui")
    family: dict[int, Proc] = {}
    try:

        def answering():
            family.update(tree(proc.pid))
            return http_ok(f"http://127.0.0.1:{port}/")

        wait_for(answering, 120, "ablate ui to answer", proc)
        family.update(tree(proc.pid))
        bound = listeners(port)
        assert bound and set(bound) == {f"127.0.0.1:{port}"}, bound  # not 0.0.0.0, *, [::]
        host_ips = subprocess.run(
            ["hostname", "-I"], capture_output=True, text=True, timeout=10
        ).stdout.split()
        for ip in [a for a in host_ips if re.fullmatch(r"[\d.]+", a) and a != "127.0.0.1"]:
            with socket.socket() as s, pytest.raises(OSError):
                s.settimeout(3)
                s.connect((ip, port))  # the machine's other addresses are refused
        servers = {p: t for p, t in alive(family).items() if "mlflow" in t and p != proc.pid}
        assert servers  # the server it started, in processes of its own

        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert second.returncode == 2
        assert second.stderr.strip() == (
            f"ablate: error: port {port} on 127.0.0.1 is in use (another `ablate ui` or "
            "server?); stop it or choose another with --port"
        )

        # Every process of the server: all in the sessions of what ablate started.
        sessions = _sessions(family)
        members = {**family, **{p: v for p, v in procs().items() if _session(p) in sessions}}
        os.kill(proc.pid, sig)  # the ablate process alone
        assert proc.wait(timeout=30) == 130
        wait_for(lambda: not alive(members), 30, "every server process to exit")
        assert not listeners(port)
    finally:
        stop(proc, family)


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except ProcessLookupError:
        return None


def _sessions(family: dict[int, Proc]) -> set[int]:
    return {sid for sid in (_session(p) for p in alive(family)) if sid is not None}


# -- a real Ray cluster -----------------------------------------------------------------


@pytest.fixture
def ray_cluster():
    """`ray start --head` on 127.0.0.1 with its own temp dir. Stopped by pid: `ray stop`
    would end every Ray process on the machine (this session's local Ray among them)."""
    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # short: Ray's socket paths
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--port",
        str(port),
        "--node-ip-address",
        "127.0.0.1",
        "--num-cpus",
        "2",
        "--include-dashboard=false",
        "--disable-usage-stats",
        "--temp-dir",
        str(temp),
    ]
    members: dict[int, Proc] = {}

    def cluster() -> dict[int, Proc]:
        """The cluster's processes: those naming its temp dir, and their descendants."""
        found = {}
        for pid, proc in procs().items():
            if str(temp) in proc.title:
                found.update(tree(pid))
        members.update(found)
        return found

    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=180, env=clean_env(), cwd=temp
        )
        cluster()
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        yield f"127.0.0.1:{port}", temp, cluster
    finally:
        cluster()
        for pid in alive(members):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while alive(members) and time.monotonic() < deadline:
            time.sleep(0.2)
        kill_pids(members)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_study_runs_its_trials_on_a_real_ray_cluster(ray_cluster, tmp_path):
    address, temp, cluster = ray_cluster
    (raylet,) = [p for p, v in cluster().items() if "raylet/raylet" in v.title]
    (tmp_path / "s.yaml").write_text(SMOKE.replace("iterations: 20", "iterations: 60"))
    db, storage = tmp_path / "m.db", tmp_path / "res"
    cmd = [str(BIN / "ablate"), "run", "s.yaml", "--quiet", "--address", address]
    cmd += ["--tracking-uri", f"sqlite:///{db}", "--storage", str(storage)]
    proc = start(cmd, tmp_path, "run")
    workers: dict[int, int] = {}  # trial worker pid -> parent pid
    own_ray: set[str] = set()  # Ray daemons the driver started itself (must stay empty)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            table = procs()
            for pid, p in table.items():
                if p.title.startswith("ray::ImplicitFunc"):
                    workers.setdefault(pid, p.ppid)
            own_ray |= {
                p.title.split()[0]
                for p in tree(proc.pid).values()
                if "gcs_server" in p.title or "raylet" in p.title
            }
            time.sleep(0.1)
        code = proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            kill_pids(tree(proc.pid))
    output = (tmp_path / "run.log").read_text()
    assert code == 0, output[-3000:]
    assert not own_ray, own_ray
    assert workers and set(workers.values()) == {raylet}, (workers, raylet)

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("scaleout")
    runs = client.search_runs([exp.experiment_id], "tags.`ablate.role` = 'trial'")
    assert len(runs) == 2
    for run in runs:
        assert (run.info.status, run.data.tags["ablate.status"]) == ("FINISHED", "finished")
        key = run.data.tags["ablate.trial_key"]
        (attempt,) = attempts(storage, key)
        assert attempt["pid"] in workers  # Tune's record of the trial: a cluster worker
    # The driver registered with the cluster: its core log sits in the cluster's session.
    assert list(temp.glob(f"session_*/logs/python-core-driver-*_{proc.pid}.log"))


# -- determinism ------------------------------------------------------------------------

DETERMINISM = textwrap.dedent(
    """\
    name: determinism
    question: Do the same study and seeds give the same metrics in two fresh runs?
    dataset: digits
    scientific:
      shortcut: [none, A]
    fixed: {depth: 8, iterations: 20, eval_every: 10, batch_size: 32}
    seeds: [0]
    """
)
TIMING = {"images_per_s", "wall_time_s"}


def _metrics(db: Path) -> dict[str, dict[str, list]]:
    """trial key -> metric key -> [(step, value)] of every metric but the timings."""
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("determinism")
    out = {}
    for run in client.search_runs([exp.experiment_id], "tags.`ablate.role` = 'trial'"):
        out[run.data.tags["ablate.trial_key"]] = {
            key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            for key in run.data.metrics
            if key not in TIMING
        }
    return out


def test_same_study_and_seeds_give_identical_metrics_in_fresh_runs(
    ray_local, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(DETERMINISM)
    results = []
    for fresh in ("one", "two"):
        db = tmp_path / f"{fresh}.db"
        code = main(
            ["run", "s.yaml", "--quiet", "--tracking-uri", f"sqlite:///{db}", "--storage", fresh]
        )
        assert code == 0, capsys.readouterr()
        results.append(_metrics(db))
    one, two = results
    assert len(one) == 2
    for key, metrics in one.items():
        assert {"train/loss", "train/error", "val/error", "test/loss", "lr"} <= set(metrics)
        assert all(len(history) == 2 for history in metrics.values()), (key, metrics)
    assert one == two
    # Not vacuous: the compared numbers differ where the settings differ.
    assert one["shortcut=A seed=0"]["train/loss"] != one["shortcut=none seed=0"]["train/loss"]


# -- checkpoints in a bucket ------------------------------------------------------------

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "ablate-test",
    "AWS_SECRET_ACCESS_KEY": "ablate-test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture
def s3_bucket(tmp_path):
    """A real S3 API on 127.0.0.1 (moto's stand-alone server, from PyPI) with an empty
    bucket; yields the pyarrow URI of a folder in it."""
    import pyarrow.fs

    port = free_port()
    proc = start([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], tmp_path, "s3")
    family: dict[int, Proc] = {}
    try:

        def up():
            family.update(tree(proc.pid))
            return http_ok(f"http://127.0.0.1:{port}/")

        wait_for(up, 60, "the S3 server", proc)
        uri = f"s3://ablate-test/results?endpoint_override=127.0.0.1:{port}&scheme=http"
        os.environ.update(S3_ENV)
        maker, _ = pyarrow.fs.FileSystem.from_uri(uri + "&allow_bucket_creation=true")
        maker.create_dir("ablate-test")
        fs, _ = pyarrow.fs.FileSystem.from_uri(uri)
        yield uri, fs
    finally:
        for key in S3_ENV:
            os.environ.pop(key, None)
        stop(proc, family)


@pytest.mark.slow
def test_checkpoints_live_in_a_bucket_and_a_rerun_resumes_from_them(s3_bucket, tmp_path):
    """`--storage s3://...`: no checkpoint touches the local disk; a study stopped
    part-way resumes, in a fresh `ablate run`, from the checkpoint in the bucket."""
    import pyarrow.fs
    from test_faults import Ablate, assert_steps_once, study_yaml, trial_runs

    uri, fs = s3_bucket
    iterations, every = 120, 20
    (tmp_path / "s.yaml").write_text(study_yaml("bucket", iterations, every, seeds="[0]"))
    db = tmp_path / "m.db"
    runner = Ablate(tmp_path)
    runner.env.update(S3_ENV)
    args = ["run", "s.yaml", "--quiet", "--tracking-uri", f"sqlite:///{db}", "--storage", uri]
    try:
        proc = runner.start(*args, tag="first")

        def checkpointed() -> int:
            runner.watch(proc)
            try:
                (run,) = trial_runs(db, "bucket")[1]
            except Exception:  # noqa: BLE001 - the store or its run is not there yet
                return 0
            path = run.data.tags.get("ablate.checkpoint", "")
            if not path:
                return 0
            with fs.open_input_stream(f"{path}/meta.json") as f:
                at = json.loads(f.read())["iteration"]
            return at if 2 * every <= at < iterations - every else 0

        wait_for(checkpointed, 240, "a checkpoint part-way, in the bucket", proc)
        os.kill(proc.pid, signal.SIGTERM)
        code, output = runner.finish(proc, 60, tag="first")
        assert code == 130, output[-3000:]
        (run,) = trial_runs(db, "bucket")[1]
        stopped_at = run.data.tags["ablate.checkpoint"]
        assert stopped_at.startswith("ablate-test/results/bucket/checkpoints/")
        with fs.open_input_stream(f"{stopped_at}/meta.json") as f:
            stopped_iteration = json.loads(f.read())["iteration"]
        in_bucket = fs.get_file_info(pyarrow.fs.FileSelector("ablate-test", recursive=True))
        assert any(i.path.endswith("/state.pt") for i in in_bucket)
        newest = 0  # a checkpoint written while stopping may postdate the store's record
        for info in in_bucket:
            if info.path.endswith("/meta.json"):
                with fs.open_input_stream(info.path) as f:
                    newest = max(newest, json.loads(f.read())["iteration"])
        assert newest >= stopped_iteration
        local = [p for p in tmp_path.rglob("*") if p.name in ("state.pt", "meta.json")]
        assert not local and not (tmp_path / "ablate-results").exists()

        rerun = runner.start(*args, tag="second")
        code, output = runner.finish(rerun, 300, tag="second")
        assert code == 0, output[-3000:]
        client, (run,) = trial_runs(db, "bucket")
        assert (run.info.status, run.data.tags["ablate.status"]) == ("FINISHED", "finished")
        assert int(run.data.tags["ablate.resumed_from"]) == newest
        assert_steps_once(client, run, iterations, every)
    finally:
        runner.close()


# -- the MLflow UI in a real browser ------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_ablate_ui_opens_the_study_as_model_training_in_a_browser(smoke_store, tmp_path):
    """The URL `ablate ui STUDY` prints opens MLflow's runs table of the study (model
    training), not its GenAI view of traces and token costs; the trials are there."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    uri, _, plan, _ = smoke_store
    port = free_port()
    cmd = [str(BIN / "ablate"), "ui", plan.experiment, "--tracking-uri", uri, "--port", str(port)]
    proc = start(cmd, tmp_path, "ui")
    family: dict[int, Proc] = {}
    try:

        def url() -> str | None:
            family.update(tree(proc.pid))
            found = re.search(r"(http://127\.0\.0\.1:\d+/\S+)", (tmp_path / "ui.log").read_text())
            return found.group(1) if found and http_ok(f"http://127.0.0.1:{port}/") else None

        address = wait_for(url, 120, "ablate ui to answer", proc)
        assert "workflowType=machine_learning" in address and "/runs" in address
        args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        args += ["--disable-component-update", "--disable-sync", "--no-first-run"]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(address, wait_until="load")
                # the table fills in after the page loads (later on a busy machine): wait for
                # what is asserted, then read the page
                page.get_by_text("Run Name").first.wait_for(timeout=60_000)
                try:
                    page.get_by_text("5 matching runs").wait_for(timeout=60_000)
                    page.get_by_text(plan.question).first.wait_for(timeout=60_000)
                except PlaywrightTimeout:
                    pass  # the assertions below show what the page says instead
                text = page.inner_text("body")
                page.screenshot(path=str(tmp_path / "mlflow-ui.png"))
            finally:
                browser.close()
        assert "Run Name" in text and "5 matching runs" in text  # the parent and 4 trials
        assert plan.question in text
        assert "Token Usage" not in text and "Cost Breakdown" not in text
    finally:
        stop(proc, family)
