"""The report of a real smoke study: run through Ray into MLflow, read back from MLflow."""

from __future__ import annotations

import pandas as pd
from mlflow.tracking import MlflowClient

from reports import build_report


def test_report_of_a_real_smoke_study(smoke_store, tmp_path):
    uri, _options, plan, _summary = smoke_store
    page = build_report(plan.experiment, uri, tmp_path / "out")
    html = page.read_text()
    assert "Complete: all 4 planned trials finished." in html
    assert plan.study.question.split("(")[0].strip()[:40] in html
    arms = pd.read_csv(tmp_path / "out" / "arms.csv")
    assert sorted(arms["arm"]) == ["shortcut=A", "shortcut=none"]
    assert (arms["test_error_pct_n"] == 2).all()
    trials = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert len(trials) == 4 and set(trials["status"]) == {"finished"}
    # The numbers on the page are the numbers in the store.
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(plan.experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`ablate.role` = 'trial'")
    stored = {r.data.tags["ablate.trial_key"]: r.data.metrics["test/error"] for r in runs}
    for _, row in trials.iterrows():
        assert abs(row["test/error"] - stored[row["trial_key"]]) < 1e-12
    # Logged as an artifact of the study's parent run.
    parent = runs[0].data.tags["mlflow.parentRunId"]
    names = {a.path for a in client.list_artifacts(parent, "report")}
    assert "report/index.html" in names
