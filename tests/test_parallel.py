"""One trial on several data-parallel replicas (torch.distributed with gloo, on CPU) trains
what one process trains with the same `bn_batch`, and `bn_batch` itself changes the result.

"The same" is measured against float rounding itself: the same one-process run started
from weights perturbed by one unit in the last place of float32 drifts from the original by
an amount no arithmetic reordering can beat; the replicas' run must stay within a small
multiple of that drift, and halving `bn_batch` must move the run far beyond it.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from resnet.config import TrainConfig
from resnet.parallel import ghost_batches
from resnet.spec import resnet

RECIPE = {
    "model": "test_parallel:nudged",
    "dataset": "digits",
    "iterations": 160,
    "eval_every": 20,
    "batch_size": 32,
    "lr": 0.01,
    "seed": 3,
}


def nudged(num_classes: int, in_channels: int, nudge: bool = False):
    """ResNet-8 whose weights are moved by one float32 unit in the last place when
    `nudge` (a builder the tests use to measure float rounding's own effect)."""
    model = resnet(num_classes, in_channels, depth=8)
    if nudge:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.nextafter(p, torch.full_like(p, float("inf"))))
    return model


def _replica(rank: int, replicas: int, port: int, settings: dict, out: str) -> None:
    import os
    from pathlib import Path

    from resnet.checkpoint import FolderCheckpoints
    from resnet.data import load_dataset
    from resnet.train import train

    torch.set_num_threads(1)
    if replicas > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=replicas)
    config = TrainConfig(**settings, replicas=replicas)
    data = load_dataset("digits", ".", config.val_size)
    result = train(config, data=data, checkpoints=f"{out}/ck{rank}")
    if rank == 0:
        state = FolderCheckpoints(Path(out) / "ck0").load("cpu")
        torch.save({"history": result.history, "model": state["model"]}, f"{out}/result.pt")
    if replicas > 1:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(tmp_path, name: str, replicas: int = 1, **settings) -> dict:
    out = tmp_path / name
    out.mkdir()
    args = (replicas, _free_port(), {**RECIPE, **settings}, str(out))
    mp.start_processes(_replica, args=args, nprocs=replicas, start_method="spawn")
    return torch.load(out / "result.pt", weights_only=False)


def drift(a: dict, b: dict) -> tuple[float, float]:
    """(mean absolute difference of the training loss over the evaluations, relative L2
    difference of the final weights: parameters, not running statistics)."""
    pairs = list(zip(a["history"], b["history"], strict=True))
    loss = sum(abs(x["train/loss"] - y["train/loss"]) for x, y in pairs) / len(pairs)
    names = [k for k in a["model"] if "running" not in k and "num_batches" not in k]
    diff = sum(float(((a["model"][k] - b["model"][k]) ** 2).sum()) for k in names)
    norm = sum(float((a["model"][k] ** 2).sum()) for k in names)
    return loss, (diff / norm) ** 0.5


@pytest.mark.slow
def test_two_replicas_train_what_one_trains_and_bn_batch_acts(tmp_path):
    one = run(tmp_path, "one", bn_batch=8)
    nudge = run(tmp_path, "nudge", bn_batch=8, nudge=True)
    two = run(tmp_path, "two", replicas=2, bn_batch=8)
    half = run(tmp_path, "half", bn_batch=4)
    rounding, replicas, setting = drift(one, nudge), drift(one, two), drift(one, half)
    print(f"drift (loss, weights): rounding {rounding}, replicas {replicas}, bn_batch {setting}")
    # SGD amplifies any difference: one ulp at the start moves the weights by percents in
    # a few hundred steps. Two replicas sum the gradients in another order than one
    # process, a difference of that kind: their drift is of the nudge's size.
    for r, p in zip(rounding, replicas, strict=True):
        assert p <= 5 * r, (p, r)
    # Halving bn_batch changes what is trained: the training loss moves far more.
    assert setting[0] >= 10 * replicas[0], (setting, replicas)


def test_ghost_batches_of_the_whole_batch_normalize_as_batchnorm():
    """One ghost batch is BatchNorm itself: outputs and running statistics agree to float
    rounding (a different reduction order)."""
    torch.manual_seed(0)
    plain = torch.nn.BatchNorm2d(5)
    ghost = torch.nn.BatchNorm2d(5)
    assert ghost_batches(torch.nn.Sequential(ghost), 12) == 1
    x = torch.randn(12, 5, 6, 6)
    torch.testing.assert_close(ghost(x), plain(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ghost.running_var, plain.running_var, rtol=1e-6, atol=1e-7)
    # Two ghost batches: each half normalized on its own.
    ghost.train()
    halves = torch.nn.BatchNorm2d(5)
    ghost_batches(torch.nn.Sequential(halves), 6)
    expected = torch.cat([torch.nn.functional.batch_norm(h, None, None, training=True)
                          for h in x.split(6)])  # fmt: skip
    torch.testing.assert_close(halves(x), expected, rtol=1e-5, atol=1e-5)


def test_bn_batch_must_divide_a_replicas_batch():
    with pytest.raises(ValueError, match="bn_batch: 12 does not divide a replica's batch of 16"):
        TrainConfig(batch_size=32, replicas=2, bn_batch=12)
    assert TrainConfig(batch_size=32, replicas=2).bn_batch == 16
    assert TrainConfig(batch_size=32).bn_batch == 32


# -- through `ablate run`: Ray Train replicas -------------------------------------------

REPLICAS = """\
name: {name}
question: Does a trial of two data-parallel replicas run, record and resume as one trial?
dataset: digits
scientific:
  shortcut: [A]
fixed: {{depth: 8, iterations: {iterations}, eval_every: 20, batch_size: 32, bn_batch: 8,
        replicas: 2}}
seeds: [0]
"""


@pytest.mark.slow
def test_a_study_of_two_replicas_runs_end_to_end_and_reports(
    ray_local, tmp_path, monkeypatch, capsys
):
    from mlflow.tracking import MlflowClient

    from ablations.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(REPLICAS.format(name="pair", iterations=40))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["show", "s.yaml", "--tracking-uri", uri]) == 0
    assert "1 trial(s) at once, each 2 replicas of 1 CPU" in capsys.readouterr().out
    assert main(["run", "s.yaml", "--quiet", "--tracking-uri", uri]) == 0
    assert "1 trials; 0 already done; this run: 1 finished" in capsys.readouterr().out
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("pair")
    (run,) = client.search_runs([exp.experiment_id], "tags.`ablate.role` = 'trial'")
    params, tags = run.data.params, run.data.tags
    assert (params["replicas"], params["bn_batch"]) == ("2", "8")
    assert tags["ablate.device"] == "2 replicas x cpu (1 thread)"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(steps) == [20, 40]  # the first replica's evaluations, each once
    assert main(["report", "s.yaml", "--tracking-uri", uri]) == 0
    assert (tmp_path / "ablate-reports" / "pair" / "index.html").exists()


@pytest.mark.slow
def test_a_killed_replica_restarts_the_group_from_its_checkpoint_into_the_same_run(tmp_path):
    from test_faults import (
        Ablate,
        alive,
        assert_steps_once,
        newest_checkpoints,
        trial_runs,
        wait_for,
    )

    runner = Ablate(tmp_path)
    iterations, every = 120, 20
    (tmp_path / "s.yaml").write_text(REPLICAS.format(name="killone", iterations=iterations))
    db, storage = tmp_path / "m.db", tmp_path / "res"
    args = ["run", "s.yaml", "--quiet", "--tracking-uri", f"sqlite:///{db}"]
    try:
        proc = runner.start(*args, "--storage", str(storage))

        def replicas_part_way():
            family = runner.watch(proc)
            replicas = {p: v for p, v in family.items() if "RayTrainWorker" in v.title}
            its = newest_checkpoints(storage, "killone").values()
            return replicas if len(replicas) == 2 and its and 2 * every <= max(its) else None

        replicas = wait_for(replicas_part_way, 300, "both replicas part-way", proc)
        victim = max(replicas)
        os_kill(victim)
        wait_for(lambda: not alive({victim: replicas[victim]}), 30, "the replica to die")
        code, output = runner.finish(proc, 600)
        assert code == 0, output[-3000:]
        client, (run,) = trial_runs(db, "killone")  # the same run, not a second one
        assert (run.info.status, run.data.tags["ablate.status"]) == ("FINISHED", "finished")
        assert int(run.data.tags["ablate.resumed_from"]) >= 2 * every  # not from scratch
        assert_steps_once(client, run, iterations, every)
    finally:
        runner.close()


def os_kill(pid: int) -> None:
    import os
    import signal

    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def two_nodes(tmp_path):
    """Two Ray nodes on 127.0.0.1 (`ray start --head`, then `ray start --address`), one CPU
    each, stopped by pid (`ray stop` would end every Ray process on the machine)."""
    import os
    import subprocess
    import tempfile
    import time
    from pathlib import Path

    from test_faults import alive, kill_pids, procs, tree
    from test_scaleout import BIN, clean_env

    from ablations.cluster import _token_available

    port = _free_port()
    temp = Path(tempfile.mkdtemp(prefix="rn", dir="/tmp"))
    env = clean_env(**({"RAY_AUTH_MODE": "token"} if _token_available() else {}))
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    head = [str(BIN / "ray"), "start", "--head", "--port", str(port), "--temp-dir", str(temp)]
    head += ["--include-dashboard=false", *common]
    worker = [str(BIN / "ray"), "start", "--address", f"127.0.0.1:{port}", *common]
    members = {}

    def cluster():
        for pid, proc in procs().items():
            if str(temp) in proc.title:
                members.update(tree(pid))
        return members

    try:
        for cmd in (head, worker):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
            cluster()
        raylets = [p for p, v in cluster().items() if "raylet/raylet" in v.title]
        deadline = time.monotonic() + 60
        while len(raylets) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            raylets = [p for p, v in cluster().items() if "raylet/raylet" in v.title]
        assert len(raylets) == 2, raylets
        yield f"127.0.0.1:{port}", raylets, cluster, env
    finally:
        cluster()
        for pid in alive(members):
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
        time.sleep(2)
        kill_pids(members)


@pytest.mark.slow
def test_the_replicas_of_one_trial_span_two_nodes(two_nodes, tmp_path):
    import subprocess
    import time

    from test_faults import kill_pids, procs, tree
    from test_scaleout import BIN

    address, raylets, cluster, env = two_nodes
    (tmp_path / "s.yaml").write_text(REPLICAS.format(name="span", iterations=40))
    cmd = [str(BIN / "ablate"), "run", "s.yaml", "--quiet", "--address", address]
    cmd += ["--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    out = open(tmp_path / "run.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    hosts: dict[int, int] = {}  # replica process -> the raylet (node) that started it
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            for pid, p in procs().items():
                if "RayTrainWorker" in p.title:
                    hosts.setdefault(pid, p.ppid)
            time.sleep(0.2)
        code = proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            kill_pids(tree(proc.pid))
    assert code == 0, (tmp_path / "run.log").read_text()[-3000:]
    assert set(hosts.values()) == set(raylets), (hosts, raylets)  # one replica per node


def test_replicas_never_change_what_a_study_trains(tmp_path, capsys):
    """`--replicas` says how a trial runs: the plan keeps the study's BN batch and its
    fingerprint, and one store takes the study at 1 and then 2 replicas without calling it
    changed; a study whose BN batch a replica's batch cannot hold is refused, naming
    bn_batch and the fix."""
    from conftest import plan_of

    from ablations.cli import main
    from ablations.environment import code_version
    from ablations.ledger import record, stored
    from ablations.tracking import Store

    path = tmp_path / "s.yaml"
    path.write_text(
        REPLICAS.format(name="pairs", iterations=40).replace("replicas: 2", "replicas: 1")
    )
    one, two = plan_of(str(path)), plan_of(str(path), replicas=2)
    assert [t.config.replicas for t in two.trials] == [2]
    assert one.trials[0].config.bn_batch == two.trials[0].config.bn_batch == 8
    assert one.fingerprint() == two.fingerprint()
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    Store(uri).open_study(record(one), code_version())
    stored(two, uri, str(tmp_path / "res"))  # raises when the store calls it changed

    # bn_batch left open: the study normalizes over its whole batch of 32
    path.write_text(path.read_text().replace(" bn_batch: 8,", ""))
    capsys.readouterr()
    code = main(["show", str(path), "--replicas", "2", "--tracking-uri", uri])
    err = capsys.readouterr().err
    assert code == 2 and "bn_batch" in err and "--replicas 2" in err, err
    assert len(err.strip().splitlines()) == 1, err
