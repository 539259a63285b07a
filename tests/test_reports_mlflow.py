"""Reports built from a real MLflow store (SQLite file) and opened in a real Chromium.

The store is filled once per module by tests/report_fixtures.py, which follows
docs/tracking.md; no part of MLflow is mocked.
"""

import io
import json
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
from report_browser import CHROMIUM, chromium, layout_problems, open_report

from reports import ReportError, build_report, default_out_dir, fetch, fetch_study, load_study
from reports.data import select_trials
from reports.fetch import probe_server

UI = "http://127.0.0.1:5000"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{(root / 'mlflow.db').resolve()}"
    studies = (
        rf.complete_study(),
        rf.partial_study(),
        rf.failed_study(),
        rf.adaptive_study(),
        rf.user_model_study(),
    )
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
    assert info.planned == rf.planned(spec) and len(info.planned) == 7
    assert info.parent_status == "RUNNING" and info.fingerprint.startswith("sha256:")
    assert info.settings == rf.setting_types(spec) and info.replication == "fixed seeds"
    assert info.model == rf.RESNET and info.resnet and info.model_factors == list(rf.RESNET_MODEL)
    assert info.target_ci is None and info.max_seeds is None
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
    # Typed by `ablate.settings`: an int is an int, a bool a bool, a float the setting no
    # list in reports/ knows is a float, and the text None is unset.
    assert got["depth"].map(type).eq(int).all() and got["bottleneck"].map(type).eq(bool).all()
    assert got["bn_batch"].map(type).eq(int).all() and got["macs"].map(type).eq(int).all()
    assert got["label_smoothing"].map(type).eq(float).all()
    assert got["plateau_patience"].isna().all()
    # The parent's mean_test_error/<arm> metrics are not read as anything.
    assert not [c for c in data.runs.columns if c.startswith("mean_")]
    client = mlflow.MlflowClient(store["uri"])
    parent = client.get_run(info.parent_run_id)
    assert parent.data.params["full_dataset"] == "cifar10"


def test_the_plan_is_read_from_the_tags_not_the_first_params(store):
    # Adaptive replication grew the plan from 8 trials (seeds 0, 1; the params) to 13.
    client = mlflow.MlflowClient(store["uri"])
    data = fetch_study("degradation@adaptive", store["uri"])
    params = client.get_run(data.info.parent_run_id).data.params
    assert (params["seeds"], params["expected_trials"]) == ("[0, 1]", "8")
    info = data.info
    assert info.seeds == [0, 1, 2, 3] and info.expected_trials == 13
    assert info.planned["depth=8 shortcut=A"] == [0, 1, 2]
    assert (info.target_ci, info.max_seeds) == (0.3, 4)


def test_a_user_model_is_read_with_its_own_settings(store):
    data = fetch_study("se_gate", store["uri"])
    assert data.info.model == rf.USER_MODEL and not data.info.resnet
    assert data.info.model_factors == ["width", "gate"]
    runs = data.runs
    assert runs["gate"].map(type).eq(bool).all() and runs["width"].map(type).eq(int).all()
    assert "depth" not in runs.columns and "shortcut" not in runs.columns
    assert data.layer_responses.empty and data.notes == []


def _store_with(tmp_path, tags: dict | None = None, param: tuple | None = None) -> str:
    """failed_study() in a store of its own, with these parent tags set (None: deleted)
    and this (name, text) param added to one trial."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = rf.failed_study()
    rf.write_study(uri, spec, artifact_root=tmp_path / "artifacts")
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(spec.name).experiment_id])
    parent = next(r for r in runs if r.data.tags["ablate.role"] == "parent").info.run_id
    for name, value in (tags or {}).items():
        if value is None:
            client.delete_tag(parent, name)
        else:
            client.set_tag(parent, name, value)
    if param:
        trial = next(r for r in runs if r.data.tags["ablate.role"] == "trial").info.run_id
        client.log_param(trial, *param)
    return uri


def test_a_store_written_before_the_contract_is_refused(tmp_path):
    uri = _store_with(tmp_path, tags={"ablate.model": None, "ablate.planned": None})
    with pytest.raises(ReportError) as error:
        fetch_study("shortcut_none_vs_a", uri)
    message = str(error.value)
    assert "lacks the tags ablate.model, ablate.planned" in message and "\n" not in message


def test_a_param_that_does_not_decode_names_its_run_and_text(tmp_path):
    types = {**rf.setting_types(rf.failed_study()), "curriculum": "bool"}
    uri = _store_with(
        tmp_path, tags={"ablate.settings": json.dumps(types)}, param=("curriculum", "sometimes")
    )
    with pytest.raises(ReportError) as error:
        fetch_study("shortcut_none_vs_a", uri)
    assert re.match(
        r"run \w+ \(shortcut=\w+ seed=\d\): param curriculum = 'sometimes' is not a valid bool",
        str(error.value),
    )
    with pytest.raises(ReportError, match="curriculum = 'sometimes'"):
        build_report("shortcut_none_vs_a", uri, tmp_path / "out")


def test_a_param_the_settings_tag_does_not_type_is_text_and_noted(tmp_path):
    uri = _store_with(tmp_path, param=("curriculum", "sometimes"))
    data = fetch_study("shortcut_none_vs_a", uri)
    assert data.runs["curriculum"].dropna().tolist() == ["sometimes"]
    assert data.notes == [
        "params missing from the parent's ablate.settings, read as text: curriculum"
    ]


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


def seed_spread(name: str, uri: str):
    """The seed-to-seed spread the report sizes its comparisons with."""
    from reports import stats
    from reports.data import select_trials

    return stats.seed_spread_of(select_trials(fetch_study(name, uri).runs))


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
    # The fast SQL path (reports.fetch._bulk_histories) must equal the public API's answer.
    client = mlflow.MlflowClient(store["uri"])
    data = fetch_study("shortcut_types", store["uri"])
    run_ids = list(data.runs.loc[data.runs["role"] == "trial", "run_id"])
    bulk = fetch._bulk_histories(client, run_ids)
    assert bulk is not None and len(bulk) > 0
    assert sorted(bulk) == sorted(fetch._per_run_histories(client, run_ids, remote=False))


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
    # Table 6's ResNet-20, trained otherwise: the differences, not the paper's 8.75.
    assert pd.isna(row["paper_test_error_pct"]) and row["paper_source"].endswith("Table 6")
    assert "4,000 iterations, paper 64,000" in row["paper_differences"]


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


def test_added_seeds_are_counted_from_the_tags_on_the_page(built):
    page = _without_scripts(built["degradation@adaptive"].read_text())
    assert "Complete: all 13 planned trials finished." in page
    assert "<dt>Seeds</dt><dd>0, 1, 2, 3 (2 to 4 per arm)</dd>" in page
    assert "(of 13 planned)" in page and "seeds 0, 1, 2, 3 (2 to 4 per arm)." in page
    assert "target not met: ±" in page


def test_a_user_model_gets_its_own_report_without_the_papers(store, built):
    folder = built["se_gate"].parent
    page = _without_scripts(built["se_gate"].read_text())
    arms = pd.read_csv(folder / "arms.csv")
    assert sorted(arms["arm"]) == sorted(
        f"width={w} gate={g}" for w in (16, 32) for g in (False, True)
    )
    assert pd.read_csv(folder / "effects.csv")["term"].tolist() == ["width", "gate", "width × gate"]
    for ident in ("factor-width", "factor-gate", "training-curves", "cost-macs", "cost-params"):
        assert f'id="{ident}"' in page, ident
    assert "<th>paper %</th>" not in page and arms["paper_test_error_pct"].isna().all()
    assert "Table 6" not in page and 'id="degradation"' not in page
    assert 'id="layer-responses"' not in page and "shortcut" not in page
    assert "The paper's finding" not in page


def test_load_study_gives_the_reports_numbers(store, built):
    for name in ("shortcut_types", "degradation@adaptive", "se_gate"):
        study = load_study(name, tracking_uri=store["uri"])
        folder = built[name].parent
        written = pd.read_csv(folder / "arms.csv")
        # The same frame as the file, cell for cell, and its numbers straight from it.
        pd.testing.assert_frame_equal(
            pd.read_csv(io.StringIO(study.arms.to_csv(index=False))), written
        )
        for column in ("test_error_pct_mean", "test_error_pct_ci_low", "p_holm", "mde_pct"):
            np.testing.assert_allclose(study.arms[column].astype(float), written[column])
        trials = pd.read_csv(folder / "trials.csv")
        assert study.trials["trial_key"].tolist() == trials["trial_key"].tolist()
        np.testing.assert_allclose(study.trials["test/error"], trials["test/error"])
        assert study.info == fetch_study(name, store["uri"]).info
    # Curves: every evaluation of every trial, by trial key and seed.
    spec = store["specs"]["se_gate"]
    curves = load_study("se_gate", tracking_uri=store["uri"]).curves
    assert list(curves.columns) == ["trial_key", "arm", "seed", "iteration", "metric", "value"]
    trial = spec.trials[0]
    settings = rf.resolved(trial)
    key = f"{rf.arm_label(settings, spec.factors)} seed={settings['seed']}"
    got = curves[(curves["trial_key"] == key) & (curves["metric"] == "test/error")]
    want = rf.curves(settings)["test/error"]
    assert got["iteration"].tolist() == [s for s, _ in want]
    np.testing.assert_allclose(got["value"], [v for _, v in want])
    with pytest.raises(ReportError, match="no study named nope"):
        load_study("nope", tracking_uri=store["uri"])


def test_load_study_of_a_user_model_has_one_arm_per_combination(store):
    study = load_study("se_gate", tracking_uri=store["uri"])
    assert not study.info.resnet and study.info.model_factors == ["width", "gate"]
    arms = study.arms.set_index(["width", "gate"])
    assert sorted(arms.index) == [(16, False), (16, True), (32, False), (32, True)]
    for (width, gate), row in arms.iterrows():
        settings = {**rf.USER_SETTINGS, **rf.RECIPE, "width": width, "gate": gate}
        assert row["params"] == rf.param_count(settings)
        assert row["test_error_pct_n"] == 3 and row["seeds_planned"] == 3
    assert study.trials["gate"].map(type).eq(bool).all()
    assert set(study.trials["params"]) == {int(p) for p in arms["params"]}


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


def test_default_output_folder(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    index = build_report("degradation@smoke", store["uri"], log_to_mlflow=False)
    assert index.resolve() == (tmp_path / "ablate-reports" / "degradation@smoke" / "index.html")


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
    spec.seeds = [0, 1]
    rf.write_study(url, spec)  # artifacts go through the server's proxy
    data = fetch_study(spec.name, url)
    assert data.runs["arm"].nunique() == 2 and data.notes == []
    # A server has no bulk history call in the client: the threaded per-run path ran.
    assert fetch._bulk_histories(mlflow.MlflowClient(url), list(data.runs["run_id"])) is None
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
    """What each page must show, as CSS selectors."""
    if name == "shortcut_none_vs_a":
        return ["#failed-banner", "#failure-reasons", "#problems", "#what-ran", "#answer"]
    common = ["#answer", "#what-ran", "#fixed-settings", "#comparison", "#comparison-legend"]
    common += ["#effects", "#effects-table", "#cost-macs", "#cost-params", "#arm-costs"]
    if name == "shortcut_types":
        return [*common, "#partial-banner", "#shortcut-depth-finding", "#degradation"]
    if name == "se_gate":
        return [*common, "#complete-banner", "#training-curves", "#factor-width", "#factor-gate"]
    return [*common, "#complete-banner", "#reduced-notice", "#degradation"]


def _distinct_colors(png: bytes) -> int:
    from io import BytesIO

    from PIL import Image

    image = Image.open(BytesIO(png)).convert("RGB")
    return len(image.getcolors(maxcolors=1 << 24))


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_pages_render_in_headless_chromium(store, built):
    shots = store["root"] / "screenshots"
    shots.mkdir(exist_ok=True)
    with chromium() as browser:
        for name, index in built.items():
            failed = name == "shortcut_none_vs_a"
            problems, fetched = [], []
            page = open_report(browser, index, problems, fetched)
            plots = page.locator(".js-plotly-plot")
            # A study where every trial failed has nothing to plot; a user's model has no
            # degradation or layer-response figures.
            assert plots.count() >= (0 if failed else 6 if name == "se_gate" else 8), name
            for i in range(plots.count()):
                assert plots.nth(i).locator(".main-svg").count() >= 1, (name, i)
                # Drawn: at least one trace has marks in it.
                assert plots.nth(i).locator(".scatterlayer .trace, .boxlayer .trace").count()
            for selector in _sections(name):
                assert page.locator(selector).first.is_visible(), (name, selector)
            # At 1400 x 900 the answer is on the first screen and nothing is cut off.
            assert layout_problems(page) == [], name
            png = page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
            assert problems == [], name
            assert fetched == [], name
            assert _distinct_colors(png) > (100 if failed else 500), name
            page.close()


def test_store_values_are_finite_where_the_contract_says(store):
    # Guards the fixture writer itself: a NaN there would make the tests above vacuous.
    data = fetch_study("degradation@smoke", store["uri"])
    assert data.runs["test/error"].map(math.isfinite).all()
    assert data.info.seeds == [0, 1, 2]  # the parent's plan, decoded


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_the_layout_check_sees_what_a_reader_would_miss(tmp_path):
    # The check the pages above pass must fail a page that hides its answer below the
    # fold, scrolls a table sideways and cuts off a plot label.
    import plotly.graph_objects as go

    from reports.html import figure, page, table

    labels = go.Figure(
        go.Scatter(x=[1, 2], y=[1, 2], mode="markers+text", text=["a", "a very long label " * 4])
    )
    labels.update_traces(textposition="middle right")
    wide = table(["x"] * 60, [["wide cell"] * 60])
    body = '<div style="height:1200px"></div><section id="answer">late</section>'
    index = tmp_path / "index.html"
    index.write_text(page("bad", wide + figure(labels, "", "labels") + body))
    with chromium() as browser:
        found = layout_problems(open_report(browser, index))
    assert len(found) == 3, found
    assert found[0].startswith("the answer spans") and "px wide in a 1400 px window" in found[1]
    assert found[2].startswith('label "a very long label')


def test_two_stores_reports_of_one_study_never_overwrite_each_other(tmp_path, monkeypatch):
    """The default folder is the study's; a report of its namesake from another store is
    refused (naming --out), not written over it; `ablate rm` takes the report it wrote
    away with the study and leaves the other store's alone."""
    from ablations.cli import main

    monkeypatch.chdir(tmp_path)
    spec = rf.complete_study()
    uris = [f"sqlite:///{(tmp_path / f'{s}.db').resolve()}" for s in ("a", "b")]
    for uri in uris:
        rf.write_study(uri, spec, artifact_root=tmp_path / "artifacts" / uri[-4])
    assert main(["report", spec.name, "--tracking-uri", uris[0]]) == 0
    page = tmp_path / "ablate-reports" / spec.name / "index.html"
    first = page.read_bytes()
    with pytest.raises(ReportError, match=r"holds the report of .* from the store .*a\.db.*--out"):
        build_report(spec.name, uris[1], default_out_dir(spec.name))
    assert page.read_bytes() == first
    assert main(["report", spec.name, "--tracking-uri", uris[1], "--out", "b-report"]) == 0
    assert (tmp_path / "b-report" / "index.html").is_file()

    assert main(["rm", spec.name, "--tracking-uri", uris[1], "--yes"]) == 0
    assert page.is_file()  # store a's report stays: not b's to remove
    assert main(["rm", spec.name, "--tracking-uri", uris[0], "--yes"]) == 0
    assert not page.parent.exists()
