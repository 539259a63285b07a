"""A user's own model through the whole pipeline: a builder module in a folder of its own,
a study over one of its factors, `ablate run` (real Ray, real MLflow), the report and
`reports.load_study`; and the same study on a `ray start` cluster whose nodes never had
that folder on their path (ablate ships the builder through Ray's runtime env)."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from test_scaleout import BIN, clean_env, ray_cluster  # noqa: F401 - a fixture

from reports import load_study

BUILDER = '''\
"""A tiny gated CNN for the tests."""
from typing import Literal

import torch
from torch import nn


class Gate(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x):
        return x * torch.sigmoid(self.fc(x.mean((2, 3))))[:, :, None, None]


def build(num_classes: int, in_channels: int, gate: Literal["none", "se"] = "none",
          width: int = 8) -> nn.Module:
    layers = [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
    if gate == "se":
        layers.append(Gate(width))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)]
    return nn.Sequential(*layers)
'''

STUDY = """\
name: gated
question: Does the gate change a tiny CNN's digits error over two seeds?
dataset: digits
model: tinygate.build:build
scientific:
  gate: [none, se]
reference: {gate: none}
fixed: {width: 12, iterations: 12, eval_every: 6, batch_size: 32}
seeds: [0, 1]
"""


def _write_builder(root):
    """The builder as a package of its own (tinygate/build.py), outside the study's folder."""
    package = root / "mods" / "tinygate"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "build.py").write_text(BUILDER)
    (root / "work").mkdir()
    (root / "work" / "study.yaml").write_text(STUDY)
    return root / "mods", root / "work"


def _ablate(args: list[str], cwd, env) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(BIN / "ablate"), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=800,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def _check_store(uri: str) -> None:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("gated")
    (parent,) = client.search_runs([exp.experiment_id], "tags.`ablate.role` = 'parent'")
    tags = parent.data.tags
    assert tags["ablate.model"] == "tinygate.build:build"
    assert json.loads(tags["ablate.model_factors"]) == ["gate", "width"]
    types = json.loads(tags["ablate.settings"])
    assert (types["gate"], types["width"], types["bn_batch"]) == ("str", "int", "int")
    assert "depth" not in types  # the ResNets' factors belong to their builder only
    source = json.loads(tags["ablate.model_source"])
    assert source["module"] == "tinygate.build" and len(source["sha256"]) == 16
    runs = client.search_runs([exp.experiment_id], "tags.`ablate.role` = 'trial'")
    assert sorted(r.data.tags["ablate.trial_key"] for r in runs) == [
        f"gate={g} seed={s}" for g in ("none", "se") for s in (0, 1)
    ]
    for run in runs:
        params = run.data.params
        assert params["gate"] == run.data.tags["ablate.arm"].removeprefix("gate=")
        assert (params["width"], params["model"]) == ("12", "tinygate.build:build")
        assert run.data.tags["ablate.status"] == "finished"
        assert "layer_responses.json" not in {
            a.path for a in client.list_artifacts(run.info.run_id)
        }


@pytest.mark.slow
def test_a_users_builder_runs_as_a_study_and_reports_by_its_factors(tmp_path):
    mods, work = _write_builder(tmp_path)
    env = clean_env(PYTHONPATH=str(mods))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    done = _ablate(["run", "study.yaml", "--quiet", "--tracking-uri", uri], work, env)
    assert "4 trials; 0 already done; this run: 4 finished" in done.stdout
    _check_store(uri)
    _ablate(["report", "study.yaml", "--tracking-uri", uri], work, env)
    out = work / "ablate-reports" / "gated"
    arms = pd.read_csv(out / "arms.csv")
    assert sorted(arms["gate"]) == ["none", "se"] and set(arms["test_error_pct_n"]) == {2}
    page = (out / "index.html").read_text()
    assert "Table 6" not in page and "Degradation" not in page

    study = load_study("gated", tracking_uri=uri)
    assert sorted(study.arms["gate"]) == ["none", "se"]
    assert len(study.trials) == 4 and set(study.trials["width"]) == {12}
    merged = study.arms.merge(arms, on="gate", suffixes=("", "_csv"))
    column = "test_error_pct_mean"
    assert (merged[column] - merged[f"{column}_csv"]).abs().max() < 1e-9
    assert set(study.curves["trial_key"]) == set(study.trials["trial_key"])


@pytest.mark.slow
def test_the_builder_reaches_cluster_nodes_that_never_had_it(ray_cluster, tmp_path):  # noqa: F811
    """The nodes were started without the builder's folder on their path; only the driver
    (where `ablate run` runs) has it."""
    address, _, _ = ray_cluster
    mods, work = _write_builder(tmp_path)
    env = clean_env(PYTHONPATH=str(mods))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    args = ["run", "study.yaml", "--quiet", "--tracking-uri", uri, "--address", address]
    done = _ablate(args, work, env)
    assert "4 trials; 0 already done; this run: 4 finished" in done.stdout
    _check_store(uri)


def test_a_builder_beside_the_study_file_is_found_without_pythonpath(tmp_path, monkeypatch):
    """`model: module:function` names a module next to the study file, as examples/ does."""
    from conftest import plan_of

    (tmp_path / "besidemod.py").write_text(BUILDER)
    study = STUDY.replace("tinygate.build:build", "besidemod:build")
    (tmp_path / "s.yaml").write_text(textwrap.dedent(study))
    monkeypatch.chdir(tmp_path.parent)
    plan = plan_of(str(tmp_path / "s.yaml"))
    assert plan.model_factors == ("gate", "width") and plan.arms == ["gate=none", "gate=se"]
    assert plan.params(plan.trials[0])["params"] > 0


WRONG = '''\
from torch import nn


def mlp(num_classes: int, in_channels: int, hidden: int = 16) -> nn.Module:
    """Written for 8x8 images."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 8 * 8, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def pools(num_classes: int, in_channels: int, hidden: int = 16) -> nn.Module:
    """Pools a 32x32 image below 1x1."""
    layers = [nn.Conv2d(in_channels, hidden, 3, padding=1)]
    for _ in range(6):
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(hidden, num_classes))


class Mean(nn.Module):
    def forward(self, x):
        return x.mean((2, 3))


def empty(num_classes: int, in_channels: int, hidden: int = 16) -> nn.Module:
    """Nothing to train."""
    return Mean()
'''


@pytest.mark.parametrize(
    ("builder", "why"),
    [
        ("mlp", r"mat1 and mat2 shapes cannot be multiplied .* \(in layer 1: Linear\)$"),
        ("pools", r"Output size is too small \(in layer 12: MaxPool2d\)$"),
        ("empty", r"it has no trainable parameters"),
    ],
)
def test_a_model_that_cannot_train_on_the_data_is_one_line_naming_the_arm(
    builder, why, tmp_path, monkeypatch, capsys
):
    """Built and stepped once on a batch of the data set's shape before anything is
    written: a builder for another input size, one that pools below 1x1 and one with
    nothing to train each end in one line (exit 2) naming the arm, the input it was given
    and where in the user's file it failed."""
    import re
    import time

    from ablations.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "wrong.py").write_text(WRONG)
    study = f"""\
name: wrong_{builder}
question: Does a model written for other inputs fail clearly?
dataset: digits
model: wrong:{builder}
scientific: {{hidden: [16, 32]}}
fixed: {{iterations: 4}}
seeds: [0]
"""
    (tmp_path / "s.yaml").write_text(study)
    start = time.monotonic()
    code = main(["run", "s.yaml", "--quiet", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("ablate: error: s.yaml: arm hidden=16: wrong:" + builder), err
    assert "a batch of 2 x 3 x 32 x 32 images, 10 classes" in err, err
    assert re.search(why, err), err
    assert not (tmp_path / "m.db").exists() and not (tmp_path / "ablate-results").exists()
    assert time.monotonic() - start < 30


def test_ablate_train_finds_a_builder_in_the_working_folder(tmp_path):
    """`ablate train --model mod:fn` in the module's own folder, as `ablate run` finds one
    beside its study file: no PYTHONPATH needed."""
    import os
    import sys
    from pathlib import Path

    (tmp_path / "gated.py").write_text(BUILDER)
    ablate = Path(sys.executable).parent / "ablate"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [str(ablate), "train", "--model", "gated:build", "--help"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "--gate" in out.stdout and "a factor of gated:build" in out.stdout
