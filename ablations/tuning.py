"""The tuning phase: per arm, Optuna (through Ray Tune's OptunaSearch) tunes the study's
search space on a short budget; the seeds then train at each arm's best point.

Resumable like the seed phase: tuning trials that ended in an earlier run are fed back to
Optuna as evaluated points, and only the remaining number of trials runs. A tuning trial
that was interrupted is marked failed ("interrupted") and not counted; it is cheap to redo.
"""

from __future__ import annotations

import math
from typing import Any

import search_spaces
from ablations.errors import AblateError
from ablations.events import METRIC, TrialJob, TuningTracker
from ablations.execute import fit
from ablations.ledger import Ledger
from ablations.store import Store, StudyIds, code_version
from reports.data import decode

Point = tuple[dict[str, Any], float, str]  # (tuned values, validation error, run id)


def tune_arms(
    plan, store: Store, study: StudyIds, ledger: Ledger, storage: str, options
) -> dict[str, tuple[dict[str, Any], str]] | None:
    """{arm: (best values, the tuning run that found them)} for every arm, or None when
    the phase was interrupted."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for state in ledger.tuning:
        if not state.done and state.status != "failed":
            store.fail(state.run_id, "interrupted; its tuning trial was redone")
    types, count, best = plan.param_types(), len(ledger.tuning), {}
    for arm in plan.arms:
        points = [_point(state, plan.space, types) for state in ledger.tuned(arm)]
        left = plan.nuisance.trials - len(points)
        if left > 0:
            tracker = _tune(plan, arm, points, left, store, study, storage, count, options)
            if tracker is None:
                return None
            count = tracker.next
            points += tracker.ended
        if not points:
            raise AblateError(f"no tuning trial of arm {arm} finished; see the MLflow runs")
        values, _, run_id = min(points, key=lambda p: p[1])
        best[arm] = (values, run_id)
    return best


def _tune(plan, arm, points, left, store, study, storage, count, options) -> TuningTracker | None:
    """`left` more tuning trials of one arm; the tracker that saw them, or None when
    interrupted."""
    from ray.tune.search.optuna import OptunaSearch

    trial = plan.tuning_trial(arm)
    searcher = OptunaSearch(
        search_spaces.to_optuna(plan.space),
        metric=METRIC,
        mode="min",
        seed=plan.nuisance.seed,
        points_to_evaluate=[values for values, _, _ in points] or None,
        evaluated_rewards=[error for _, error, _ in points] or None,
    )
    code = code_version(plan.model)
    tracker = TuningTracker(store, study, arm, count, plan.params(trial), code)
    view = None
    if options.progress:
        from ablations.progress import StudyView

        view = StudyView(f"{plan.experiment}: tuning {arm}", {}, 0, left)
    job = TrialJob.of(plan, trial, "", storage, checkpoints=False)
    complete = fit([job], "tuning", plan.placement, tracker, view, searcher, left, options.address)
    return tracker if complete else None


def _point(state, space: dict, types: dict[str, str]) -> Point:
    values = {p: decode(types[p], state.params[p]) for p in space}
    error = state.metrics.get("val/error")
    return values, math.inf if error is None or math.isnan(error) else error, state.run_id
