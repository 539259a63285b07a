"""The command line as a user meets it first: every `--help`, the MLflow UI started in the
wrong folder, removing a study, a precision target that cannot be met."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import plan_of
from mlflow.tracking import MlflowClient

from ablations.checkpoints import TrialCheckpoints
from ablations.cli import build_parser, main

EXE = Path(sys.executable).with_name("ablate")


def test_every_subcommand_help_works_in_a_fresh_process():
    commands = build_parser()._subparsers._group_actions[0].choices
    assert set(commands) >= {"list", "show", "run", "report", "ui", "rm", "train", "model"}
    for command in ["", *commands]:
        argv = [str(EXE), *([command] if command else []), "--help"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        assert done.stdout.startswith("usage: ablate"), command
    top = subprocess.run([str(EXE), "--help"], capture_output=True, text=True).stdout
    # It speaks to users: what ablate does, the main commands, where to read more.
    assert "ablation studies of residual networks" in top and "README.md" in top
    assert "ablate run STUDY" in top and "docs/design.md" not in top
    train = subprocess.run([str(EXE), "train", "--help"], capture_output=True, text=True).stdout
    assert "/10 at 50% and 75%" in train  # a % in a setting's help, printed as written


def test_ui_in_a_folder_without_a_store_refuses_and_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for argv in (["ui"], ["ui", "depth", "--preset", "demo"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err == (
            f"ablate: error: no MLflow store at {tmp_path / 'mlflow.db'}; run a study in this "
            "folder first, or give the store with --tracking-uri"
        )
    assert not list(tmp_path.iterdir())


def test_ui_names_a_missing_study_and_the_studies_the_store_holds(smoke_store, capsys):
    uri = smoke_store[0]
    assert main(["ui", "depth", "--tracking-uri", uri]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(f"no study depth in the store {uri}; studies there: tiny")
    )


TWO = """\
name: {name}
question: Two studies in one store; removing one must leave the other whole.
dataset: digits
scientific:
  shortcut: [A]
fixed: {{depth: 8, iterations: 4, eval_every: 2, batch_size: 32}}
seeds: [0]
"""


def test_rm_removes_one_study_from_the_store_and_the_storage_and_nothing_else(
    ray_local, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    common = ["--tracking-uri", uri, "--storage", str(tmp_path / "res")]
    for name in ("keep", "drop"):
        (tmp_path / f"{name}.yaml").write_text(TWO.format(name=name))
        assert main(["run", f"{name}.yaml", "--quiet", *common]) == 0
    capsys.readouterr()
    assert (tmp_path / "res/keep/checkpoints").is_dir() and (tmp_path / "res/drop").is_dir()

    # Asked, not confirmed (no terminal to answer): nothing goes.
    monkeypatch.setattr("sys.stdin", open("/dev/null"))
    assert main(["rm", "drop.yaml", *common]) == 1
    out = capsys.readouterr().out
    assert "will remove the MLflow experiment drop" in out and "(2 runs)" in out
    assert str(tmp_path / "res/drop") in out and "nothing removed" in out
    assert MlflowClient(uri).get_experiment_by_name("drop") is not None

    assert main(["rm", "drop", *common, "--yes"]) == 0
    client = MlflowClient(uri)
    assert client.get_experiment_by_name("drop") is None
    assert not (tmp_path / "res/drop").exists()
    kept = client.get_experiment_by_name("keep")
    assert len(client.search_runs([kept.experiment_id])) == 2
    (run,) = client.search_runs([kept.experiment_id], "tags.`ablate.role` = 'trial'")
    kept_checkpoints = TrialCheckpoints(
        str(tmp_path / "res"), "keep", "shortcut=A seed=0", run.info.run_id
    )
    assert [i for i, _ in kept_checkpoints.found()] == [4, 2]
    # Gone means gone: a second rm says so, and the name is free to run again.
    assert main(["rm", "drop", *common, "--yes"]) == 2
    assert "no study drop in the store" in capsys.readouterr().err
    assert main(["run", "drop.yaml", "--quiet", *common]) == 0
    assert "1 trials; 0 already done; this run: 1 finished" in capsys.readouterr().out


TARGET = textwrap.dedent(
    """\
    name: unreachable
    question: Does a precision target that cannot be met say so, and stop at max seeds?
    dataset: digits
    scientific:
      shortcut: [none, A]
    fixed: {depth: 8, iterations: 30, eval_every: 10, batch_size: 16, lr: 0.05}
    seeds: [0, 1]
    """
)


@pytest.mark.slow
def test_an_unreachable_target_stops_at_max_seeds_and_says_target_not_met(
    ray_local, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(TARGET)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    args = ["s.yaml", "--target-ci", "0.001", "--max-seeds", "3", "--tracking-uri", uri]
    assert main(["run", *args, "--quiet"]) == 3
    out = capsys.readouterr().out
    assert "6 trials; 0 already done; this run: 6 finished" in out
    for arm in ("shortcut=none", "shortcut=A"):
        assert f"added seeds 2 to {arm}" in out
        assert f"target not met: {arm}: 95% CI +-" in out
        assert "with 3 seeds (target +-0.001, --max-seeds reached)" in out
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("unreachable")
    (parent,) = client.search_runs([exp.experiment_id], "tags.`ablate.role` = 'parent'")
    tags = parent.data.tags
    assert json.loads(tags["ablate.planned"]) == {
        a: [0, 1, 2] for a in ("shortcut=none", "shortcut=A")
    }
    assert (tags["ablate.expected_trials"], tags["ablate.seeds"]) == ("6", "[0, 1, 2]")
    assert (tags["ablate.target_ci"], tags["ablate.max_seeds"]) == ("0.001", "3")

    # show predicts, per arm, the seeds the target needs, from the spread in the store.
    assert main(["show", *args, "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert len(view["trials"]) == 6  # the seeds the rounds added are part of the plan
    assert {row["stored"] for row in view["trials"]} == {"finished"}
    needed = view["target_plan"]["seeds_per_arm"]
    assert set(needed) == {"shortcut=none", "shortcut=A"} and min(needed.values()) > 3
    assert main(["show", *args]) == 0
    assert "seeds for a 95% CI of +-0.001 points per arm" in capsys.readouterr().out
    # A rerun adds nothing and still says the target is not met.
    assert main(["run", *args, "--quiet"]) == 3
    out = capsys.readouterr().out
    assert "6 already done; this run: nothing to run" in out and "target not met" in out


def test_show_plans_each_arm_from_the_prior_when_nothing_is_stored(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(TARGET)
    plan = plan_of(str(tmp_path / "s.yaml"))
    assert main(["show", "s.yaml", "--target-ci", "0.25", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    from reports import replication, stats

    # The two-stage design from the study's 2 seeds: the total it runs 9 times in 10.
    prior = replication.planned_seeds(stats.PRIOR_SEED_SD, 2, 0.25)
    assert view["target_plan"]["seeds_per_arm"] == {arm: prior for arm in plan.arms}
    assert not view["target_plan"]["measured"]
    assert not list(tmp_path.glob("*.db"))


@pytest.mark.parametrize("argv", [["list"], ["--help"], ["--version"]])
def test_list_and_help_import_no_torch_ray_or_mlflow(argv):
    """`ablate list` and `--help` answer at once: nothing they do needs torch, Ray or MLflow
    (each costs a second or more to import), as -X importtime shows."""
    code = "import sys; from ablations.cli import main; sys.exit(main())"
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, *argv], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines()}
    assert imported and not imported & {"torch", "ray", "mlflow", "pandas"}, sorted(imported)


def test_show_of_a_model_without_batchnorm_says_so(tmp_path, monkeypatch, capsys):
    """bn_batch means nothing to a model without BatchNorm: show says the model has none,
    counts a small model's MACs in k, and a prior spread it did not measure is a guess."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny_mlp.py").write_text(
        "from torch import nn\n\n\n"
        "def build(num_classes: int, in_channels: int, width: int = 8) -> nn.Module:\n"
        "    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
        "                         nn.Linear(width, num_classes))\n"
    )
    (tmp_path / "s.yaml").write_text(
        "name: nobn\nquestion: Does a model without BatchNorm plan cleanly?\ndataset: digits\n"
        "model: tiny_mlp:build\nscientific: {width: [4, 8]}\nfixed: {iterations: 4}\nseeds: [0]\n"
    )
    assert (
        main(["show", "s.yaml", "--effect", "2", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
        == 0
    )
    out = capsys.readouterr().out
    assert "no BatchNorm in the model" in out and "BatchNorm over" not in out
    assert " 111k " in out  # width 4: 108 conv MACs x 1024 positions + 40 in the linear layer
    assert "a guess for tiny_mlp:build" in out
