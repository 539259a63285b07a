"""Runs a study: one Ray Tune trial per arm x seed, recorded in MLflow.

Resume model: the MLflow store says what is done (a child run per trial key with
`ablate.status` finished or diverged), and each trial key has its own checkpoint folder
under `--storage`. Every `ablate run` starts a fresh Tuner over what is missing: finished
trials are skipped, interrupted ones resume from their checkpoint into their own run. Ray
retries a trial whose worker dies (FailureConfig); the retry finds the same checkpoint
folder. Only the driver writes to MLflow, from a Tune callback, and it logs an evaluation
only if its iteration is past the last one stored, so replays never duplicate.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ablations.errors import AblateError
from ablations.study import Plan, Trial
from ablations.tracking import TERMINAL, Store, check_reachable, resolve_uri, trial_params

RETRIES = 2  # Ray retries of a trial whose worker process died


@dataclass
class RunOptions:
    tracking_uri: str | None = None
    storage: str | None = None  # results and checkpoints; a shared path on a cluster
    address: str | None = None  # an existing Ray cluster (or RAY_ADDRESS)
    gpus_per_trial: float = 0.0
    cpus_per_trial: float = 1.0
    max_concurrent: int | None = None
    progress: bool = True


@dataclass
class RunSummary:
    experiment: str
    tracking_uri: str
    total: int
    skipped: int
    statuses: dict[str, str] = field(default_factory=dict)  # trial key -> status

    @property
    def failed(self) -> int:
        return sum(s == "failed" for s in self.statuses.values())


def slug(key: str) -> str:
    """A folder name for a trial key: readable, and unique through a short hash."""
    readable = re.sub(r"[^A-Za-z0-9_.=-]+", "_", key)[:80]
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def storage_root(storage: str | None) -> Path:
    return Path(storage or os.environ.get("ABLATE_STORAGE") or "ablate-results").resolve()


def validate_resources(options: RunOptions) -> None:
    if options.gpus_per_trial < 0 or options.gpus_per_trial > 1 and options.gpus_per_trial % 1:
        raise AblateError(
            f"--gpus-per-trial {options.gpus_per_trial}: use a fraction in (0, 1] "
            "to share a GPU, or a whole number"
        )
    if options.cpus_per_trial <= 0:
        raise AblateError(f"--cpus-per-trial {options.cpus_per_trial}: must be positive")
    if options.max_concurrent is not None and options.max_concurrent < 1:
        raise AblateError(f"--max-concurrent {options.max_concurrent}: must be at least 1")
    address = options.address or os.environ.get("RAY_ADDRESS")
    if options.gpus_per_trial > 0 and not address:
        import torch

        if not torch.cuda.is_available():
            raise AblateError(
                f"--gpus-per-trial {options.gpus_per_trial} asked for, but this "
                "machine has no CUDA GPU; drop the flag to run on CPU"
            )


@functools.lru_cache(maxsize=8)
def _data_info(dataset: str, data_dir: str) -> dict:
    """The data set's classes and channels; scanned once per run (an ImageNet folder walk
    is not free), shared by the up-front check and the creation of child runs."""
    from resnet.data import dataset_info

    return dataset_info(dataset, data_dir)


def open_study(plan: Plan, options: RunOptions) -> tuple[Store, str, str]:
    """Checks that cost no compute, then the experiment and its parent run: a bad flag,
    an unreachable store, a missing data set or a conflicting stored study stops here."""
    validate_resources(options)
    uri = resolve_uri(options.tracking_uri)
    check_reachable(uri)
    _data_info(plan.trials[0].config.dataset, plan.trials[0].config.data_dir)
    store = Store(uri)
    exp_id = store.experiment_id(plan.experiment)
    return store, exp_id, store.parent_run(exp_id, plan)


def pending_trials(
    plan: Plan,
    options: RunOptions,
    store: Store,
    exp_id: str,
    parent_id: str,
    tuned: dict[str, dict] | None = None,
) -> tuple[list[dict], int]:
    """One child run per trial key (created once, reused on every rerun); the payloads of
    the trials still to run, and how many are already done."""
    from resnet.complexity import complexity

    first = plan.trials[0].config
    info = _data_info(first.dataset, first.data_dir)
    existing = store.child_runs(exp_id)
    root = storage_root(options.storage)
    todo, done = [], 0
    for trial in plan.trials:
        run = existing.get(trial.key)
        if run is not None and run.data.tags.get("ablate.status") in TERMINAL:
            done += 1
            continue
        point = (tuned or {}).get(trial.arm)
        if point:
            trial = dataclasses.replace(
                trial, config=dataclasses.replace(trial.config, **point["values"])
            )
        if run is None:
            spec = trial.config.model_spec(info["num_classes"], info["in_channels"])
            params = {**trial_params(trial.config), **spec.to_dict(), **complexity(spec)}
            extra = {"tuned_from": point["run_id"]} if point else {}
            run_id = store.create_child(
                exp_id, parent_id, trial.key, trial.arm, params, extra, study=plan.experiment
            )
            logged = -1
        else:
            run_id = run.info.run_id
            logged = store.logged_upto(run_id)
            store.reopen(run_id)
        todo.append(_payload(plan, trial, run_id, logged, root, options))
    return todo, done


def _payload(
    plan: Plan, trial: Trial, run_id: str, logged: int, root: Path, options: RunOptions
) -> dict:
    config = trial.config.to_dict()
    config["device"] = "cuda" if options.gpus_per_trial > 0 else "cpu"
    return {
        "key": trial.key,
        "arm": trial.arm,
        "run_id": run_id,
        "logged_upto": logged,
        "config": config,
        "checkpoint_dir": str(root / "checkpoints" / plan.experiment / slug(trial.key)),
        "threads": max(1, int(options.cpus_per_trial)),
    }


def run_trial(tune_config: dict) -> None:
    """The Ray Tune trainable (runs in a worker): train, report each evaluation."""
    import torch
    from ray import tune

    from resnet.config import TrainConfig
    from resnet.train import Callback, train

    payload = tune_config["trial"]
    torch.set_num_threads(payload["threads"])

    class Report(Callback):
        def on_start(self, info: dict) -> None:
            tune.report(
                {
                    "kind": "start",
                    "resumed_from": info["resumed_from"],
                    "val_digest": info["val_digest"],
                    "train_size": info["train_size"],
                    "val_error": float("nan"),
                }
            )
            # Replay what the checkpoint holds: the driver logs only what it lacks.
            for record in info["history"]:
                tune.report(
                    {
                        "kind": "eval",
                        "record": json.dumps(record),
                        "val_error": record.get("val/error", float("nan")),
                    }
                )

        def on_eval(self, record: dict) -> None:
            tune.report(
                {
                    "kind": "eval",
                    "record": json.dumps(record),
                    "val_error": record.get("val/error", float("nan")),
                }
            )

    # Tuning trials: the sampled nuisance values sit beside the payload.
    overrides = {k: v for k, v in tune_config.items() if k != "trial"}
    config = TrainConfig.from_dict({**payload["config"], **overrides})
    result = train(config, Report(), checkpoint_dir=payload.get("checkpoint_dir"))
    final = {
        **result.summary(),
        "lr_trace": result.lr_trace,
        "layer_responses": result.layer_responses,
    }
    tune.report(
        {
            "kind": "final",
            "final": json.dumps(final),
            "val_error": final["val_error"] if final["val_error"] is not None else float("nan"),
        }
    )


def run_study(plan: Plan, options: RunOptions) -> RunSummary:
    """Run every missing trial of the plan; returns what happened to each."""
    store, exp_id, parent_id = open_study(plan, options)
    tuned = None
    if plan.nuisance is not None:
        from ablations.tuning import tune_arms

        tuned = tune_arms(plan, options, store, exp_id, parent_id)
    todo, done = pending_trials(plan, options, store, exp_id, parent_id, tuned)
    summary = RunSummary(plan.experiment, store.uri, len(plan.trials), done)
    if todo:
        store.client.update_run(parent_id, status="RUNNING")
        _fit(plan, options, store, todo, summary)
    statuses = set(summary.statuses.values())
    outcome = "KILLED" if "interrupted" in statuses else "FAILED" if summary.failed else "FINISHED"
    store.client.set_terminated(parent_id, outcome)
    return summary


def init_ray(options: RunOptions) -> None:
    import ray

    if ray.is_initialized():
        return
    address = options.address or os.environ.get("RAY_ADDRESS")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
            configure_logging=True,
        )
    except (ConnectionError, RuntimeError) as err:
        raise AblateError(
            f"cannot reach the Ray cluster at {address}: {str(err).splitlines()[0]}"
        ) from None
    # After ray.init, which installs a SIGTERM handler that aborts the process: SIGTERM (a
    # scheduler, `kill`) stops like Ctrl-C instead. Ray Tune's SIGINT handling ends the
    # trials, whose checkpoints are already on disk, and the runs are marked interrupted.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    if options.gpus_per_trial > 0 and not ray.cluster_resources().get("GPU"):
        raise AblateError(
            f"--gpus-per-trial {options.gpus_per_trial} asked for, but the Ray cluster has no GPU"
        )


def _fit(
    plan: Plan, options: RunOptions, store: Store, todo: list[dict], summary: RunSummary
) -> None:
    from ray import tune

    from ablations.callbacks import MlflowWriter, StudyView

    init_ray(options)
    writer = MlflowWriter(store, todo, summary)
    callbacks = [writer]
    if options.progress:
        callbacks.append(StudyView(plan, todo, summary.skipped))
    trainable = tune.with_resources(
        run_trial, {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(todo)},
        tune_config=tune.TuneConfig(max_concurrent_trials=options.max_concurrent),
        run_config=tune.RunConfig(
            name=f"{plan.experiment}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(storage_root(options.storage) / "ray"),
            failure_config=tune.FailureConfig(max_failures=RETRIES),
            callbacks=callbacks,
            verbose=0,
        ),
    )
    tuner.fit()
    writer.close_unfinished()
