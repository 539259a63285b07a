"""The training engine on CPU: recipe, LR traces, exact resume, divergence, layer responses."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resnet import checkpoint
from resnet.config import TrainConfig
from resnet.data import load_dataset
from resnet.schedule import LRSchedule
from resnet.spec import SpecError
from resnet.train import Callback, train

TINY = dict(dataset="digits", depth=8, batch_size=32, eval_every=3, iterations=12)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


class Recorder(Callback):
    def __init__(self, stop_at: int | None = None):
        self.records, self.stop_at, self.iteration, self.started = [], stop_at, 0, None

    def on_start(self, info):
        self.started = info

    def on_step(self, iteration):
        self.iteration = iteration

    def on_eval(self, record):
        self.records.append(record)

    def should_stop(self):
        return self.stop_at is not None and self.iteration >= self.stop_at


def test_step_policy_is_the_papers_schedule():
    s = LRSchedule(0.1, "step", 64_000)
    assert [s.lr(i) for i in (0, 31_999, 32_000, 47_999, 48_000, 63_999)] == [
        0.1,
        0.1,
        0.01,
        0.01,
        0.001,
        0.001,
    ]
    assert s.trace_dict(64_000) == {
        "iteration": [0, 32_000, 48_000, 64_000],
        "lr": [0.1, 0.01, 0.001, 0.001],
    }


def test_cosine_and_constant():
    s = LRSchedule(0.1, "cosine", 1000)
    assert s.lr(0) == pytest.approx(0.1) and s.lr(500) == pytest.approx(0.05)
    assert s.lr(999) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.999)))
    assert LRSchedule(0.1, "constant", 10).lr(9) == 0.1


def test_plateau_divides_after_patience_on_validation_error():
    s = LRSchedule(0.1, "plateau", 1000, plateau_patience=2)
    for err in (0.5, 0.4, 0.41, 0.40):  # two evaluations without improvement
        s.observe_val_error(err)
    assert s.lr(10) == pytest.approx(0.01)
    s.observe_val_error(0.3)
    assert s.lr(11) == pytest.approx(0.01)


def test_warmups_compose_with_any_policy():
    fixed = LRSchedule(0.1, "cosine", 1000, warmup="400")
    assert fixed.lr(399) == 0.01 and fixed.lr(400) == pytest.approx(fixed.policy_lr(400))
    paper = LRSchedule(0.1, "step", 64_000, warmup="paper")
    paper.observe_train_error(0.85)
    assert paper.lr(1000) == 0.01
    paper.observe_train_error(0.79)  # below 80%: back to 0.1 and the normal schedule
    assert paper.lr(1001) == 0.1 and paper.lr(40_000) == pytest.approx(0.01)


def test_training_records_every_evaluation(digits):
    rec = Recorder()
    result = train(TrainConfig(**TINY), rec, data=digits)
    assert result.status == "finished" and result.iterations == 12
    assert [r["iteration"] for r in rec.records] == [3, 6, 9, 12]
    keys = {
        "iteration",
        "lr",
        "train/loss",
        "train/error",
        "val/loss",
        "val/error",
        "test/loss",
        "test/error",
        "images_per_s",
    }
    assert all(keys <= set(r) for r in rec.records)
    assert all(0 <= r[k] <= 1 for r in rec.records for k in ("train/error", "val/error"))
    assert rec.started["params"] == result.params and result.macs > 0
    assert len(result.layer_responses["std"]) == 7  # depth 8: 7 conv layers + fc
    assert all(s > 0 for s in result.layer_responses["std"])


def test_same_seed_same_numbers_other_seed_differs(digits):
    a = train(TrainConfig(**TINY, seed=3), data=digits).history
    b = train(TrainConfig(**TINY, seed=3), data=digits).history
    c = train(TrainConfig(**TINY, seed=4), data=digits).history
    strip = [{k: v for k, v in r.items() if k != "images_per_s"} for r in a]
    assert strip == [{k: v for k, v in r.items() if k != "images_per_s"} for r in b]
    assert a[-1]["train/loss"] != c[-1]["train/loss"]


def test_resume_is_bit_identical_to_training_straight_through(digits, tmp_path):
    # Checkpoints every 2 iterations, so the stop at 6 lands between evaluations (at 3, 6,
    # 9) too: accumulators and data order must survive a mid-window stop.
    cfg = TrainConfig(**TINY, checkpoint_every=2)
    straight = train(cfg, checkpoints=tmp_path / "a", data=digits)
    first = train(cfg, Recorder(stop_at=5), checkpoints=tmp_path / "b", data=digits)
    assert first.status == "stopped" and first.iterations == 5
    resumed_rec = Recorder()
    resumed = train(cfg, resumed_rec, checkpoints=tmp_path / "b", data=digits)
    assert resumed_rec.started["resumed_from"] == 5
    assert resumed.status == "finished"
    a = checkpoint.FolderCheckpoints(tmp_path / "a").load()["model"]
    b = checkpoint.FolderCheckpoints(tmp_path / "b").load()["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    strip = lambda h: [{k: v for k, v in r.items() if k != "images_per_s"} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(straight.history)


def test_truncated_newest_checkpoint_falls_back_with_warning(digits, tmp_path):
    cfg = TrainConfig(**TINY)
    train(cfg, Recorder(stop_at=9), checkpoints=tmp_path, data=digits)
    kept = checkpoint.FolderCheckpoints(tmp_path).found()
    assert [Path(f).name for _, f in kept] == ["iteration-000000009", "iteration-000000006"]
    newest = Path(kept[0][1]) / checkpoint.STATE_FILE
    newest.write_bytes(newest.read_bytes()[:100])
    rec = Recorder()
    with pytest.warns(RuntimeWarning, match="unreadable"):
        result = train(cfg, rec, checkpoints=tmp_path, data=digits)
    assert rec.started["resumed_from"] == 6 and result.status == "finished"


def test_checkpoint_write_failure_keeps_previous(tmp_path):
    """A full disk (the kernel's /dev/full gives ENOSPC on every write) mid-checkpoint."""
    folder = checkpoint.FolderCheckpoints(tmp_path)
    folder.save({"x": torch.ones(2)}, 1)
    (tmp_path / "iteration-000000002").mkdir()
    (tmp_path / "iteration-000000002" / checkpoint.STATE_FILE).symlink_to("/dev/full")
    with pytest.raises(OSError, match="No space left on device.*previous checkpoint is intact"):
        folder.save({"x": torch.zeros(10_000)}, 2)
    assert torch.equal(folder.load()["x"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["iteration-000000001"]


def test_divergence_stops_and_is_a_result(digits):
    rec = Recorder()
    result = train(TrainConfig(**{**TINY, "lr": 1e6}), rec, data=digits)
    assert result.status == "diverged"
    assert result.diverged_at is not None and result.diverged_at < result.iterations <= 12
    assert result.layer_responses is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"lr_policy": "linear"}, "lr_policy"),
        ({"warmup": "soon"}, "warmup"),
        ({"iterations": 0}, "iterations"),
        ({"lr": -1.0}, "lr"),
        ({"depth": 33}, "depth"),
        ({"seed": -1}, "seed"),
        ({"device": "tpu"}, "device"),
        ({"precision": "fp16"}, "precision"),
        ({"step": "graph", "compile": True}, "step"),
    ],
)
def test_invalid_configs_name_the_field(kwargs, field):
    with pytest.raises(SpecError) as err:
        TrainConfig(**kwargs)
    assert err.value.field == field


def test_cli_train_json(tmp_path):
    cmd = [
        sys.executable,
        "-c",
        "import sys; from ablations.cli import main; sys.exit(main())",
        "train",
        "--dataset",
        "digits",
        "--depth",
        "8",
        "--iterations",
        "6",
        "--batch-size",
        "32",
        "--eval-every",
        "3",
        "--seed",
        "1",
        "--json",
        "--checkpoint-dir",
        str(tmp_path / "ck"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    summary = json.loads(done.stdout)  # stdout is the JSON object alone
    assert summary["status"] == "finished" and summary["iterations"] == 6
    for key in ("train_error", "val_error", "test_error"):
        assert 0 <= summary[key] <= 1
    bad = subprocess.run([*cmd[:3], "train", "--dataset", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "nope" in bad.stderr and bad.stderr.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_a_missing_gpu_is_a_device_error_not_a_data_error(digits):
    from resnet.errors import DataError, DeviceError

    with pytest.raises(DeviceError, match="no CUDA GPU") as err:
        train(TrainConfig(**TINY, device="cuda"), data=digits)
    assert not isinstance(err.value, DataError)


def test_checkpoint_of_other_settings_is_refused_by_its_own_error(digits, tmp_path):
    from resnet.errors import CheckpointMismatch, DataError

    train(TrainConfig(**TINY), Recorder(stop_at=3), checkpoints=tmp_path, data=digits)
    with pytest.raises(CheckpointMismatch, match="belongs to other settings") as err:
        train(TrainConfig(**{**TINY, "lr": 0.05}), checkpoints=tmp_path, data=digits)
    assert not isinstance(err.value, DataError)


def test_checkpoint_from_other_model_code_is_refused_in_one_line(digits, tmp_path):
    """Same settings, but weights of modules this model no longer has (a checkpoint saved
    before the model code changed): a CheckpointMismatch, not a torch traceback."""
    from resnet.checkpoint import STATE_FILE, FolderCheckpoints
    from resnet.errors import CheckpointMismatch

    train(TrainConfig(**TINY), Recorder(stop_at=3), checkpoints=tmp_path, data=digits)
    newest = Path(FolderCheckpoints(tmp_path).found()[0][1]) / STATE_FILE
    saved = torch.load(newest, weights_only=True)
    saved["model"]["stages.0.0.layers.0.extra.weight"] = torch.ones(3)
    torch.save(saved, newest)
    with pytest.raises(CheckpointMismatch, match="do not fit this model") as err:
        train(TrainConfig(**TINY), checkpoints=tmp_path, data=digits)
    assert "extra.weight" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graph_step_logic_matches_eager_step_for_step(digits, precision):
    """The graph form's static buffers, device-side learning rate and iteration counter,
    run without capture on CPU, give the eager form's numbers exactly: weights, running
    statistics, momentum, window sums and the recorded history, through an LR drop, a
    warm-up and an evaluation."""
    base = {**TINY, "iterations": 16, "eval_every": 4, "warmup": "3", "precision": precision}
    results = {}
    for step in ("eager", "graph"):
        cfg = TrainConfig(**base, step=step)
        result = train(cfg, data=digits)
        results[step] = result
    eager, graph = results["eager"], results["graph"]
    strip = lambda h: [{k: v for k, v in r.items() if k != "images_per_s"} for r in h]  # noqa: E731
    assert strip(graph.history) == strip(eager.history)
    assert graph.lr_trace == eager.lr_trace and len(set(graph.lr_trace["lr"])) >= 3
    assert graph.layer_responses == eager.layer_responses


def test_graph_step_keeps_state_in_place_and_resumes_exactly(digits, tmp_path):
    """What a captured graph relies on: the step writes into the same tensors every time
    (no rebinding of weights, grads, momentum or sums), and a graph-form run stopped and
    resumed from its checkpoint ends where a straight one does."""
    from resnet.step import Step, make_optimizer

    model = TrainConfig(**TINY).build_model(10, 3)
    opt = make_optimizer(model, 0.1, 0.9, 1e-4)
    step = Step(model, opt, torch.device("cpu"), graph=True)
    x, y = digits.train_x[:32].float() / 255, digits.train_y[:32]
    step(x, y, 0.1, 0)
    ptrs = [t.data_ptr() for t in step._state_tensors()]
    for i in range(1, 4):
        step(x, y, 0.1 / i, i)
    assert [t.data_ptr() for t in step._state_tensors()] == ptrs
    assert opt.param_groups[0]["lr"].item() == pytest.approx(0.1 / 3)
    assert step._it.item() == 3 and step.window()[2] == 4 * 32

    # The warm-up before a capture leaves no trace: after it (a fresh optimizer, then a
    # resumed one), the next step gives what an untouched eager step gives.
    for resumed in (False, True):
        model = TrainConfig(**TINY).build_model(10, 3)
        opt = make_optimizer(model, 0.1, 0.9, 1e-4)
        if resumed:
            Step(model, opt, torch.device("cpu"))(x, y, 0.1, 0)
        twin = copy.deepcopy(model)
        twin_opt = make_optimizer(twin, 0.1, 0.9, 1e-4)
        twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # not shared buffers
        graphed = Step(model, opt, torch.device("cpu"), graph=True)
        graphed._x, graphed._y = x.clone(), y.clone()
        graphed._lr.fill_(0.1)
        graphed._warm_up()
        before = [t.clone() for t in (*twin.parameters(), *twin.buffers())]
        assert all(
            torch.equal(a, b)
            for a, b in zip((*model.parameters(), *model.buffers()), before, strict=True)
        )
        graphed(x, y, 0.1, 1)
        Step(twin, twin_opt, torch.device("cpu"))(x, y, 0.1, 1)
        for a, b in zip(
            (*model.parameters(), *model.buffers()),
            (*twin.parameters(), *twin.buffers()),
            strict=True,
        ):
            assert torch.equal(a, b)

    cfg = TrainConfig(**TINY, step="graph", checkpoint_every=2)
    straight = train(cfg, data=digits)
    train(cfg, Recorder(stop_at=5), checkpoints=tmp_path, data=digits)
    resumed = train(cfg, checkpoints=tmp_path, data=digits)
    strip = lambda h: [{k: v for k, v in r.items() if k != "images_per_s"} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(straight.history)


def test_model_compiles_without_graph_breaks():
    """What torch.compile will trace on a GPU, checked on CPU without inductor's slow
    C++ build: Dynamo captures forward in one graph and AOTAutograd traces backward."""
    from resnet import ModelSpec, build

    model = build(ModelSpec(depth=8, shortcut="A")).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32).to(memory_format=torch.channels_last)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    compiled = torch.compile(model, backend="aot_eager")
    out = compiled(x)
    out.sum().backward()
    assert torch.allclose(out, model(x), atol=1e-5)
    assert all(p.grad is not None for p in model.parameters())


def test_data_on_device_gives_a_replica_its_part_of_the_batch(digits):
    from resnet.train import _data_on_device

    cpu = torch.device("cpu")
    whole = _data_on_device(TrainConfig(**TINY), digits, cpu)[0].next()
    part = _data_on_device(TrainConfig(**TINY), digits, cpu, rank=1, replicas=2)[0].next()
    assert torch.equal(part[0], whole[0][16:]) and torch.equal(part[1], whole[1][16:])


def test_large_image_folder_streams_trains_and_resumes(tmp_path):
    """ImageNet-style folders (images over 64 px) stream from disk with the paper's ImageNet
    augmentation; a stop and a resume continue at the same batch."""
    from test_data import write_folder

    root = tmp_path / "big"
    write_folder(root, {"train": 6, "test": 2}, ("a", "b"), size=72)
    cfg = TrainConfig(
        dataset=f"imagefolder:{root}",
        data_dir=str(tmp_path),
        stem="imagenet",
        depth=18,
        width=8,
        batch_size=4,
        iterations=4,
        eval_every=2,
        val_size=2,
    )
    first = train(cfg, Recorder(stop_at=3), checkpoints=tmp_path / "ck")
    assert first.status == "stopped" and first.iterations == 3
    rec = Recorder()
    result = train(cfg, rec, checkpoints=tmp_path / "ck")
    assert rec.started["resumed_from"] == 3 and result.status == "finished"
    assert [r["iteration"] for r in result.history] == [2, 4]
    assert all(0 <= r["test/error"] <= 1 for r in result.history)
    assert len(result.layer_responses["std"]) == 17  # 18 weight layers less the linear one
