"""One trial in a Ray worker process: train its job with resnet.train, tell the driver what
happens through typed events (ablations/events.py), keep its checkpoints in Ray's storage
(ablations/checkpoints.py).

A deterministic error (bad data, an impossible setting, a full disk) ends the trial as
failed, with its reason, and is not retried: Ray's retries are for workers that died.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path

from ablations.checkpoints import CheckpointLost, TrialCheckpoints
from ablations.events import Evaluation, Final, Progress, Saved, Start, encode
from ablations.job import TrialJob

PROGRESS_EVERY = 5.0  # seconds between progress reports to the driver


def run_trial(tune_config: dict) -> None:
    """Train the job in `tune_config["trial"]`; values a searcher sampled sit beside it."""
    import torch
    from ray import tune

    from ablations.manifest import environment
    from resnet.data import load_dataset
    from resnet.train import Callback, train

    job = TrialJob.from_tune(tune_config["trial"])
    torch.set_num_threads(job.threads)

    class EventSender(Callback):
        """The training loop's progress, as events to the driver."""

        def __init__(self, env: dict, config):
            self.env, self.config = env, config
            self.mark = (time.monotonic(), 0)

        def on_start(self, info: dict) -> None:
            start = Start(
                info["resumed_from"],
                info["val_digest"],
                info["train_size"],
                self.env,
                info["history"],
                self.config.iterations,
            )
            self.mark = (time.monotonic(), info["resumed_from"])
            tune.report(encode(start))

        def on_step(self, iteration: int) -> None:
            now = time.monotonic()
            since, first = self.mark
            if now - since >= PROGRESS_EVERY:
                rate = (iteration - first) * self.config.batch_size / (now - since)
                self.mark = (now, iteration)
                tune.report(encode(Progress(iteration, rate)))

        def on_eval(self, evaluation: dict) -> None:
            tune.report(encode(Evaluation(evaluation)))

        def on_checkpoint(self, iteration: int, where: str) -> None:
            tune.report(encode(Saved(iteration, where)))

    try:
        config = job.sampled({k: v for k, v in tune_config.items() if k != "trial"})
        data = load_dataset(config.dataset, config.data_dir, config.val_size)
        env = environment(config, data, job.threads)
        checkpoints = None
        if job.checkpoints:
            checkpoints = TrialCheckpoints(job.storage, job.study, job.key, job.run_id)
        result = train(config, EventSender(env, config), checkpoints, data)
        final = Final(result.status, result.summary(), result.lr_trace, result.layer_responses)
    except Exception as err:  # noqa: BLE001 - deterministic: recorded, not retried
        final = Final("failed", error=_reason(err))
    tune.report(encode(final))


def _reason(err: BaseException) -> str:
    """The error in one line: its type and message, and where it came from when the
    message alone does not say (an unexpected error)."""
    from resnet.errors import ResnetError

    text = " ".join(str(err).split())
    if isinstance(err, ResnetError | OSError | CheckpointLost):
        return f"{type(err).__name__}: {text}"
    frame = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    where = f" (at {Path(frame.filename).name}:{frame.lineno})" if frame else ""
    return f"{type(err).__name__}: {text}{where}"
