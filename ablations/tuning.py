"""The nuisance phase: per arm, Optuna (through Ray Tune's OptunaSearch) tunes the named
search space on a short budget; the seeds then run at each arm's best point.

Resumable like the seed phase: finished tuning runs in MLflow are fed back to Optuna as
evaluated points, and only the remaining number of trials runs. A tuning trial that was
interrupted is marked failed ("interrupted") and not counted; it is cheap to redo.
"""

from __future__ import annotations

import dataclasses
import math
import time

from ray import tune
from ray.tune.search.optuna import OptunaSearch

import search_spaces
from ablations.callbacks import MlflowWriter
from ablations.errors import AblateError
from ablations.tracking import TERMINAL, Store

METRIC = "val_error"


class TuneWriter(MlflowWriter):
    """Creates each tuning trial's MLflow run when Ray starts it (values are sampled)."""

    def __init__(
        self,
        store: Store,
        exp_id: str,
        parent_id: str,
        arm: str,
        first_index: int,
        study: str,
        summary,
    ):
        super().__init__(store, [], summary)
        self.exp_id, self.parent_id, self.arm, self.study = exp_id, parent_id, arm, study
        self.next_index, self.keys = first_index, {}

    def key_of(self, trial) -> str:
        return self.keys[trial.trial_id]

    def on_trial_start(self, iteration, trials, trial, **info):
        key = f"{self.arm} tune={self.next_index}"
        self.next_index += 1
        self.keys[trial.trial_id] = key
        config = dict(trial.config["trial"]["config"])
        config.update({k: v for k, v in trial.config.items() if k != "trial"})
        config.pop("device", None)
        config.pop("data_dir", None)
        config.pop("compile", None)
        self.run_ids[key] = self.store.create_child(
            self.exp_id, self.parent_id, key, self.arm, config, {}, role="tune", study=self.study
        )
        self.logged[key] = -1


@dataclasses.dataclass
class _Summary:
    statuses: dict


def tune_arms(plan, options, store: Store, exp_id: str, parent_id: str) -> dict[str, dict]:
    """{arm: {"values": {param: best value}, "run_id": best tuning run}} for every arm."""
    import optuna

    from ablations.runner import _payload, init_ray, run_trial, storage_root

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    nuisance = plan.nuisance
    try:
        space = search_spaces.load(nuisance.search_space)
    except search_spaces.SearchSpaceError as err:
        raise AblateError(f"{plan.source}: nuisance.search_space: {err}") from None
    existing = store.child_runs(exp_id, role="tune")
    for run in existing.values():  # interrupted earlier: not counted, redone
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
        done = [
            r
            for r in store.child_runs(exp_id, role="tune").values()
            if r.data.tags.get("ablate.arm") == arm and r.data.tags.get("ablate.status") in TERMINAL
        ]
        left = nuisance.trials - len(done)
        if left > 0:
            points = [{p: float(r.data.params[p]) for p in space} for r in done]
            rewards = [_final_val_error(r) for r in done]
            payload = _payload(
                plan,
                dataclasses.replace(trial, config=config),
                "",
                -1,
                storage_root(options.storage),
                options,
            )
            payload["checkpoint_dir"] = None  # short runs: an interrupted one is redone
            payload["key"] = f"{arm} tune"
            init_ray(options)
            searcher = OptunaSearch(
                search_spaces.to_optuna(space),
                metric=METRIC,
                mode="min",
                seed=nuisance.seed,
                points_to_evaluate=points or None,
                evaluated_rewards=rewards or None,
            )
            count = len(store.child_runs(exp_id, role="tune"))
            writer = TuneWriter(store, exp_id, parent_id, arm, count, plan.experiment, _Summary({}))
            tuner = tune.Tuner(
                tune.with_resources(
                    run_trial, {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
                ),
                param_space={"trial": payload},
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    num_samples=left,
                    metric=METRIC,
                    mode="min",
                    max_concurrent_trials=options.max_concurrent,
                ),
                run_config=tune.RunConfig(
                    name=f"{plan.experiment}-tune-{time.strftime('%Y%m%d-%H%M%S')}",
                    storage_path=str(storage_root(options.storage) / "ray"),
                    callbacks=[writer],
                    verbose=0,
                ),
            )
            tuner.fit()
            writer.close_unfinished()
        done = [
            r
            for r in store.child_runs(exp_id, role="tune").values()
            if r.data.tags.get("ablate.arm") == arm and r.data.tags.get("ablate.status") in TERMINAL
        ]
        if not done:
            raise AblateError(f"no tuning trial of arm {arm} finished; see the MLflow runs")
        winner = min(done, key=_final_val_error)
        best[arm] = {
            "values": {p: _typed(winner.data.params[p]) for p in space},
            "run_id": winner.info.run_id,
        }
    return best


def _final_val_error(run) -> float:
    value = run.data.metrics.get("val/error")
    return math.inf if value is None or math.isnan(value) else value


def _typed(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
