"""Studies through a real local Ray into a real SQLite MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import plan_of
from mlflow.tracking import MlflowClient

from ablations import study as studies
from ablations.describe import describe
from ablations.errors import AblateError
from ablations.ledger import Ledger
from ablations.runner import RunOptions, run_study

METRICS = {
    "train/loss",
    "train/error",
    "val/loss",
    "val/error",
    "test/loss",
    "test/error",
    "lr",
    "images_per_s",
    "wall_time_s",
}


@pytest.mark.parametrize("name", studies.builtin_names())
def test_every_builtin_study_validates_and_plans(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./data here: CIFAR is missing, ImageNet too
    study, _ = studies.load(name)
    assert "smoke" in study.presets
    for preset in (None, *study.presets):
        if study.dataset.startswith("imagefolder:") and preset is None:
            # The full ImageNet study needs its folder; the plan says which one is missing.
            with pytest.raises(AblateError, match=r"imagefolder:.*data/imagenet does not exist"):
                plan_of(name, preset=preset)
            continue
        plan = plan_of(name, preset=preset)
        view = describe(plan, Ledger())
        assert len(view["trials"]) == len(plan.arms) * len(plan.seeds)
        assert all(row["params"] > 0 and row["macs"] > 0 for row in view["trials"])
        assert len({t.key for t in plan.trials}) == len(plan.trials)
        if plan.dataset == "cifar10":
            assert "downloads it once" in " ".join(plan.notes)


def test_builtin_studies_use_the_papers_recipe_by_default():
    plan = plan_of("shortcut_types")
    config = plan.trials[0].config
    assert (
        config.iterations,
        config.batch_size,
        config.lr,
        config.weight_decay,
        config.lr_policy,
    ) == (64_000, 128, 0.1, 1e-4, "step")
    depth = plan_of("depth")
    warm = {t.config.factors["depth"]: t.config.warmup for t in depth.trials}
    assert warm[110] == "paper" and warm[56] == "none"


def _runs(uri, experiment, role="trial"):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], f"tags.`ablate.role` = '{role}'")


def test_smoke_study_records_one_run_per_trial_and_reruns_nothing(smoke_store, tmp_path):
    uri, options, plan, summary = smoke_store
    assert summary.statuses and set(summary.statuses.values()) == {"finished"}
    client, runs = _runs(uri, "tiny")
    assert len(runs) == 4  # 2 arms x 2 seeds
    assert {r.data.tags["ablate.trial_key"] for r in runs} == {
        f"shortcut={s} seed={k}" for s in ("none", "A") for k in (0, 1)
    }
    for run in runs:
        tags, params = run.data.tags, run.data.params
        assert run.info.status == "FINISHED" and tags["ablate.status"] == "finished"
        assert tags["ablate.study"] == "tiny" and tags["mlflow.parentRunId"]
        assert len(tags["ablate.val_digest"]) == 16 and tags["ablate.resumed_from"] == "0"
        # The manifest: code, libraries, device, data (docs/tracking.md).
        assert len(tags["mlflow.source.git.commit"]) == 40
        assert tags["ablate.git_dirty"] in ("true", "false")
        versions = json.loads(tags["ablate.versions"])
        assert {"ablate", "python", "torch", "cuda", "ray", "mlflow"} <= set(versions)
        assert tags["ablate.device"] == "cpu (1 thread)" and params["precision"] == "fp32"
        assert len(tags["ablate.data_digest"]) == 16
        assert [d.dataset.digest for d in run.inputs.dataset_inputs] == [tags["ablate.data_digest"]]
        assert tags["ablate.checkpoint"].endswith("iteration-000000012")
        assert params["shortcut"] in ("none", "A") and params["seed"] in ("0", "1")
        # Resolved: what trained, never "None" for a setting left to its default.
        assert "None" not in params.values(), params
        model = (params["bottleneck"], params["skip_length"], params["width"])
        assert model == ("False", "2", "16")
        assert (params["val_size"], params["eval_every"]) == ("150", "4")
        assert params["depth"] == "8" and params["lr_policy"] == "step"
        assert int(params["params"]) > 0 and int(params["macs"]) > 0
        assert METRICS <= set(run.data.metrics)
        history = client.get_metric_history(run.info.run_id, "val/error")
        assert sorted(m.step for m in history) == [4, 8, 12]
        arts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert arts == {"trial_config.json", "lr_trace.json", "layer_responses.json"}
        dst = tmp_path / run.info.run_id
        dst.mkdir()
        path = client.download_artifacts(run.info.run_id, "layer_responses.json", str(dst))
        responses = json.loads(open(path).read())
        assert len(responses["std"]) == 7
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.data.tags["ablate.role"] == "parent"
    assert parent.data.tags["mlflow.note.content"].startswith("Does the shortcut")
    assert json.loads(parent.data.tags["ablate.settings"])["lr"] == "float"
    assert set(parent.data.metrics) == {
        f"mean_{k}_error/shortcut:{s}" for k in ("test", "train") for s in ("none", "A")
    }
    exp = client.get_experiment_by_name("tiny")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"

    again = run_study(plan, options)
    assert again.skipped == 4 and not again.statuses
    assert len(_runs(uri, "tiny")[1]) == 4


def test_changed_study_against_same_store_is_refused(ray_local, study_file, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    options = RunOptions(tracking_uri=uri, storage=str(tmp_path / "res"), progress=False)
    one = study_file(TINY_ONE_SEED)
    run_study(plan_of(str(one)), options)
    changed = study_file(TINY_ONE_SEED.replace("iterations: 4", "iterations: 8"), "b.yaml")
    with pytest.raises(AblateError, match=r"another definition \(changed: iterations: 4 -> 8\)"):
        run_study(plan_of(str(changed)), options)
    # More seeds extend the same study instead.
    more = study_file(TINY_ONE_SEED.replace("seeds: [0]", "seeds: [0, 1]"), "c.yaml")
    summary = run_study(plan_of(str(more)), options)
    assert summary.skipped == 1 and list(summary.statuses) == ["shortcut=A seed=1"]


TINY_ONE_SEED = """\
name: tiny1
question: One arm, one seed, a few iterations, to test what a store refuses.
dataset: digits
scientific:
  shortcut: [A]
fixed: {depth: 8, iterations: 4, eval_every: 2, batch_size: 32}
seeds: [0]
"""


def test_optuna_nuisance_phase_then_seeds_at_the_best_point(ray_local, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    options = RunOptions(tracking_uri=uri, storage=str(tmp_path / "res"), progress=False)
    plan = plan_of("tuned_shortcuts", preset="smoke")
    summary = run_study(plan, options)
    assert set(summary.statuses.values()) == {"finished"}
    client, tune_runs = _runs(uri, "tuned_shortcuts@smoke", role="tune")
    assert len(tune_runs) == 3 * 2  # 3 arms x 2 Optuna trials
    for arm in ("shortcut=A", "shortcut=B", "shortcut=C"):
        points = {
            (r.data.params["lr"], r.data.params["weight_decay"])
            for r in tune_runs
            if r.data.tags["ablate.arm"] == arm
        }
        assert len(points) == 2  # Optuna sampled two distinct points for the arm
    _, seed_runs = _runs(uri, "tuned_shortcuts@smoke")
    assert len(seed_runs) == 3
    by_id = {r.info.run_id: r for r in tune_runs}
    for run in seed_runs:
        best = by_id[run.data.params["tuned_from"]]
        assert best.data.tags["ablate.arm"] == run.data.tags["ablate.arm"]
        assert run.data.params["lr"] == best.data.params["lr"]
        same_arm = [
            r for r in tune_runs if r.data.tags["ablate.arm"] == run.data.tags["ablate.arm"]
        ]
        assert best.data.metrics["val/error"] == min(r.data.metrics["val/error"] for r in same_arm)
    # Rerun: tuning is complete, nothing new.
    again = run_study(plan, options)
    assert again.skipped == 3 and len(_runs(uri, "tuned_shortcuts@smoke", role="tune")[1]) == 6


def test_published_json_schema_is_current_and_checks_files():
    import jsonschema
    import yaml

    from ablations.study import json_schema

    path = Path(studies.__file__).with_name("study.schema.json")
    assert json.loads(path.read_text()) == json_schema(), "regenerate study.schema.json"
    for name in studies.builtin_names():
        text = (Path(studies.__file__).parent / "studies" / f"{name}.yaml").read_text()
        jsonschema.validate(yaml.safe_load(text), json_schema())
    good = {
        "name": "x",
        "question": "long enough?",
        "dataset": "digits",
        "scientific": {"depth": [8, 14]},
        "fixed": {"lr": 0.05, "warmup": 400},
        "seeds": [0],
    }
    jsonschema.validate(good, json_schema())
    # Typed per setting, from the settings' one definition: a wrong type, an unknown
    # setting, an unknown key are each refused by an editor too.
    for bad in (
        {**good, "colour": 1},
        {**good, "fixed": {"depth": "deep"}},
        {**good, "fixed": {"dpeth": 8}},
        {**good, "scientific": {"shortcut": "A"}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, json_schema())
    fixed = json_schema()["properties"]["fixed"]["properties"]
    assert "weight layers" in fixed["depth"]["description"]
    assert "one of none, A, B, C" in fixed["shortcut"]["description"]
    # Closed sets are enumerated, bounds stated, both from the settings' one definition.
    assert fixed["shortcut"]["enum"] == ["none", "A", "B", "C", None]
    assert fixed["lr_policy"]["enum"][:4] == ["step", "plateau", "cosine", "constant"]
    assert fixed["precision"]["enum"] == ["fp32", "bf16", None]
    assert fixed["stem"]["enum"] == ["cifar", "imagenet", None]
    assert fixed["lr"]["exclusiveMinimum"] == 0 and fixed["iterations"]["minimum"] == 1
    factors = json_schema()["properties"]["scientific"]["properties"]
    assert factors["shortcut"]["items"]["enum"] == ["none", "A", "B", "C"]
    for bad in ({**good, "fixed": {"shortcut": "D"}}, {**good, "fixed": {"lr": 0}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, json_schema())


RESOLVED = """\
name: resolved
question: Does a setting left open sit beside the paper's net it resolves to?
dataset: cifar10
scientific:
  shortcut: [A, B]
  depth: [110, 164]
reference: {shortcut: A}
fixed: {val_size: 0, bn_batch: 64}  # the papers' recipe, so their numbers compare
rules:
  - when: {depth: 110}
    set: {warmup: paper}
  - when: {depth: 164}
    set: {warmup: 400}
seeds: [0, 1]
"""


def test_a_setting_left_open_is_recorded_resolved_and_finds_its_paper_number(study_file, tmp_path):
    """`bottleneck` and `skip_length` are left open: the plan resolves them per depth (basic
    units at 110, the 2016 paper's bottleneck units at 164), the store records the resolved
    values, and the report puts the paper's number beside the arm it belongs to, knowing no
    defaults. The trials' runs are the real runner's (Store and Tracker); their final errors
    are written through the Tracker as a trial would report them, without training."""
    from ablations import ledger as ledgers
    from ablations.environment import code_version
    from ablations.events import Evaluation, Final, Start
    from ablations.tracker import Tracker
    from ablations.tracking import Store
    from reports import build_report

    plan = plan_of(str(study_file(RESOLVED)), data_dir=str(tmp_path / "no-cifar-here"))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    store = Store(uri)
    study = store.open_study(ledgers.record(plan), code_version(plan.model))
    store.set_plan_size(study, ledgers.record(plan).planned)
    runs = {
        t.key: store.create_trial(study, t.key, t.arm, plan.params(t), code_version(plan.model))
        for t in plan.trials
    }
    tracker = Tracker(store, runs, {})
    for i, trial in enumerate(plan.trials):
        tracker.trial_started(trial.key, {})
        env = {"versions": {}, "device": "cpu", "data_digest": "0" * 16, "dataset": "cifar10",
               "data_source": "none"}  # fmt: skip
        tracker.trial_event(trial.key, Start(0, "v" * 16, 45_000, env))
        error = 0.06 + 0.001 * i
        evaluation = {"iteration": 64_000, "train/loss": 0.1, "train/error": 0.01,
                      "test/error": error, "lr": 0.001, "images_per_s": 1.0}  # fmt: skip
        tracker.trial_event(trial.key, Evaluation(evaluation))
        summary = {"iterations": 64_000, "wall_time_s": 1.0, "test_error": error}
        tracker.trial_event(trial.key, Final("finished", summary, {"iteration": [0], "lr": [0.1]}))
    ledger = ledgers.read(store, study)
    store.summarize(study, {split: ledger.errors(split) for split in ("test", "train")})

    client = MlflowClient(uri)
    for run in client.search_runs([study.experiment_id], "tags.`ablate.role` = 'trial'"):
        depth = run.data.params["depth"]
        resolved = (run.data.params["bottleneck"], run.data.params["skip_length"])
        assert resolved == (("True", "3") if depth == "164" else ("False", "2")), resolved
    index = build_report("resolved", uri, tmp_path / "report")
    arms = pd.read_csv(index.parent / "arms.csv").set_index("arm")
    paper = arms["paper_test_error_pct"].to_dict()
    assert paper["shortcut=A depth=110"] == 6.61  # Table 6, ResNet-110 (mean of 5 runs)
    assert paper["shortcut=B depth=164"] == 5.93  # 2016 paper: ResNet-164, bottleneck units
    assert pd.isna(paper["shortcut=B depth=110"]) and pd.isna(paper["shortcut=A depth=164"])
