"""The paper column compares like with like: a published number sits beside an arm only
when the arm trained the paper's net with the paper's recipe (reports/paper.py); otherwise
the column names each difference, and no gap to the paper is computed. The built-in
paper_cifar10 study trains as Table 6 did, on all 50k training images."""

from __future__ import annotations

import pandas as pd
import pytest
import report_fixtures as rf
from conftest import plan_of

from ablations.describe import describe, render
from ablations.ledger import Ledger
from reports import render_report
from reports.data import select_trials
from reports.paper import paper_comparison, paper_result
from reports.tables import arm_table

CIFAR_NET = {
    "dataset": "cifar10",
    "shortcut": "A",
    "skip_length": 2,
    "bottleneck": False,
    "preactivation": False,
    "stem": "cifar",
    "width": 16,
}
# The 2015 paper's CIFAR-10 recipe as an arm records it (docs/paper.md §4, §4b).
TABLE6_RECIPE = {
    "lr_policy": "step",
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 0.0001,
    "batch_size": 128,
    "bn_batch": 64,
    "iterations": 64_000,
    "val_size": 0,
    "warmup": "none",
    "warmup_lr": 0.01,
}
TABLE6 = {**CIFAR_NET, **TABLE6_RECIPE}


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({**TABLE6, "depth": 20}, 8.75),
        ({**TABLE6, "depth": 56}, 6.97),
        ({**TABLE6, "depth": 110, "warmup": "paper"}, 6.61),
        # The warm-up's rate only matters where the arm warms up.
        ({**TABLE6, "depth": 20, "warmup_lr": 0.05}, 8.75),
        # The 2016 paper warms every CIFAR run up for 400 iterations.
        ({**TABLE6, "depth": 110, "preactivation": True, "warmup": "400"}, 6.37),
    ],
)
def test_the_paper_recipe_gets_the_papers_number(settings, expected):
    found = paper_comparison(settings)
    assert found is not None and found.comparable and found.differences == ()
    assert paper_result(settings).test_error_pct == expected


@pytest.mark.parametrize(
    ("changes", "differences"),
    [
        ({"val_size": 5000}, ["trained on 45k images, paper 50k"]),
        ({"lr_policy": "cosine"}, ["cosine schedule, paper step"]),
        ({"lr_policy": "plateau"}, ["plateau schedule, paper step"]),
        # Tuned lr and weight decay (a nuisance search) are another recipe.
        ({"lr": 0.05, "weight_decay": 0.0005}, ["lr 0.05, paper 0.1",
                                                "weight decay 0.0005, paper 0.0001"]),
        ({"momentum": 0.95}, ["momentum 0.95, paper 0.9"]),
        ({"batch_size": 256, "bn_batch": 256}, ["batch 256, paper 128",
                                                 "BN over 256 images, paper 64"]),
        ({"bn_batch": 128}, ["BN over 128 images, paper 64"]),
        ({"iterations": 2000}, ["2,000 iterations, paper 64,000"]),
        ({"warmup": "400"}, ["400-iteration warm-up, paper no warm-up"]),
        # A setting the arm does not record is not taken to be the paper's.
        ({"bn_batch": None}, ["BN batch not recorded, paper 64"]),
        ({"val_size": float("nan")}, ["training images not recorded, paper 50k"]),
    ],
)  # fmt: skip
def test_each_difference_from_the_papers_recipe_is_named(changes, differences):
    settings = {**TABLE6, "depth": 20, **changes}
    found = paper_comparison(settings)
    assert found is not None and found.result.test_error_pct == 8.75
    assert list(found.differences) == differences and not found.comparable
    assert paper_result(settings) is None


def test_resnet110_without_the_paper_warmup_differs():
    found = paper_comparison({**TABLE6, "depth": 110})
    assert found.differences == ("no warm-up, paper warm-up until training error < 80%",)
    found = paper_comparison({**TABLE6, "depth": 110, "warmup": "paper", "warmup_lr": 0.02})
    assert found.differences == ("warm-up lr 0.02, paper 0.01",)


def test_imagenet_numbers_name_what_no_setting_can_change():
    settings = {**CIFAR_NET, "dataset": "imagenet", "stem": "imagenet", "width": 64, "depth": 34,
                **TABLE6_RECIPE, "lr_policy": "plateau", "batch_size": 256, "bn_batch": 32,
                "iterations": 600_000, "val_size": 50_000}  # fmt: skip
    found = paper_comparison(settings)
    assert found.result.test_error_pct == 25.03
    assert found.differences == (
        "trained on 1.23M images, paper 1.28M",
        "tested on one centre crop, paper 10 crops",
        "no colour augmentation, paper the standard one",
    )


def test_other_nets_have_no_paper_entry():
    assert paper_comparison({**TABLE6, "depth": 20, "shortcut": "B"}) is None
    assert paper_comparison({**TABLE6, "depth": 20, "dataset": "digits"}) is None


def _recipe_study() -> rf.StudySpec:
    """ResNet-20 on CIFAR-10 under the paper's recipe, against the same net trained with a
    cosine schedule on a 45k split: one arm compares with Table 6, the other does not."""
    fixed = {**TABLE6_RECIPE, "depth": 20, "shortcut": "A", "eval_every": 8000}
    trials = rf.grid_trials({"lr_policy": ["step", "cosine"]}, seeds=[0, 1, 2], fixed=fixed)
    for trial in trials:
        if trial.settings["lr_policy"] == "cosine":
            trial.settings["val_size"] = 5000
    return rf.StudySpec(
        name="recipe",
        question="Does a cosine schedule beat the paper's step schedule?",
        factors=["lr_policy"],
        reference={"lr_policy": "step"},
        seeds=[0, 1, 2],
        trials=trials,
    )


def test_the_report_shows_the_number_only_beside_the_paper_recipe():
    data = rf.study_data(_recipe_study())
    arms = arm_table(select_trials(data.runs), data.info).set_index("arm")
    step, cosine = arms.loc["lr_policy=step"], arms.loc["lr_policy=cosine"]
    assert step["paper_test_error_pct"] == 8.75 and step["paper_differences"] == ""
    assert step["paper_gap_sd"] == pytest.approx(
        (step["test_error_pct_mean"] - 8.75) / step["test_error_pct_std"]
    )
    assert pd.isna(cosine["paper_test_error_pct"]) and pd.isna(cosine["paper_gap_sd"])
    assert cosine["paper_source"] == step["paper_source"] == "He et al. 2015, Table 6"
    assert cosine["paper_differences"] == (
        "cosine schedule, paper step; trained on 45k images, paper 50k"
    )
    html = render_report(data).html
    assert "<th>paper %</th>" in html and "<th>vs paper (σ)</th>" in html
    assert "not comparable: cosine schedule, paper step; trained on 45k images, paper 50k" in html
    assert "8.75<sup>1</sup>" in html


def test_no_gap_column_where_no_arm_trained_as_the_paper_did():
    spec = _recipe_study()
    for trial in spec.trials:
        trial.settings["iterations"] = 2000
        trial.settings["eval_every"] = 500
    data = rf.study_data(spec)
    html = render_report(data).html
    assert "<th>paper %</th>" in html and "<th>vs paper (σ)</th>" not in html
    assert "not comparable: 2,000 iterations, paper 64,000" in html
    assert "8.75" not in html.split('id="comparison"')[1].split("</table>")[0]


def test_paper_cifar10_trains_on_all_50k_images_as_table6(tmp_path):
    plan = plan_of("paper_cifar10", data_dir=str(tmp_path / "no-cifar-here"))
    assert {t.config.val_size for t in plan.trials} == {0}
    # What its runs record compares with Table 6 arm by arm, with no difference.
    for trial in plan.trials:
        found = paper_comparison(plan.params(trial))
        assert found is not None and found.differences == (), (trial.key, found)
    view = describe(plan, Ledger())
    assert "val_size 0" in render({**view, "estimate": {"basis": "not measured"}})
    assert "50k training images" in plan.question
    smoke = plan_of("paper_cifar10", preset="smoke", data_dir=str(tmp_path / "no-cifar-here"))
    assert {t.config.val_size for t in smoke.trials} == {0}
