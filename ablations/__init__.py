"""Ablation studies of residual networks from Python: `plan_study`, `run` and `report`
(ablations/api.py), with the same plans, checks and errors as the `ablate` command.

    import ablations
    import reports

    plan = ablations.plan_study("examples/se_study.yaml", seeds=2)  # checked whole
    summary = ablations.run(plan, tracking_uri="sqlite:///mlflow.db")
    study = reports.load_study(plan.experiment, tracking_uri="sqlite:///mlflow.db")
    study.arms  # a pandas DataFrame: mean, spread and verdict per arm

They load on first use (as resnet's names do), so that `import ablations` and `ablate
--help` stay fast: running a study needs Ray, torch and MLflow, which listing one does not.
"""

from __future__ import annotations

import importlib

__all__ = ["plan_study", "report", "run"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("ablations.api"), name)
    raise AttributeError(f"module 'ablations' has no attribute {name!r}")
