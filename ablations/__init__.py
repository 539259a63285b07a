"""Ablation studies from Python: the same plan, checks and errors as the `ablate` command.

    import ablations
    import reports

    plan = ablations.plan_study("examples/se_study.yaml", seeds=2)  # checked whole
    summary = ablations.run(plan, tracking_uri="sqlite:///mlflow.db")
    study = reports.load_study(plan.experiment, "sqlite:///mlflow.db")
    study.arms  # a pandas DataFrame: mean, spread and verdict per arm

A mistake raises a typed error with a one-line message (ablations.errors.AblateError,
resnet.errors.ResnetError) before anything is written, as the command says it.

SIGTERM (a scheduler, `kill`) stops ablate as Ctrl-C does (`stop_on_sigterm`): its handler
calls whatever handles SIGINT now (Ray Tune's graceful stop while trials run), or raises
KeyboardInterrupt. Forwarding SIGINT would not do: a background job of a non-interactive
shell (`ablate run ... &` in a script) starts with SIGINT ignored.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any


def plan_study(study: str, **flags: Any):
    """The checked plan of a study (a built-in name or a study file); `flags` are those of
    `ablate show` and `ablate run` (preset, seeds, dataset, target_ci, ...)."""
    from ablations.plan import Request, make_plan

    return make_plan(Request(study=str(study), **flags))


def run(study, *, progress: bool = False, **flags: Any):
    """Run a study (a plan, a name or a study file; resumes what a store already holds)
    and return its RunSummary. `flags`: tracking_uri, storage, address, and for a name
    or file also the flags of `plan_study`."""
    from ablations.plan import Plan
    from ablations.runner import RunOptions, run_study

    where = {k: flags.pop(k, None) for k in ("tracking_uri", "storage", "address")}
    plan = study if isinstance(study, Plan) else plan_study(study, **flags, **where)
    return run_study(plan, RunOptions(progress=progress, **where))


def report(study: str, preset: str | None = None, tracking_uri: str | None = None,
           out: str | Path | None = None, mlflow_ui_url: str | None = None) -> Path:  # fmt: skip
    """Write a study's HTML report (as `ablate report`); returns the page's path."""
    from ablations.store import probe, resolve_uri
    from ablations.study import experiment_name
    from reports import build_report

    name = experiment_name(study, preset)
    uri = resolve_uri(tracking_uri)
    probe(uri)
    return build_report(name, uri, out or f"ablate-reports/{name}", mlflow_ui_url=mlflow_ui_url)


def _on_sigterm(signum, frame) -> None:
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not _on_sigterm:
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """Install the handler (only the main thread may); again after anything that replaced
    it (ray.init installs its own)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
