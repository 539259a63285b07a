"""The nuisance phase: per arm, Optuna (through Ray Tune's OptunaSearch) tunes the named
search space on a short budget; the seeds then run at each arm's best point.

Resumable like the seed phase: finished tuning runs in MLflow are fed back to Optuna as
evaluated points, and only the remaining number of trials runs. A tuning trial that was
interrupted is marked failed ("interrupted") and not counted; it is cheap to redo.
"""

from __future__ import annotations

import dataclasses
import math

import search_spaces
from ablations.errors import AblateError
from ablations.events import METRIC
from ablations.execute import Search, fit
from ablations.recorder import TuningRecorder
from ablations.store import TERMINAL, Store, StudyRecord
from resnet.settings import decode


def tune_arms(
    plan, store: Store, record: StudyRecord, storage: str, view=None, address: str | None = None
) -> dict[str, dict] | None:
    """{arm: {"values": {setting: best value}, "run_id": best tuning run}} for every arm,
    or None when the phase was interrupted."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    nuisance, space = plan.nuisance, plan.space
    types = store.setting_types(record)
    for run in store.trial_runs(record.experiment_id, role="tune").values():
        if run.data.tags.get("ablate.status") not in (*TERMINAL, "failed"):
            store.fail(run.info.run_id, "interrupted; its tuning trial was redone")
    best: dict[str, dict] = {}
    for arm in plan.arms:
        trial = next(t for t in plan.trials if t.arm == arm)
        config = dataclasses.replace(
            trial.config,
            seed=nuisance.seed,
            iterations=nuisance.iterations or trial.config.iterations,
        )
        done = _finished(store, record, arm)
        left = nuisance.trials - len(done)
        if left > 0:
            points = [{p: decode(types[p], r.data.params[p]) for p in space} for r in done]
            rewards = [_val_error(r) for r in done]
            searcher = OptunaSearch(
                search_spaces.to_optuna(space),
                metric=METRIC,
                mode="min",
                seed=nuisance.seed,
                points_to_evaluate=points or None,
                evaluated_rewards=rewards or None,
            )
            count = len(store.trial_runs(record.experiment_id, role="tune"))
            recorder = TuningRecorder(store, record, plan.experiment, arm, count, config.science())
            payload = {
                "key": f"{arm} tune",
                "arm": arm,
                "config": {**config.to_dict(), "device": plan.placement.device},
                "threads": plan.placement.threads,
                "storage": storage,
                "checkpoints": False,  # short runs: an interrupted one is redone
            }
            complete = fit(
                f"{plan.experiment}-tune",
                [payload],
                plan.placement,
                storage,
                [recorder, *([view] if view else [])],
                search=Search(searcher, left),
                namer=recorder.name,
                address=address,
            )
            recorder.close()
            if not complete:
                return None
            done = _finished(store, record, arm)
        if not done:
            raise AblateError(f"no tuning trial of arm {arm} finished; see the MLflow runs")
        winner = min(done, key=_val_error)
        best[arm] = {
            "values": {p: decode(types[p], winner.data.params[p]) for p in space},
            "run_id": winner.info.run_id,
        }
    return best


def _finished(store: Store, record: StudyRecord, arm: str) -> list:
    return [
        r
        for r in store.trial_runs(record.experiment_id, role="tune").values()
        if r.data.tags.get("ablate.arm") == arm and r.data.tags.get("ablate.status") in TERMINAL
    ]


def _val_error(run) -> float:
    value = run.data.metrics.get("val/error")
    return math.inf if value is None or math.isnan(value) else value
