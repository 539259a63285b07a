"""The pipeline as a user meets it: placement of trials, what `list` and `show` say before
anything runs, a study file given to `report`, errors inside a trial, and replication to
a precision. Real Ray, a real SQLite store, real files."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
from conftest import plan_of
from mlflow.tracking import MlflowClient
from test_scaleout import ray_cluster  # noqa: F401, F811 - a fixture

from ablations.cli import main
from ablations.errors import AblateError
from ablations.placement import Resources, place

# -- placement ----------------------------------------------------------------------------


def test_auto_placement_without_gpus_runs_on_cpus():
    p = place(4e7, trials=8, resources=Resources(2, 0, "this machine"))
    assert (p.device, p.gpus_per_trial, p.cpus_per_trial, p.at_once) == ("cpu", 0.0, 1.0, 2)


def test_auto_placement_packs_cifar_models_and_gives_imagenet_a_whole_gpu():
    cluster = Resources(cpus=32, gpus=4, where="the Ray cluster at x:6379", gpu_name="H200")
    cifar = place(4e7, trials=24, resources=cluster)
    assert (cifar.device, cifar.gpus_per_trial, cifar.at_once) == ("cuda", 0.25, 16)
    assert "4 trials share each GPU, 16 trial(s) at once" in cifar.describe()
    imagenet = place(3.6e9, trials=4, resources=cluster)
    assert (imagenet.gpus_per_trial, imagenet.at_once) == (1.0, 4)
    # CPUs bound it too, and so does --max-concurrent.
    few_cpus = Resources(cpus=6, gpus=4, where="here")
    assert place(4e7, 24, few_cpus).at_once == 6
    assert place(4e7, 24, cluster, max_concurrent=3).at_once == 3
    # 0 forces the CPU even where GPUs are.
    forced = place(4e7, 24, cluster, gpus_per_trial=0.0)
    assert (forced.device, forced.at_once) == ("cpu", 24)


def test_placement_refuses_what_the_machine_lacks():
    with pytest.raises(AblateError, match="--gpus-per-trial 2 asked for, but here has 1 GPU"):
        place(4e7, 4, Resources(8, 1, "here"), gpus_per_trial=2.0)
    with pytest.raises(AblateError, match="--cpus-per-trial 16 asked for, but here has 8 CPUs"):
        place(4e7, 4, Resources(8, 1, "here"), cpus_per_trial=16)


@pytest.mark.slow
def test_auto_on_a_real_ray_cluster_without_gpus_plans_cpu_trials(ray_cluster, tmp_path):  # noqa: F811
    """`--gpus-per-trial auto` asks the cluster itself (here `ray start --head` with two
    CPUs and no GPU) and `ablate show` says where the trials will run."""
    from test_scaleout import BIN, clean_env

    address, _, _ = ray_cluster
    cmd = [str(BIN / "ablate"), "show", "shortcut_types", "--preset", "smoke"]
    cmd += ["--address", address]
    env = clean_env()
    view = json.loads(
        subprocess.run(
            [*cmd, "--json"], capture_output=True, text=True, check=True, cwd=tmp_path, env=env
        ).stdout
    )
    assert view["at_once"] == 2 and view["placement"].startswith("on CPUs")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tmp_path, env=env)
    assert f"runs on CPUs (the Ray cluster at {address}: 2 CPUs, no GPU used)" in out.stdout


# -- list and show ------------------------------------------------------------------------


def test_list_shows_each_study_with_its_presets_and_trial_counts(capsys):
    assert main(["list", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["shortcut_types"]["trials"] == 4 * 2 * 3  # shortcuts x depths x seeds
    assert rows["shortcut_types"]["presets"]["smoke"] == 4 * 1 * 2
    assert rows["depth"]["trials"] == 2 * 5 * 3
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "shortcut_types       24 trials on cifar10 (smoke: 8" in text


def test_show_gives_placement_compute_and_a_time_estimate(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["show", "shortcut_types", "--preset", "smoke", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert len(view["trials"]) == 8 and view["at_once"] >= 1
    est = view["estimate"]
    assert est["total_s"] > 0 and "measured on this machine" in est["basis"]
    # Scaled by MACs: a trial of a bigger model is estimated to take longer.
    per = est["per_trial_s"]
    assert per["shortcut=C depth=8 seed=0"] > per["shortcut=none depth=8 seed=0"]
    assert main(["show", "shortcut_types", "--preset", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "runs on CPUs (this machine" in out and "time: about" in out
    assert not list(tmp_path.iterdir())  # show writes nothing


def test_show_effect_plans_seeds_from_the_spread_measured_in_the_store(
    smoke_store, tmp_path, monkeypatch, capsys
):
    """With finished seeds in the store, `show --effect` uses their seed-to-seed spread
    (and the time estimate their measured speed); without them, the stated prior."""
    from conftest import TINY_STUDY

    from reports import load_study, stats

    uri, _, plan, _ = smoke_store
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY_STUDY)
    args = ["show", "tiny.yaml", "--effect", "0.3", "--json"]
    assert main([*args, "--tracking-uri", uri]) == 0
    view = json.loads(capsys.readouterr().out)
    trials = load_study(plan.experiment, tracking_uri=uri).trials  # the spread the report measures
    sd, dof = stats.seed_spread_of(trials)
    assert view["seed_plan"]["measured"] and view["seed_plan"]["sd"] == pytest.approx(sd)
    assert view["seed_plan"]["seeds_per_arm"] == stats.seeds_needed(0.3, sd)
    assert view["estimate"]["basis"].startswith("past runs of 2 arm(s) in the store")
    # Another store, where the study never ran: the prior.
    assert main([*args, "--tracking-uri", f"sqlite:///{tmp_path / 'empty.db'}"]) == 0
    prior = json.loads(capsys.readouterr().out)["seed_plan"]
    assert not prior["measured"] and prior["sd"] == stats.PRIOR_SEED_SD
    assert prior["seeds_per_arm"] == stats.seeds_needed(0.3, stats.PRIOR_SEED_SD)
    assert not (tmp_path / "empty.db").exists()  # show wrote nothing


# -- a trial's own errors -----------------------------------------------------------------


def test_a_deterministic_error_in_a_trial_fails_it_once_with_its_reason(
    ray_local, tmp_path, monkeypatch, capsys
):
    """An image folder whose layout is fine (the plan checks it) but with a file that is
    not an image: the trial fails with the decoder's reason, in full, and Ray does not
    retry it; the other arm's trials are not disturbed."""
    from test_data import write_folder

    monkeypatch.chdir(tmp_path)
    root = tmp_path / "pics"
    write_folder(root, {"train": 12, "test": 3}, ("a", "b"))
    (root / "train" / "b" / "999.png").write_bytes(b"not a png at all")
    (tmp_path / "s.yaml").write_text(
        textwrap.dedent(
            """\
            name: broken
            question: Does a corrupt image stop its trials once, with the reason?
            dataset: imagefolder:pics
            scientific:
              shortcut: [A]
            fixed: {depth: 8, iterations: 4, eval_every: 2, batch_size: 4, val_size: 4}
            seeds: [0]
            """
        )
    )
    code = main(["run", "s.yaml", "--quiet", "--storage", "res"])
    out = capsys.readouterr().out
    assert code == 1 and "1 failed" in out
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("broken")
    (run,) = client.search_runs([exp.experiment_id], "tags.`ablate.role` = 'trial'")
    error = run.data.tags["ablate.error"]
    assert error.startswith("DataError: imagefolder:") and "cannot decode train/b/999.png" in error
    # One attempt: the trial's results hold one ending, and no attempt came after it.
    results = [
        json.loads(line)
        for path in (tmp_path / "res").glob("broken/seeds-*/*/result.json")
        for line in path.read_text().splitlines()
    ]
    assert [r["kind"] for r in results] == ["final"]


# -- report takes what run takes ----------------------------------------------------------


def test_report_takes_a_study_file_like_run(smoke_store, tmp_path, monkeypatch, capsys):
    from conftest import TINY_STUDY

    uri, _, plan, _ = smoke_store
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "tiny.yaml"
    study.write_text(TINY_STUDY)
    assert main(["report", str(study), "--tracking-uri", uri, "--out", "out"]) == 0
    assert "report: out/index.html" in capsys.readouterr().out
    assert plan.question.split("?")[0] in (tmp_path / "out" / "index.html").read_text()


# -- replication to a precision -----------------------------------------------------------

REPLICATE = """\
name: replicate
question: Are seeds added only where an arm's confidence interval is still wide?
dataset: digits
scientific:
  shortcut: [none, A]
fixed: {depth: 8, iterations: 30, eval_every: 15, batch_size: 32}
seeds: [0, 1]
"""


def _half_width(errors: list[float]) -> float:
    from scipy import stats

    n = len(errors)
    if n < 2:
        return math.inf
    mean = sum(errors) / n
    sd = math.sqrt(sum((e - mean) ** 2 for e in errors) / (n - 1))
    return stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)


@pytest.mark.slow
def test_target_ci_adds_seeds_only_where_needed_and_stops_at_max_seeds(ray_local, tmp_path):
    """Two-stage replication: once the first stage (seeds 0 and 1) has ended, each arm gets
    in one round the seeds its first-stage spread asks for, max(2, ceil((t s0 / target)^2))
    capped at --max-seeds; a rerun adds nothing. The target is chosen from the two-seed
    results so that the arms differ."""
    from ablations.runner import RunOptions, run_study

    (tmp_path / "s.yaml").write_text(REPLICATE)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    options = RunOptions(tracking_uri=uri, storage=str(tmp_path / "res"), progress=False)
    run_study(plan_of(str(tmp_path / "s.yaml")), options)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("replicate")

    def errors() -> dict[str, dict[int, float]]:
        out: dict[str, dict[int, float]] = {}
        for r in client.search_runs([exp.experiment_id], "tags.`ablate.role` = 'trial'"):
            seed = int(r.data.params["seed"])
            out.setdefault(r.data.tags["ablate.arm"], {})[seed] = 100 * r.data.metrics["test/error"]
        return out

    first = errors()
    widths = sorted(_half_width(list(v.values())) for v in first.values())
    assert widths[0] < widths[1], "the two arms' two-seed spreads are equal; pick other settings"
    target = (widths[0] + widths[1]) / 2  # the narrow arm is done, the wide one is not
    max_seeds = 4
    plan = plan_of(str(tmp_path / "s.yaml"), target_ci=target, max_seeds=max_seeds)
    summary = run_study(plan, options)
    after = errors()
    from reports import replication

    for arm, seeds in after.items():
        stage = [first[arm][s] for s in (0, 1)]
        total = min(max_seeds, replication.needed_seeds(stage, target))
        assert sorted(seeds) == list(range(total)), arm  # the first stage sets the total
    narrow = min(first, key=lambda a: _half_width(list(first[a].values())))
    assert sorted(after[narrow]) == [0, 1]  # nothing added where the CI was narrow already
    wide = next(a for a in after if a != narrow)
    assert 2 < len(after[wide]) <= max_seeds
    assert summary.added == {wide: sorted(after[wide])[2:]}  # in one round
    parent = client.search_runs([exp.experiment_id], "tags.`ablate.role` = 'parent'")[0]
    rule = parent.data.tags["ablate.replication"]
    assert rule.startswith("two-stage (Stein 1945): 2 seeds per arm first")
    assert json.loads(parent.data.tags["ablate.seeds"]) == sorted(
        {s for seeds in after.values() for s in seeds}
    )
    again = run_study(plan, options)
    assert not again.added and not again.statuses  # a rerun adds nothing
    assert errors() == after


# -- ablate train -------------------------------------------------------------------------


def test_train_json_is_alone_on_stdout_and_progress_goes_to_stderr(tmp_path):
    cmd = [sys.executable, "-c", "import sys; from ablations.cli import main; sys.exit(main())"]
    args = ["train", "--dataset", "digits", "--depth", "8", "--iterations", "4"]
    args += ["--batch-size", "32", "--eval-every", "2", "--json"]
    args += ["--checkpoint-dir", str(tmp_path / "ck")]
    done = subprocess.run([*cmd, *args], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["iterations"] == 4
    assert "train" in done.stderr  # the progress bar's label
    # Run again on the same checkpoints: it says from which iteration it continued.
    done = subprocess.run([*cmd, *args], capture_output=True, text=True, check=True)
    assert "resumed from iteration 4" in done.stderr
    assert json.loads(done.stdout)["iterations"] == 4
