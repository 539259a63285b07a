"""ablate from Python: the same plans, checks and errors as the `ablate` command, as
keyword-only typed functions (ablations/__init__.py re-exports them).

    import ablations
    import reports

    plan = ablations.plan_study("examples/se_study.yaml", seeds=2)  # checked whole
    summary = ablations.run(plan, tracking_uri="sqlite:///mlflow.db")
    study = reports.load_study(plan.experiment, tracking_uri="sqlite:///mlflow.db")
    study.arms  # a pandas DataFrame: mean, spread and verdict per arm

A study is named one way everywhere: a built-in name or a study file with `preset=`, or
its MLflow experiment (`NAME@PRESET`, which is `plan.experiment`). A mistake raises a typed
error with a one-line message (ablations.errors.AblateError, resnet.errors.ResnetError)
before anything is written, as the command says it.
"""

from __future__ import annotations

from pathlib import Path

from ablations import cluster, lease
from ablations.plan import Plan, make_plan
from ablations.request import Request
from ablations.runner import RunOptions, RunSummary, run_study
from ablations.study import experiment_name
from ablations.tracking import existing, probe, resolve_uri
from reports import build_report


def make(request: Request) -> Plan:
    """The checked plan of a request (what `ablate show` and `ablate run` make): placed on
    the Ray cluster it names (joined to count its resources), else on this machine."""
    return make_plan(request, cluster.resources(request.address))


def refuse_if_running(request: Request, wait: bool = False) -> None:
    """`ablate run` of a study another driver runs refuses in seconds, before its plan is
    made (the lease is taken later, once the plan is checked); `wait`: it will wait."""
    if wait:
        return
    uri = resolve_uri(request.tracking_uri)
    probe(uri)
    name = experiment_name(request.study, request.preset)
    lease.refuse_if_running(existing(uri), name)


def plan_study(
    study: str,
    *,
    preset: str | None = None,
    seeds: int | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    replicas: int | None = None,
    gpus_per_trial: str = "auto",
    cpus_per_trial: float | None = None,
    max_concurrent: int | None = None,
    target_ci: float | None = None,
    max_seeds: int | None = None,
    address: str | None = None,
) -> Plan:
    """The checked plan of a study (a built-in name or a study file); the keywords are the
    flags of `ablate show` and `ablate run` (`ablate run --help` explains each)."""
    request = Request(
        study=str(study),
        preset=preset,
        seeds=seeds,
        dataset=dataset,
        data_dir=data_dir,
        replicas=replicas,
        gpus_per_trial=gpus_per_trial,
        cpus_per_trial=cpus_per_trial,
        max_concurrent=max_concurrent,
        target_ci=target_ci,
        max_seeds=max_seeds,
        address=address,
    )
    return make(request)


def run(
    plan: Plan,
    *,
    tracking_uri: str | None = None,
    storage: str | None = None,
    address: str | None = None,
    progress: bool = False,
    wait: bool = False,
) -> RunSummary:
    """Run a plan (resumes what the store already holds of it) and return its summary.
    `storage`: Ray's storage for checkpoints (a folder or a bucket URI); `address`: a Ray
    cluster (default RAY_ADDRESS, else a local Ray); `wait`: when another driver runs the
    study, wait for it to end (then run what it left) instead of refusing."""
    return run_study(plan, RunOptions(tracking_uri, storage, progress, address, wait))


def report(
    study: str | Plan,
    *,
    preset: str | None = None,
    tracking_uri: str | None = None,
    out: str | Path | None = None,
    mlflow_ui_url: str | None = None,
) -> Path:
    """Write a study's HTML report (as `ablate report`); returns the page's path."""
    name = study.experiment if isinstance(study, Plan) else experiment_name(study, preset)
    uri = resolve_uri(tracking_uri)
    probe(uri)
    return build_report(name, uri, out or f"ablate-reports/{name}", mlflow_ui_url=mlflow_ui_url)
