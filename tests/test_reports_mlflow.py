"""Reports built from a real MLflow store (SQLite file) and opened in a real Chromium.

The store is filled once per module by tests/report_fixtures.py, which follows
docs/tracking.md; no part of MLflow is mocked.
"""

import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import report_fixtures as rf

from reports import ReportError, build_report, fetch_study, runfiles
from reports.data import select_trials
from reports.fetch import probe_server, seed_spread

CHROMIUM = Path("/usr/bin/chromium")
UI = "http://127.0.0.1:5000"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{(root / 'mlflow.db').resolve()}"
    legacy = rf.complete_study()
    # A store written before `ablate.settings`: params typed by the documented fallback.
    legacy.name, legacy.settings_tag = "legacy@smoke", False
    studies = (rf.complete_study(), rf.partial_study(), rf.failed_study(), legacy)
    specs = {s.name: s for s in studies}
    for spec in specs.values():
        rf.write_study(uri, spec, artifact_root=root / "artifacts")
    return {"uri": uri, "root": root, "specs": specs}


@pytest.fixture(scope="module")
def built(store):
    """Every report, built once through the public entry point."""
    out = store["root"] / "reports"
    pages = {
        name: build_report(name, store["uri"], out / name, mlflow_ui_url=UI)
        for name in store["specs"]
    }
    return pages


def _by_trial(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["trial_key", "status"]).reset_index(drop=True)


def test_fetch_reads_what_the_contract_says(store):
    spec = store["specs"]["shortcut_types"]
    data = fetch_study("shortcut_types", store["uri"])
    expected = rf.study_data(spec)
    info = data.info
    assert info.question == spec.question and info.dataset == "cifar10"
    assert info.reference == {"shortcut": "A"} and info.factors == ["depth", "shortcut"]
    assert info.seeds == [0, 1, 2] and info.expected_trials == 21
    assert info.parent_status == "RUNNING" and info.fingerprint.startswith("sha256:")
    assert info.settings == rf.SETTING_TYPES and info.replication == "fixed seeds"
    assert (info.full_dataset, info.full_iterations) == ("cifar10", 4000)
    assert (info.git_commit, info.git_dirty) == (rf.COMMIT, "false")
    got, want = _by_trial(data.runs), _by_trial(expected.runs)
    columns = ["role", "arm", "trial_key", "status", "mlflow_status", "reason", "depth"]
    columns += ["shortcut", "seed", "lr", "precision", "label_smoothing", "plateau_patience"]
    columns += ["git_commit", "git_dirty", "versions", "device", "data_digest"]
    assert got[columns].to_dict("records") == want[columns].to_dict("records")
    assert set(got["status"]) == {
        "finished", "diverged", "failed", "running", "interrupted", "pending"
    }  # fmt: skip
    assert got["diverged_at"].fillna(-1).tolist() == want["diverged_at"].fillna(-1).tolist()
    for key in ("train/error", "val/error", "test/error", "wall_time_s", "images_per_s"):
        np.testing.assert_allclose(got[key].to_numpy(float), want[key].to_numpy(float))
    # Typed by `ablate.settings`: an int is an int, a bool a bool, a float the setting the
    # fallback does not know is a float, and the text None is unset.
    assert got["depth"].map(type).eq(int).all() and got["bottleneck"].map(type).eq(bool).all()
    assert got["label_smoothing"].map(type).eq(float).all()
    assert got["plateau_patience"].isna().all()
    # The parent's mean_test_error/<arm> metrics are not read as anything.
    assert not [c for c in data.runs.columns if c.startswith("mean_")]
    client = mlflow.MlflowClient(store["uri"])
    parent = client.get_run(info.parent_run_id)
    assert parent.data.params["full_dataset"] == "cifar10"


def test_store_without_the_settings_tag_is_typed_by_the_fallback(store, built):
    data = fetch_study("legacy@smoke", store["uri"])
    assert data.info.settings == {}
    runs = data.runs
    assert runs["depth"].map(type).eq(int).all() and runs["lr"].map(type).eq(float).all()
    # Unknown to the fallback: left as text, and not a setting.
    assert runs["label_smoothing"].eq("0.0").all()
    trials = pd.read_csv(store["root"] / "reports" / "legacy@smoke" / "trials.csv")
    assert "depth" in trials.columns and "label_smoothing" not in trials.columns


def test_fetch_histories_and_artifacts(store):
    spec = store["specs"]["shortcut_types"]
    data = fetch_study("shortcut_types", store["uri"])
    expected = rf.study_data(spec)
    keys = data.runs.set_index("run_id")["trial_key"]
    want_keys = expected.runs.set_index("run_id")["trial_key"]
    statuses = data.runs.set_index("run_id")["status"]
    want_statuses = expected.runs.set_index("run_id")["status"]

    def keyed(history, names, status):
        frame = history.assign(trial=history["run_id"].map(names), st=history["run_id"].map(status))
        return frame.sort_values(["trial", "st", "key", "step"])[
            ["trial", "st", "key", "step", "value"]
        ]

    got = keyed(data.history, keys, statuses).reset_index(drop=True)
    want = keyed(expected.history, want_keys, want_statuses).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    finished = data.runs[(data.runs["status"] == "finished") & (data.runs["role"] == "trial")]
    assert set(data.layer_responses["run_id"]) == set(finished["run_id"])
    assert not data.lr_traces.empty
    settings = data.runs.set_index("run_id")
    for run_id, trace in data.lr_traces.groupby("run_id"):
        run = settings.loc[run_id]
        want_trace = rf.lr_trace(
            {k: run[k] for k in ("iterations", "lr", "lr_policy", "warmup", "warmup_lr")}
        )
        assert trace["iteration"].tolist() == want_trace["iteration"]
        assert trace["lr"].tolist() == pytest.approx(want_trace["lr"])
    assert data.notes == []


def test_seed_spread_is_the_pooled_within_arm_sd_of_finished_trials(store):
    spec = store["specs"]["degradation@smoke"]
    by_arm: dict[str, list[float]] = {}
    for trial in spec.trials:
        settings = rf.resolved(trial)
        by_arm.setdefault(rf.arm_label(settings, spec.factors), []).append(
            100 * rf.final_errors(settings)[1]
        )
    squares = sum(((np.array(v) - np.mean(v)) ** 2).sum() for v in by_arm.values())
    df = sum(len(v) - 1 for v in by_arm.values())
    sd, got_df = seed_spread("degradation@smoke", store["uri"])
    assert got_df == df == 8 and sd == pytest.approx(math.sqrt(squares / df))
    assert seed_spread("shortcut_none_vs_a", store["uri"]) is None  # nothing finished
    with pytest.raises(ReportError, match="no study named nope"):
        seed_spread("nope", store["uri"])


def test_bulk_and_per_run_histories_agree(store):
    # The fast SQL path (reports.runfiles._bulk_histories) must equal the public API's answer.
    client = mlflow.MlflowClient(store["uri"])
    data = fetch_study("shortcut_types", store["uri"])
    run_ids = list(data.runs.loc[data.runs["role"] == "trial", "run_id"])
    bulk = runfiles._bulk_histories(client, run_ids)
    assert bulk is not None and len(bulk) > 0
    assert sorted(bulk) == sorted(runfiles._per_run_histories(client, run_ids, remote=False))


def test_report_files_and_csv(store, built):
    index = built["shortcut_types"]
    folder = index.parent
    assert index.name == "index.html" and index.stat().st_size > 4_000_000  # plotly.js inside
    arms = pd.read_csv(folder / "arms.csv")
    trials = pd.read_csv(folder / "trials.csv")
    problems = pd.read_csv(folder / "problems.csv")
    effects = pd.read_csv(folder / "effects.csv")
    assert len(arms) == 6 and len(trials) == 18
    assert effects["term"].tolist() == ["depth", "shortcut", "depth × shortcut"]
    assert "| depth | shortcut | test error % |" in (folder / "comparison.md").read_text()
    assert "\\toprule" in (folder / "comparison.tex").read_text()
    # Reproducibility per trial, in the CSV.
    ran = trials[trials["status"] != "pending"]
    assert (ran["git_commit"] == rf.COMMIT).all() and (ran["device"] == rf.DEVICE).all()
    assert (ran["data_digest"] == rf.data_digest("cifar10")).all()
    assert (ran["precision"] == "fp32").all() and not ran["git_dirty"].any()
    assert sorted(problems["status"]) == ["diverged", "failed", "failed (retried)"]
    row = arms.set_index("arm").loc["depth=20 shortcut=A"]
    data = fetch_study("shortcut_types", store["uri"])
    done = select_trials(data.runs)
    done = done[(done["arm"] == "depth=20 shortcut=A") & (done["status"] == "finished")]
    assert row["test_error_pct_mean"] == pytest.approx(100 * done["test/error"].mean())
    assert row["paper_test_error_pct"] == 8.75


def test_report_is_logged_to_the_parent_run(store, built):
    client = mlflow.MlflowClient(store["uri"])
    for name in store["specs"]:
        parent = fetch_study(name, store["uri"]).info.parent_run_id
        logged = {Path(f.path).name for f in client.list_artifacts(parent, "report")}
        assert logged == {
            "index.html", "arms.csv", "trials.csv", "problems.csv", "effects.csv",
            "comparison.md", "comparison.tex",
        }  # fmt: skip
    local = built["degradation@smoke"].read_text()
    parent = fetch_study("degradation@smoke", store["uri"]).info.parent_run_id
    copy = client.download_artifacts(parent, "report/index.html", str(store["root"] / "dl"))
    assert Path(copy).read_text() == local


def test_partial_study_is_stated_on_the_page(built):
    partial = built["shortcut_types"].read_text()
    complete = built["degradation@smoke"].read_text()
    assert "<title>[PARTIAL]" in partial and 'id="partial-banner"' in partial
    assert "3 of 21 planned trials have no run yet" in partial
    assert 'id="partial-banner"' not in complete and 'id="complete-banner"' in complete


def _without_scripts(page: str) -> str:
    return re.sub(r"<(script|style)\b.*?</\1>", "", page, flags=re.S)


def test_all_failed_study_reads_red_with_its_reason(built):
    page = _without_scripts(built["shortcut_none_vs_a"].read_text())
    assert 'id="failed-banner"' in page and "Complete" not in page
    assert "<title>[NO RESULTS]" in page
    assert "No trial finished: 8 of 8 failed." in page
    assert f"<strong>8 trials:</strong> {rf.DATA_ERROR}" in page


def test_run_links_use_the_experiment_and_run_ids(store, built):
    data = fetch_study("degradation@smoke", store["uri"])
    run_id = data.runs["run_id"].iloc[0]
    url = f"{UI}/#/experiments/{data.info.experiment_id}/runs/{run_id}"
    url += "?workflowType=machine_learning"  # MLflow 3's UI: model training, not GenAI
    assert f'href="{url}"' in built["degradation@smoke"].read_text()


def test_unknown_study_names_the_ones_there(store):
    with pytest.raises(ReportError) as error:
        fetch_study("nope", store["uri"])
    message = str(error.value)
    assert message.startswith(f"no study named nope in store {store['uri']}; studies there:")
    assert "degradation@smoke" in message and "shortcut_types" in message
    assert "\n" not in message and isinstance(error.value, ValueError)


def test_missing_store_is_an_error_and_not_created(tmp_path):
    path = tmp_path / "typo.db"
    with pytest.raises(ReportError, match="no MLflow store at"):
        build_report("x", f"sqlite:///{path}", tmp_path / "out")
    assert not path.exists()


def test_experiment_without_ablate_runs(store):
    client = mlflow.MlflowClient(store["uri"])
    location = (store["root"] / "artifacts" / "hand_made").as_uri()
    client.create_run(client.create_experiment("hand_made", artifact_location=location))
    with pytest.raises(ReportError, match="has no ablate runs"):
        fetch_study("hand_made", store["uri"])


def test_default_output_folder_and_expected_trials(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    index = build_report("degradation@smoke", store["uri"], expected_trials=30, log_to_mlflow=False)
    assert index.resolve() == (tmp_path / "ablate-reports" / "degradation@smoke" / "index.html")
    assert "18 of 30 planned trials have no run yet" in index.read_text()


def test_store_that_is_not_a_database(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("not a database")
    with pytest.raises(ReportError, match="cannot read MLflow store .*not a database"):
        fetch_study("x", f"sqlite:///{path}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_fails_fast():
    started = time.monotonic()
    with pytest.raises(ReportError, match="cannot reach MLflow server http://127.0.0.1:"):
        fetch_study("x", f"http://127.0.0.1:{_free_port()}")
    # The same probe, public for `ablate run`, which checks before it writes anything.
    with pytest.raises(ReportError, match="cannot reach MLflow server"):
        probe_server(f"http://127.0.0.1:{_free_port()}")
    probe_server("sqlite:///anything.db")  # only servers are probed
    assert time.monotonic() - started < 10  # MLflow's own retries would take minutes


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 that proxies artifacts (mlflow-artifacts:/ URIs),
    the way a team's tracking server is usually run."""
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with open(root / "server.log", "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=log, cwd=root, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"mlflow server did not start:\n{(root / 'server.log').read_text()}"
                    )
                time.sleep(0.5)
        yield {"url": url, "root": root}
    finally:
        # The server forks a uvicorn worker, so the whole process group it leads goes.
        # SIGKILL: on SIGTERM uvicorn waits for the client's keep-alive connections to
        # close, which in a test process they never do; the store is a throwaway file.
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_report_through_a_tracking_server(mlflow_server):
    url = mlflow_server["url"]
    spec = rf.complete_study()
    # Small: every call goes over HTTP. Two arms, two seeds.
    spec.trials = [t for t in spec.trials if t.settings["seed"] < 2 and t.settings["depth"] == 8]
    spec.seeds, spec.expected_trials = [0, 1], len(spec.trials)
    rf.write_study(url, spec)  # artifacts go through the server's proxy
    data = fetch_study(spec.name, url)
    assert data.runs["arm"].nunique() == 2 and data.notes == []
    # A server has no bulk history call in the client: the threaded per-run path ran.
    assert runfiles._bulk_histories(mlflow.MlflowClient(url), list(data.runs["run_id"])) is None
    assert len(data.history) == 2 * len(data.runs) * 6  # train and test, 6 evaluations
    assert data.runs.iloc[0]["run_id"] and not data.layer_responses.empty
    assert set(data.layer_responses["run_id"]) == set(data.runs["run_id"])
    index = build_report(spec.name, url, mlflow_server["root"] / "out", mlflow_ui_url=url)
    page = index.read_text()
    assert 'id="complete-banner"' in page and f"{url}/#/experiments/" in page
    client = mlflow.MlflowClient(url)
    logged = {Path(f.path).name for f in client.list_artifacts(data.info.parent_run_id, "report")}
    assert "index.html" in logged


def _sections(name: str) -> list[str]:
    """What each page must show, as CSS selectors (the new sections included)."""
    if name == "shortcut_none_vs_a":
        return ["#failed-banner", "#failure-reasons", "#problems", "#what-ran"]
    common = ["#what-ran", "#fixed-settings", "#comparison", "#comparison-legend", "#effects"]
    common += ["#cost-macs", "#cost-params"]
    if name == "shortcut_types":
        return [*common, "#partial-banner", "#effects-table", "#shortcut-depth-finding"]
    return [*common, "#complete-banner", "#reduced-notice", "#effects-table"]


def _distinct_colors(png: bytes) -> int:
    from io import BytesIO

    from PIL import Image

    image = Image.open(BytesIO(png)).convert("RGB")
    return len(image.getcolors(maxcolors=1 << 24))


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_pages_render_in_headless_chromium(store, built):
    from playwright.sync_api import sync_playwright

    shots = store["root"] / "screenshots"
    shots.mkdir(exist_ok=True)
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            for name, index in built.items():
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                failed = name == "shortcut_none_vs_a"
                problems, fetched = [], []
                page.on("console", lambda m, out=problems: m.type == "error" and out.append(m.text))
                page.on("pageerror", lambda e, out=problems: out.append(str(e)))
                # The page must not reach for anything but itself: any other request fails.
                page.route(
                    "**/*",
                    lambda route, seen=fetched: (
                        route.continue_()
                        if route.request.url.startswith("file:")
                        else (seen.append(route.request.url), route.abort())
                    ),
                )
                page.goto(index.as_uri(), wait_until="load")
                expected = page.locator(".plotly-graph-div").count()
                page.wait_for_function(
                    f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {expected}"
                )
                plots = page.locator(".js-plotly-plot")
                # A study where every trial failed has nothing to plot.
                assert plots.count() == expected >= (0 if failed else 8), name
                for i in range(expected):
                    assert plots.nth(i).locator(".main-svg").count() >= 1, (name, i)
                    # Drawn: at least one trace has marks in it.
                    assert plots.nth(i).locator(".scatterlayer .trace, .boxlayer .trace").count()
                for selector in _sections(name):
                    assert page.locator(selector).first.is_visible(), (name, selector)
                png = page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
                assert problems == [], name
                assert fetched == [], name
                assert _distinct_colors(png) > (100 if failed else 500), name
                page.close()
        finally:
            browser.close()


def test_store_values_are_finite_where_the_contract_says(store):
    # Guards the fixture writer itself: a NaN there would make the tests above vacuous.
    data = fetch_study("degradation@smoke", store["uri"])
    assert data.runs["test/error"].map(math.isfinite).all()
    assert data.info.seeds == [0, 1, 2]  # the parent's plan, decoded
