"""Malformed study files and flags: exit 2, one line naming the problem and what is
allowed, no traceback, nothing run and nothing written (cli.py's exit-code contract).
`ablate show` refuses exactly what `ablate run` refuses: both make the same plan."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ablations.cli import main

GOOD = """\
name: badin
question: Does any malformed input get through to a trial?
dataset: digits
scientific:
  shortcut: [none, A]
reference: {shortcut: A}
fixed: {depth: 8, iterations: 4, eval_every: 2, batch_size: 32}
seeds: [0]
presets:
  smoke:
    seeds: [0]
"""


def _study(**replace: str) -> str:
    """GOOD with whole lines replaced: {'old line start': 'new line(s)'}."""
    lines = GOOD.splitlines()
    for start, new in replace.items():
        hits = [i for i, line in enumerate(lines) if line.startswith(start)]
        assert len(hits) == 1, start
        lines[hits[0]] = new
    return "\n".join(lines) + "\n"


# A user's model builder (a module beside the study file) and a study of it.
BUILDER = """\
from typing import Literal

from torch import nn


def build(num_classes: int, in_channels: int, width: int = 8,
          gate: Literal["none", "se"] = "none") -> nn.Module:
    if width > 64:
        raise ValueError(f"width {width} is more than this net takes")
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(width, num_classes),
    )
"""


def _own(module: str, fixed: str) -> str:
    """A study of the builder in `module`.py, its factor gate, and these fixed settings."""
    return (
        _study(
            **{
                "  shortcut:": "  gate: [none, se]",
                "reference:": "reference: {gate: none}",
                "fixed:": fixed,
            }
        )  # fmt: skip
        + f"model: {module}:build\n"
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# (id, files to write in the working folder, argv after `ablate`, regex the line must match)
# A file value of bytes is written as is; None makes a directory of that name.
CASES = [
    (
        "unknown-top-key",
        {"s.yaml": GOOD + "colour: red\n"},
        ["run", "s.yaml"],
        r"s\.yaml: colour: unknown key; allowed: name, question, .*seeds",
    ),
    (
        "unknown-setting",
        {"s.yaml": _study(**{"fixed:": "fixed: {dpeth: 8}"})},
        ["run", "s.yaml"],
        r"fixed\.dpeth: unknown setting; allowed: depth, shortcut",
    ),
    (
        "wrong-type-factor",
        {"s.yaml": _study(**{"  shortcut:": "  shortcut: A"})},
        ["run", "s.yaml"],
        r"scientific\.shortcut: must be a list of levels, got 'A'",
    ),
    (
        "wrong-type-setting",
        {"s.yaml": _study(**{"fixed:": "fixed: {depth: 8, iterations: many}"})},
        ["run", "s.yaml"],
        r"fixed\.iterations: must be a positive integer, got 'many'",
    ),
    (
        "empty-factor",
        {"s.yaml": _study(**{"  shortcut:": "  shortcut: []", "reference": ""})},
        ["run", "s.yaml"],
        r"scientific\.shortcut: empty list of levels; give at least one",
    ),
    (
        "invalid-depth",
        {"s.yaml": _study(**{"fixed:": "fixed: {depth: 21, iterations: 4}"})},
        ["run", "s.yaml"],
        r"depth: .*depth 21 does not split .*; try depth 14, 20 or 26",
    ),
    (
        "impossible-skip-length",
        {"s.yaml": _study(**{"fixed:": "fixed: {depth: 14, skip_length: 3, iterations: 4}"})},
        ["run", "s.yaml"],
        r"depth: units of 3 layer\(s\) need .*divisible by 3.*try depth",
    ),
    (
        "skip-length-out-of-range",
        {"s.yaml": _study(**{"fixed:": "fixed: {depth: 8, skip_length: 4, iterations: 4}"})},
        ["run", "s.yaml"],
        r"skip_length: 4 is not one of 1, 2, 3",
    ),
    (
        "bottleneck-skip-2",
        {"s.yaml": _study(**{"fixed:": "fixed: {depth: 29, bottleneck: true, skip_length: 2}"})},
        ["run", "s.yaml"],
        r"skip_length: bottleneck units .* have skip length 3, not 2",
    ),
    (
        "unknown-shortcut",
        {"s.yaml": _study(**{"  shortcut:": "  shortcut: [A, D]"})},
        ["run", "s.yaml"],
        r"shortcut: 'D' is not one of none, A, B, C",
    ),
    (
        "negative-seed",
        {"s.yaml": _study(**{"seeds:": "seeds: [-1]"})},
        ["run", "s.yaml"],
        r"seeds\.0: .*greater than or equal to 0",
    ),
    (
        "duplicate-seeds",
        {"s.yaml": _study(**{"seeds:": "seeds: [0, 0]"})},
        ["run", "s.yaml"],
        r"seeds: duplicate seed in \[0, 0\]",
    ),
    (
        "unknown-dataset",
        {"s.yaml": _study(**{"dataset:": "dataset: mnist"})},
        ["run", "s.yaml"],
        r"unknown dataset 'mnist'; allowed: cifar10, cifar100, digits, imagefolder",
    ),
    (
        "missing-imagefolder",
        {"s.yaml": _study(**{"dataset:": "dataset: imagefolder:/nonexistent/ablate-data"})},
        ["run", "s.yaml"],
        r"imagefolder:/nonexistent/ablate-data does not exist; expected",
    ),
    (
        "study-is-a-directory",
        {"d.yaml": None},
        ["run", "d.yaml"],
        r"d\.yaml: cannot read study file \(Is a directory\)",
    ),
    (
        "study-missing",
        {},
        ["run", "nope.yaml"],
        r"nope\.yaml: cannot read study file \(No such file or directory\)",
    ),
    (
        "invalid-utf8",
        {"s.yaml": GOOD.encode().replace(b"Does", b"D\xff\xfees")},
        ["run", "s.yaml"],
        r"s\.yaml: .*UTF-8",
    ),
    (
        "yaml-syntax",
        {"s.yaml": GOOD.replace("seeds: [0]\n", "seeds: [0\n")},
        ["run", "s.yaml"],
        r"s\.yaml: line \d+ YAML syntax error",
    ),
    (
        "not-a-mapping",
        {"s.yaml": "- name: x\n"},
        ["run", "s.yaml"],
        r"a study file is a mapping with keys name, question",
    ),
    (
        "question-too-short",
        {"s.yaml": _study(**{"question:": "question: why?"})},
        ["run", "s.yaml"],
        r"question: .*at least 10 characters",
    ),
    (
        "reference-not-a-level",
        {"s.yaml": _study(**{"reference:": "reference: {shortcut: B}"})},
        ["run", "s.yaml"],
        r"reference\.shortcut: 'B' is not a level",
    ),
    (
        "factor-also-fixed",
        {"s.yaml": _study(**{"fixed:": "fixed: {depth: 8, iterations: 4, shortcut: A}"})},
        ["run", "s.yaml"],
        r"fixed\.shortcut: also a scientific factor",
    ),
    (
        "negative-lr",
        {"s.yaml": _study(**{"fixed:": "fixed: {depth: 8, lr: -0.1}"})},
        ["run", "s.yaml"],
        r"lr: must be a positive number, got -0\.1",
    ),
    (
        "unknown-lr-policy",
        {"s.yaml": _study(**{"fixed:": "fixed: {depth: 8, lr_policy: exp}"})},
        ["run", "s.yaml"],
        r"lr_policy: 'exp' is not one of step, plateau, cosine, constant",
    ),
    (
        "unknown-preset",
        {"s.yaml": GOOD},
        ["run", "s.yaml", "--preset", "huge"],
        r"unknown preset 'huge'; presets: smoke",
    ),
    (
        "unknown-study-name",
        {},
        ["run", "no_such_study"],
        r"unknown study 'no_such_study'; built-in studies: .*shortcut_types",
    ),
    (
        "negative-seeds-flag",
        {"s.yaml": GOOD},
        ["run", "s.yaml", "--seeds", "-1"],
        r"--seeds: must be at least 1, got -1",
    ),
    (
        "seeds-flag-not-int",
        {"s.yaml": GOOD},
        ["run", "s.yaml", "--seeds", "two"],
        r"argument --seeds: invalid int value: 'two'",
    ),
    (
        "max-concurrent-0",
        {"s.yaml": GOOD},
        ["run", "s.yaml", "--max-concurrent", "0"],
        r"--max-concurrent 0: must be at least 1",
    ),
    (
        "cpus-per-trial-0",
        {"s.yaml": GOOD},
        ["run", "s.yaml", "--cpus-per-trial", "0"],
        r"--cpus-per-trial 0: must be positive",
    ),
    (
        "gpus-per-trial-1.5",
        {"s.yaml": GOOD},
        ["run", "s.yaml", "--gpus-per-trial", "1.5"],
        r"--gpus-per-trial 1\.5: use auto, 0 \(CPU\), or a fraction in \(0, 1\] of a GPU "
        r"per replica; a replica trains on one GPU: ask for --replicas N",
    ),
    (
        "gpus-per-trial-no-gpu",
        {"s.yaml": GOOD},
        ["run", "s.yaml", "--gpus-per-trial", "1"],
        r"--gpus-per-trial 1 asked for, but this machine has no GPU; use auto or 0",
    ),
    (
        "unknown-flag",
        {"s.yaml": GOOD},
        ["run", "s.yaml", "--colour", "red"],
        r"unrecognized arguments: --colour red",
    ),
    ("unknown-command", {}, ["frobnicate"], r"invalid choice: 'frobnicate'"),
    (
        "unreachable-tracking-uri",
        {"s.yaml": GOOD},
        ["run", "s.yaml", "--tracking-uri", "http://127.0.0.1:{port}"],
        r"cannot reach MLflow server http://127\.0\.0\.1:\d+: .*; start it, or drop",
    ),
    (
        "tracking-uri-scheme",
        {"s.yaml": GOOD},
        ["run", "s.yaml", "--tracking-uri", "ftp://x/y"],
        r"tracking URI 'ftp://x/y': use sqlite:///PATH, http\(s\)://HOST:PORT or file:PATH",
    ),
    (
        "tracking-store-folder-missing",
        {"s.yaml": GOOD},
        ["run", "s.yaml", "--tracking-uri", "sqlite:///no/such/dir/m.db"],
        r"tracking store folder .*no/such/dir does not exist",
    ),
    (
        "unknown-search-space",
        {"s.yaml": GOOD + "nuisance: {search_space: lr_wieght_decay, trials: 2}\n"},
        ["run", "s.yaml"],
        r"nuisance\.search_space: unknown search space 'lr_wieght_decay'; available: lr, ",
    ),
    (
        "search-space-key-not-a-setting",
        {
            "s.yaml": GOOD + "nuisance: {search_space: space.yaml, trials: 2}\n",
            "space.yaml": "params:\n  learning_rate: {loguniform: [0.01, 0.5]}\n",
        },
        ["run", "s.yaml"],
        r"search space space\.yaml: learning_rate is not a setting; allowed: depth, ",
    ),
    (
        "search-space-value-not-allowed",
        {
            "s.yaml": GOOD + "nuisance: {search_space: space.yaml, trials: 2}\n",
            "space.yaml": "params:\n  lr_policy: {choice: [step, exponential]}\n",
        },
        ["run", "s.yaml"],
        r"search space space\.yaml: lr_policy choice .*'exponential' is not one of step",
    ),
    (
        "factor-level-cannot-build",
        {
            "s.yaml": _study(
                **{"  shortcut:": "  depth: [8, 21]", "reference:": "", "fixed:": "fixed: {}"}
            )
        },
        ["run", "s.yaml"],
        r"s\.yaml: arm depth=21: depth: .*try depth 14, 20 or 26",
    ),
    (
        "batch-larger-than-data",
        {"s.yaml": _study(**{"fixed:": "fixed: {depth: 8, iterations: 4, batch_size: 4096}"})},
        ["run", "s.yaml"],
        r"batch_size 4096 exceeds the 1350 training images of digits",
    ),
    (
        "relative-imagefolder-missing",
        {"s.yaml": _study(**{"dataset:": "dataset: imagefolder:./pics"})},
        ["run", "s.yaml"],
        r"imagefolder:/.*/here/pics does not exist",  # made absolute where it was typed
    ),
    (
        "gpus-per-trial-word",
        {"s.yaml": GOOD},
        ["run", "s.yaml", "--gpus-per-trial", "many"],
        r"--gpus-per-trial many: use auto, 0 \(CPU\), or a fraction in \(0, 1\] of a GPU",
    ),
    (
        "cpus-per-trial-more-than-machine",
        {"s.yaml": GOOD},
        ["run", "s.yaml", "--cpus-per-trial", "4096"],
        r"--cpus-per-trial 4096 asked for, but this machine has \d+ CPUs",
    ),
    (
        "target-ci-negative",
        {"s.yaml": GOOD},
        ["run", "s.yaml", "--target-ci", "-1"],
        r"--target-ci -1: must be a positive number of points",
    ),
    (
        "max-seeds-alone",
        {"s.yaml": GOOD},
        ["run", "s.yaml", "--max-seeds", "5"],
        r"--max-seeds needs --target-ci",
    ),
    (
        "storage-scheme",
        {"s.yaml": GOOD},
        ["run", "s.yaml", "--storage", "nope://bucket/x"],
        r"--storage nope://bucket/x: .*",
    ),
    (
        "replicas-zero",
        {"s.yaml": GOOD},
        ["run", "s.yaml", "--replicas", "0"],
        r"replicas: must be a positive integer, got 0",
    ),
    (
        "bn-batch-not-a-divisor",
        {"s.yaml": _study(**{"fixed:": "fixed: {depth: 8, batch_size: 32, bn_batch: 12}"})},
        ["run", "s.yaml"],
        r"bn_batch: 12 does not divide a replica's batch of 32 images \(batch_size 32 over 1",
    ),
    (
        "replicas-change-the-bn-batch",
        {"s.yaml": GOOD},
        ["run", "s.yaml", "--replicas", "2"],
        r"arm shortcut=none: --replicas 2 gives each replica 16 of the batch's 32 images, but "
        r"the study normalizes BatchNorm over 32 \(bn_batch\); set bn_batch in the study",
    ),
    (
        "replicas-unplaceable",
        # bn_batch set: two replicas of 16 images train what one does; the machine is short
        {
            "s.yaml": _study(
                **{"fixed:": "fixed: {depth: 8, iterations: 4, batch_size: 32, bn_batch: 16}"}
            )
        },  # fmt: skip
        ["run", "s.yaml", "--replicas", "2", "--cpus-per-trial", "512"],
        r"--cpus-per-trial 512: a trial of 2 replicas needs 1024 CPUs, but this machine has "
        r"\d+ CPUs",
    ),
    (
        "replicas-as-a-factor",
        {"s.yaml": _study(**{"reference:": "  replicas: [1, 2]"})},
        ["run", "s.yaml"],
        r"scientific\.replicas: how a trial runs is no factor; fix it",
    ),
    (
        "model-not-importable",
        {"s.yaml": GOOD + "model: nosuch_module:build\n"},
        ["run", "s.yaml"],
        r"s\.yaml: model nosuch_module:build: cannot import nosuch_module \(ModuleNotFound",
    ),
    (
        "model-not-a-function",
        {"s.yaml": GOOD + "model: gm0:nothing\n", "gm0.py": "def build(): pass\n"},
        ["run", "s.yaml"],
        r"model gm0:nothing: gm0 has no function nothing",
    ),
    (
        "model-factor-misspelt",
        {"s.yaml": _own("gm1", "fixed: {widht: 8}"), "gm1.py": BUILDER},
        ["run", "s.yaml"],
        r"fixed\.widht: unknown setting; allowed: width, gate, dataset",
    ),
    (
        "model-factor-wrong-type",
        {"s.yaml": _own("gm2", "fixed: {width: wide}"), "gm2.py": BUILDER},
        ["run", "s.yaml"],
        r"fixed\.width: must be an integer, got 'wide'",
    ),
    (
        "model-factor-not-a-choice",
        {"s.yaml": _own("gm3", "fixed: {gate: tanh}"), "gm3.py": BUILDER},
        ["run", "s.yaml"],
        r"gate: 'tanh' is not one of none, se",
    ),
    (
        "model-builder-raises",
        {"s.yaml": _own("gm4", "fixed: {width: 128}"), "gm4.py": BUILDER},
        ["run", "s.yaml"],
        r"arm gate=none: model gm4:build failed to build with \{'gate': 'none', 'width': 128\}: "
        r"ValueError: width 128 is more than this net takes",
    ),
    (
        "model-factor-untyped",
        {
            "s.yaml": GOOD.replace("shortcut", "depth")
            .replace("[none, A]", "[1, 2]")
            .replace("{depth: A}", "{depth: 1}")
            + "model: gm5:build\n",
            "gm5.py": "def build(num_classes, in_channels, depth: int = 1, layers: list = ()):\n"
            "    pass\n",
        },
        ["run", "s.yaml"],
        r"model gm5:build: factor layers has type <class 'list'>; a factor is int, float",
    ),
    (
        "cifar-missing-offline",
        {"s.yaml": GOOD},
        ["run", "s.yaml", "--dataset", "cifar10", "--data-dir", "./nowhere"],
        r"cifar10 not found in /.*/here/nowhere and could not be downloaded \(offline\?",
    ),
]

# Flags only `run` has; every other case is also given to `show`.
RUN_ONLY = ("--storage", "--target-ci", "--max-seeds", "--quiet", "--report")
# `show` notes a missing CIFAR-10 (`run` will download it); only `run` can find out that
# the download fails.
SHOW_DIFFERS = {"cifar-missing-offline"}


def _write(root: Path, files: dict) -> None:
    for name, content in files.items():
        path = root / name
        if content is None:
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under root with its size and modification time."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def _argv(argv: list[str]) -> list[str]:
    port = _closed_port()
    return [a.format(port=port) for a in argv]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working folder, with no store or cluster taken from the environment, and a
    network that fails at once (a closed local port as proxy) so a download is refused
    in seconds instead of fetching 170 MB on a machine that is online."""
    work = tmp_path / "here"
    work.mkdir()
    monkeypatch.chdir(work)
    for var in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "ABLATE_STORAGE"):
        monkeypatch.delenv(var, raising=False)
    for var in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{_closed_port()}")
    yield work
    import urllib.request

    urllib.request.install_opener(None)  # torchvision's download installs a global one


def _check_one_line(err: str, out: str, pattern: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    assert lines[0].startswith("ablate: error: "), lines[0]
    assert re.search(pattern, lines[0]), (pattern, lines[0])
    assert out == "", out


def _commands(case: tuple) -> list[str]:
    name, _, argv, _ = case
    both = argv[0] == "run" and not set(argv) & set(RUN_ONLY) and name not in SHOW_DIFFERS
    return ["run", "show"] if both else [argv[0]]


PARAMS = [
    pytest.param(command, *case[1:], id=f"{command}-{case[0]}")
    for case in CASES
    for command in _commands(case)
]


@pytest.mark.parametrize(("command", "files", "argv", "pattern"), PARAMS)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    workdir, capsys, command, files, argv, pattern
):
    if "--gpus-per-trial" in argv and "1" in argv:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a CUDA GPU")
    _write(workdir, files)
    before = _snapshot(workdir)
    ray_before = sys.modules.get("ray")
    code = main(_argv([command, *argv[1:]]))
    captured = capsys.readouterr()
    assert code == 2, captured.err
    _check_one_line(captured.err, captured.out, pattern)
    assert _snapshot(workdir) == before  # no mlflow.db, no ablate-results, nothing touched
    if ray_before is None:  # not imported by an earlier test: this call did not start Ray
        assert "ray" not in sys.modules


def test_show_notes_a_missing_cifar_that_run_would_download(workdir, capsys):
    (workdir / "s.yaml").write_text(GOOD)
    code = main(["show", "s.yaml", "--dataset", "cifar10", "--data-dir", "./nowhere"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"note: cifar10 is not in {workdir / 'nowhere' / 'cifar-10-batches-py'} yet" in out
    assert not (workdir / "nowhere").exists()


def test_a_corrected_typo_runs_against_the_same_store(workdir, capsys, ray_local):
    """A typo refused before anything is written leaves no study behind to conflict with:
    the corrected file runs into the same store (the fingerprint never saw the typo)."""
    store = f"sqlite:///{workdir / 'm.db'}"
    (workdir / "s.yaml").write_text(
        GOOD + "nuisance: {search_space: lr_wieght_decay, trials: 1, iterations: 2}\n"
    )
    assert main(["run", "s.yaml", "--quiet", "--tracking-uri", store]) == 2
    assert not (workdir / "m.db").exists()
    (workdir / "s.yaml").write_text(
        GOOD + "nuisance: {search_space: lr_weight_decay, trials: 1, iterations: 2}\n"
    )
    code = main(["run", "s.yaml", "--quiet", "--tracking-uri", store, "--storage", "res"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 finished" in out


def _store_rows(db: Path) -> dict[str, list]:
    with sqlite3.connect(db) as con:
        return {
            table: sorted(map(repr, con.execute(f"select * from {table}").fetchall()))
            for table in ("experiments", "runs", "tags", "params", "metrics", "latest_metrics")
        }


@pytest.fixture
def stored_study(workdir):
    """A store holding study `badin` with its parent and child runs (no training): the
    state `ablate run` leaves before its first trial reports."""
    from conftest import plan_of

    from ablations.environment import code_version
    from ablations.ledger import record
    from ablations.tracking import Store

    (workdir / "s.yaml").write_text(GOOD)
    db = workdir / "store" / "m.db"
    db.parent.mkdir()
    plan = plan_of("s.yaml")
    store = Store(f"sqlite:///{db}")
    study = store.open_study(record(plan), code_version())
    for trial in plan.trials:
        store.create_trial(study, trial.key, trial.arm, plan.params(trial), code_version())
    assert len(store.trial_runs(study)) == 2
    changed = GOOD.replace("iterations: 4", "iterations: 6")
    (workdir / "changed.yaml").write_text(changed)
    return db


def test_existing_store_of_another_study_version_is_refused_untouched(
    stored_study, workdir, capsys
):
    db = stored_study
    before_rows, before_files = _store_rows(db), _snapshot(workdir)
    assert len(before_rows["runs"]) == 3  # parent + 2 children
    code = main(["run", "changed.yaml", "--tracking-uri", f"sqlite:///{db}"])
    captured = capsys.readouterr()
    assert code == 2
    _check_one_line(
        captured.err,
        captured.out,
        r"holds study badin with another definition \(changed: iterations: 4 -> 6\); "
        r"use another --tracking-uri, or rename the study",
    )
    assert _store_rows(db) == before_rows
    after_files = _snapshot(workdir)
    # Opening the database may touch its file; no other file may appear or change.
    assert set(after_files) == set(before_files)
    assert {k: v for k, v in after_files.items() if k != "store/m.db"} == {
        k: v for k, v in before_files.items() if k != "store/m.db"
    }
    # `show` refuses it the same way, reading only.
    assert main(["show", "changed.yaml", "--tracking-uri", f"sqlite:///{db}"]) == 2
    assert "with another definition (changed: iterations: 4 -> 6)" in capsys.readouterr().err
    assert _store_rows(db) == before_rows


# A few cases through the real console script: what a user's terminal gets.
CONSOLE_CASES = [
    "unknown-top-key",
    "invalid-utf8",
    "unreachable-tracking-uri",
    "max-concurrent-0",
    "unknown-flag",
]


def _console(
    args: list[str], cwd: Path, timeout: float = 120, ray_tmp: Path | None = None
) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("ablate")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "ABLATE_STORAGE")
    }
    if ray_tmp is not None:
        env["RAY_TMPDIR"] = str(ray_tmp)
    return subprocess.run(
        [str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.parametrize("case", [*CONSOLE_CASES, "unknown-search-space", "cifar-missing-offline"])
def test_console_script_bad_input(workdir, tmp_path, case):
    _, files, argv, pattern = next(c for c in CASES if c[0] == case)
    _write(workdir, files)
    before = _snapshot(workdir)
    ray_tmp = tmp_path / "ray"  # where Ray would put its session, had it started
    ray_tmp.mkdir()
    done = _console(_argv(argv), workdir, ray_tmp=ray_tmp)
    assert done.returncode == 2, done.stderr
    _check_one_line(done.stderr, done.stdout, pattern)
    assert _snapshot(workdir) == before
    assert not list(ray_tmp.iterdir())  # no Ray was started


def test_console_script_existing_store_of_another_version(stored_study, workdir):
    db = stored_study
    before = _store_rows(db)
    done = _console(["run", "changed.yaml", "--tracking-uri", f"sqlite:///{db}"], workdir)
    assert done.returncode == 2, done.stderr
    _check_one_line(done.stderr, done.stdout, r"holds study badin with another definition")
    assert _store_rows(db) == before
