"""Every flag of every subcommand, once, with a valid value read from the flag's own
definition (the setting's default or first allowed value, the parser's default), so that a
flag that crashes cannot land. Values that would cost minutes (64k iterations, CIFAR-10)
are replaced by small ones of the same type. The flags are read from the parser itself:
a new flag without a value here fails the test that lists them."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ablations.cli import build_parser, main
from resnet.builders import load_builder
from resnet.config import TrainConfig
from resnet.settings import settings_of
from resnet.spec import ModelSpec

# Cheap values of the same type as the flag (the flag's own default would train for hours).
CHEAP = {
    "iterations": 4,
    "batch_size": 16,
    "eval_every": 2,
    "checkpoint_every": 2,
    "val_size": 100,
    "bn_batch": 8,
    "dataset": "digits",
    "depth": 8,
    "seeds": 1,
    "cpus_per_trial": 1.0,
    "max_concurrent": 1,
    "replicas": 1,
    "target_ci": 5.0,
    "max_seeds": 3,
    "effect": 1.0,
    "gpus_per_trial": "0",
    "device": "cpu",
    "preset": "smoke",
    "width": 16,
    "skip_length": 2,
    "num_classes": 10,
    "in_channels": 3,
    "mlflow_ui_url": "http://127.0.0.1:5000",
}
# Flags whose value is a place: made under the test's temporary folder.
PLACES = {"data_dir": "data", "storage": "res", "checkpoint_dir": "ckpt", "out": "report"}
STUDY = """\
name: flags
question: Does every flag of ablate work?
dataset: digits
scientific: {shortcut: [none, A]}
reference: {shortcut: A}
fixed: {depth: 8, iterations: 8, eval_every: 4, batch_size: 32}
seeds: [0, 1]
presets:
  quick: {fixed: {depth: 8, iterations: 4, eval_every: 2, batch_size: 16}}
"""
# Exercised elsewhere, with the real thing they need.
ELSEWHERE = {
    "--address": "tests/test_scaleout.py (a real `ray start --head` cluster on 127.0.0.1)",
}


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def flags(command: str) -> list[argparse.Action]:
    return [
        a
        for a in subparsers()[command]._actions
        if a.option_strings and a.option_strings[0] != "-h" and a.option_strings[0] not in ELSEWHERE
    ]


def _defaults() -> dict:
    """Each setting's own default, or its first allowed value (no default: resolved later)."""
    model = load_builder(TrainConfig().model).factors
    out = {}
    for s in [*settings_of(TrainConfig), *settings_of(ModelSpec), *model]:
        value = s.default if s.default is not None else (s.choices or (None,))[0]
        out.setdefault(s.name, value)
    return out


def argv(command: str, tmp_path: Path, **chosen) -> list[str]:
    """`command` with every one of its flags: `chosen`, else a cheap value, else the
    setting's or the parser's own default."""
    defaults, out = _defaults(), [command]
    for action in flags(command):
        name, flag = action.dest, action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            out.append(flag)
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            value = chosen.get(name, defaults.get(name))
            out.append(flag if value else f"--no-{flag[2:]}")
            continue
        if name in chosen:
            value = chosen[name]
        elif name in CHEAP:
            value = CHEAP[name]
        elif name in PLACES:
            value = tmp_path / PLACES[name]
        elif name == "tracking_uri":
            value = f"sqlite:///{tmp_path / 'm.db'}"
        elif defaults.get(name) is not None:
            value = defaults[name]
        else:
            value = action.default
        assert value is not None, f"no valid value known for {command} {flag}"
        out += [flag, str(value)]
    return out


def test_every_flag_has_a_value_or_a_test_that_uses_it(tmp_path):
    for command in subparsers():
        argv(command, tmp_path)  # asserts a value for each flag
    for flag, where in ELSEWHERE.items():
        test_file = Path(__file__).parent / Path(where.split()[0]).name
        assert flag in test_file.read_text(), (flag, where)


def test_list_and_version(capsys):
    assert main(["list", "--json"]) == 0
    assert {row["name"] for row in json.loads(capsys.readouterr().out)} >= {"depth"}
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0


def test_model_with_every_flag(tmp_path, capsys):
    """The ImageNet ResNet-18 of torchvision (option B): 11,689,512 parameters."""
    chosen = {"depth": 18, "stem": "imagenet", "shortcut": "B", "width": 64, "num_classes": 1000}
    assert main(argv("model", tmp_path, **chosen)) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["params"] == 11_689_512, counts["params"]


def test_show_with_every_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    chosen = {"preset": "smoke", "tracking_uri": f"sqlite:///{tmp_path / 'm.db'}", "seeds": 2}
    assert main(_with_study("show", "shortcut_types", tmp_path, **chosen)) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["experiment"] == "shortcut_types@smoke" and "target_plan" in view
    assert "seed_plan" in view and not (tmp_path / "m.db").exists()  # show writes nothing


def test_train_with_every_flag(tmp_path, capsys):
    args = argv("train", tmp_path, checkpoint_every=2)
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["iterations"] == 4 and summary["status"] == "finished"
    assert any((tmp_path / "ckpt").iterdir())


def _with_study(command: str, study: str, tmp_path: Path, **chosen) -> list[str]:
    args = argv(command, tmp_path, **chosen)
    return [args[0], study, *args[1:]]


@pytest.mark.slow
def test_run_report_ui_rm_with_every_flag(ray_local, tmp_path, monkeypatch, capsys):
    """run (into a real SQLite store and Ray), then report, ui (a real MLflow server) and
    rm of what it wrote, each with all its flags."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "flags.yaml"
    path.write_text(STUDY)
    db = f"sqlite:///{tmp_path / 'm.db'}"
    common = {"tracking_uri": db, "preset": "quick"}
    run = _with_study("run", str(path), tmp_path, **common, seeds=2)
    assert main(run) in (0, 3), capsys.readouterr()  # 3: the target CI not met: allowed
    out = capsys.readouterr().out
    assert "report:" in out and "this run:" in out
    assert main(_with_study("report", str(path), tmp_path, **common)) == 0
    assert (tmp_path / "report" / "index.html").is_file()

    port = _free_port()
    ui = _with_study("ui", str(path), tmp_path, **common, port=port)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    script = "import sys; from ablations.cli import main; sys.exit(main())"
    proc = subprocess.Popen([sys.executable, "-c", script, *ui], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert f"127.0.0.1:{port}" in proc.stdout.readline()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _answers(port):
            time.sleep(0.5)
        assert _answers(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)

    assert main(_with_study("rm", str(path), tmp_path, **common)) == 0
    assert "removed" in capsys.readouterr().out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    from urllib.request import urlopen

    try:
        with urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
            return True
    except OSError:
        return False
