"""One trial in Ray: train its job with resnet.train, send the driver typed events, keep
its checkpoints in Ray's storage. A trial of several replicas is a data-parallel group
that Ray Train starts from inside the Tune trial (gloo on CPUs, NCCL on GPUs): every
replica sends the same events, Ray Train passes the first one's to Tune, only the first
writes checkpoints, and a replica that dies restarts the group from the newest one.
A deterministic error (bad data, an impossible setting, a full disk) fails the trial with
its reason and is not retried: Ray's retries are for workers that died.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path

from ablations.checkpoints import TrialCheckpoints, study_uri, trial_folder
from ablations.environment import environment
from ablations.events import Evaluation, Final, Progress, Saved, Start, TrialJob, encode
from resnet.errors import ResnetError, one_line

PROGRESS_EVERY = 5.0  # seconds between progress reports of a one-replica trial
GROUP_RESTARTS = 2  # restarts of a replica group after one of its replicas died


def run_trial(tune_config: dict) -> None:
    """The Tune trial: the job in `tune_config["trial"]`, values a searcher sampled beside."""
    from ray import tune

    job = TrialJob.from_tune(tune_config["trial"])
    sampled = {k: v for k, v in tune_config.items() if k != "trial"}
    if job.config.replicas == 1:
        tune.report(encode(_train(job, sampled, tune.report)))
        return
    try:
        _fit_replicas(job, sampled)
    except Exception as err:  # noqa: BLE001 - the group failed for good: recorded
        tune.report(encode(Final("failed", error=_reason(err))))


def _fit_replicas(job: TrialJob, sampled: dict) -> None:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    gpus = job.gpus
    trainer = TorchTrainer(
        _replica,
        train_loop_config={"trial": job.to_tune(), "sampled": sampled},
        scaling_config=ScalingConfig(
            num_workers=job.config.replicas,
            use_gpu=gpus > 0,
            resources_per_worker={"CPU": job.threads, **({"GPU": gpus} if gpus else {})},
        ),
        run_config=RunConfig(
            name=f"train-{trial_folder(job.key)}-{job.run_id or 'tune'}",
            storage_path=study_uri(job.storage, job.study),
            failure_config=FailureConfig(max_failures=GROUP_RESTARTS),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


def _replica(loop_config: dict) -> None:
    """One replica of a group (Ray Train's worker); every replica reports every event."""
    import ray.train

    job = TrialJob.from_tune(loop_config["trial"])
    ray.train.report(encode(_train(job, loop_config["sampled"], ray.train.report, True)))


def _train(job: TrialJob, sampled: dict, report: Callable, replicas: bool = False) -> Final:
    """Train this process's part of the trial; its last event (not yet sent)."""
    import torch

    from resnet.data import load_dataset
    from resnet.train import Callback, train

    torch.set_num_threads(job.threads)

    class EventSender(Callback):
        """The training loop's progress, as events to the driver (`config` and `env` are
        set below before training starts)."""

        def on_start(self, info: dict) -> None:
            self.mark = (time.monotonic(), info["resumed_from"])
            split = [info[k] for k in ("resumed_from", "val_digest", "train_size")]
            report(encode(Start(*split, env, info["history"], config.iterations)))

        def on_step(self, iteration: int) -> None:
            # Replicas report at the same iterations on every replica (each report is a
            # barrier across them); one process reports every few seconds.
            now = time.monotonic()
            since, first = self.mark
            every = max(1, (config.eval_every or 1) // 4)
            due = iteration % every == 0 if replicas else now - since >= PROGRESS_EVERY
            if due and iteration > first and now > since:
                rate = (iteration - first) * config.batch_size / (now - since)
                self.mark = (now, iteration)
                report(encode(Progress(iteration, rate)))

        def on_eval(self, evaluation: dict) -> None:
            report(encode(Evaluation(evaluation)))

        def on_checkpoint(self, iteration: int, where: str) -> None:
            report(encode(Saved(iteration, where)))

    try:
        config = job.sampled(sampled)
        data = load_dataset(config.dataset, config.data_dir, config.val_size)
        env = environment(config, data, job.threads)
        checkpoints = None
        if job.checkpoints:
            checkpoints = TrialCheckpoints(job.storage, job.study, job.key, job.run_id)
            checkpoints = _FirstReplicaWrites(checkpoints) if replicas else checkpoints
    except Exception as err:  # noqa: BLE001 - deterministic: recorded, not retried
        return Final("failed", error=_reason(err))
    try:
        result = train(config, EventSender(), checkpoints, data)
    except Exception as err:  # noqa: BLE001 - deterministic: recorded, not retried
        if replicas:
            raise  # the other replicas wait in a collective: Ray Train ends the group
        return Final("failed", error=_reason(err))
    return Final(result.status, result.summary(), result.lr_trace, result.layer_responses)


class _FirstReplicaWrites:
    """A replica group's checkpoints: every replica loads, the first writes, and all learn
    whether the write worked (so that all fail alike on a full disk)."""

    def __init__(self, checkpoints: TrialCheckpoints):
        self.checkpoints = checkpoints

    def load(self, map_location):
        return self.checkpoints.load(map_location)

    def save(self, state: dict, iteration: int) -> str:
        import torch.distributed as dist

        outcome = [None]
        if dist.get_rank() == 0:
            try:
                outcome = [("ok", self.checkpoints.save(state, iteration))]
            except OSError as err:
                outcome = [("error", str(err))]
        dist.broadcast_object_list(outcome, src=0)
        kind, text = outcome[0]
        if kind == "error":
            raise OSError(text)
        return text if dist.get_rank() == 0 else ""


def _reason(err: BaseException) -> str:
    """The error in one line: its type and message, and where it came from when the
    message alone does not say (an unexpected error)."""
    from resnet.checkpoint import CheckpointLost

    if isinstance(err, ResnetError | OSError | CheckpointLost):
        return one_line(err, None)
    frame = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    where = f" (at {Path(frame.filename).name}:{frame.lineno})" if frame else ""
    return f"{one_line(err, None)}{where}"
