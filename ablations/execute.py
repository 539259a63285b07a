"""Ray Tune on the driver: build a Tuner over trial jobs and relay what trials report to
plain listeners (joining or starting Ray is ablations/cluster.py's). Used by the seed phase
and by the tuning phase alike; neither knows how Tune is driven.
"""

from __future__ import annotations

import os

from ray import tune

from ablations.checkpoints import study_uri, trial_folder, tune_run_name
from ablations.cluster import init_ray
from ablations.errors import AblateError
from ablations.events import METRIC, Event, Final, TrialJob, decode
from ablations.trainable import run_trial

TRIAL_RETRIES = 2  # Ray's retries of a trial whose process died


def fit(
    jobs: list[TrialJob],
    phase: str,
    placement,
    tracker,
    view=None,
    searcher=None,
    samples: int = 0,
    address: str | None = None,
) -> bool:
    """Run the jobs (a grid, or `samples` draws of `searcher` around `jobs[0]`) as one Tune
    run of `phase`, relaying their events to the tracker (which names the trials) and the
    view; True when all ended, False when Ctrl-C or SIGTERM stopped them (Tune ends the
    trials, whose checkpoints are kept)."""
    listeners = [tracker] if view is None else [tracker, view.__enter__()]
    try:
        return _fit(jobs, phase, placement, listeners, searcher, samples, address)
    finally:
        try:
            tracker.close()
        finally:
            if view is not None:
                view.finish(tracker.statuses)


def _fit(jobs, phase, placement, listeners, searcher, samples, address) -> bool:
    from ray.tune.logger import JsonLoggerCallback

    shipped = jobs[0].config.builder.shipped()
    init_ray(address, (shipped,) if shipped else ())
    # Tune's own loggers: JSON lines only (added below), no CSV or TensorBoard files.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    resources = {"cpu": placement.cpus_per_trial, "gpu": placement.gpus_per_trial}
    if jobs[0].config.replicas > 1:
        # The trial only waits on its replica group, which Ray Train places itself (the
        # placement counted the group's CPUs and GPUs); a bundle cannot be empty.
        resources = {"memory": 1}
    trainable = tune.with_resources(run_trial, resources)
    common = {
        "max_concurrent_trials": placement.at_once,
        "trial_name_creator": _trial_name,
        "trial_dirname_creator": _trial_name,
    }
    payloads = [job.to_tune() for job in jobs]
    if searcher is None:
        space = {"trial": tune.grid_search(payloads)}
        tune_config = tune.TuneConfig(**common)
    else:
        space = {"trial": payloads[0]}
        tune_config = tune.TuneConfig(
            search_alg=searcher,
            num_samples=samples,
            metric=METRIC,
            mode="min",
            **common,
        )
    relay = EventRelay(listeners)
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune_config,
        run_config=tune.RunConfig(
            name=tune_run_name(phase),
            storage_path=study_uri(jobs[0].storage, jobs[0].study),
            failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES),
            callbacks=[relay, JsonLoggerCallback()],
            verbose=0,
        ),
    )
    try:
        tuner.fit()
    except Exception:
        # A listener's own error (the store stopped answering) reaches Tune's caller as a
        # TuneError carrying a traceback: the error itself says it in one line.
        if relay.error is not None:
            raise relay.error from None
        raise
    expected = samples if searcher is not None else len(jobs)
    return len(relay.ended) >= expected


def _trial_name(trial) -> str:
    """A trial's folder in the Tune run: its key, readable, and Tune's id for uniqueness."""
    return f"{trial_folder(trial.config['trial']['key'])}-{trial.trial_id}"


class EventRelay(tune.Callback):
    """On the driver: decodes what trials report into events for the listeners."""

    def __init__(self, listeners: list):
        self.listeners, self.namer = listeners, listeners[0].name  # the tracker names them
        self.keys: dict[str, str] = {}
        self.ended: set[str] = set()  # trials that sent their Final event
        self.error: AblateError | None = None  # the first a listener raised

    def __getstate__(self) -> dict:
        # Ray pickles its callbacks with the Tuner's state; listeners hold store clients
        # and consoles. The pickled copy is never used to relay.
        return {**self.__dict__, "listeners": [], "namer": None}

    def _key(self, trial) -> str:
        if trial.trial_id not in self.keys:
            hint = trial.config["trial"]["key"]
            self.keys[trial.trial_id] = self.namer(hint)
        return self.keys[trial.trial_id]

    def _send(self, key: str, event: Event) -> None:
        if isinstance(event, Final):
            self.ended.add(key)
        for listener in self.listeners:
            self._call(listener.trial_event, key, event)

    def _call(self, method, *args) -> None:
        try:
            method(*args)
        except AblateError as err:
            self.error = self.error or err
            raise

    def on_trial_start(self, iteration, trials, trial, **info):
        key = self._key(trial)
        sampled = {k: v for k, v in trial.config.items() if k != "trial"}
        for listener in self.listeners:
            self._call(listener.trial_started, key, sampled)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        event = decode(result)
        if event is not None:
            self._send(self._key(trial), event)

    def on_trial_error(self, iteration, trials, trial, **info):
        try:
            error = trial.get_error()
        except Exception as err:  # noqa: BLE001 - e.g. a full disk truncated Ray's error file
            error = err
        reason = f"{type(error).__name__}: {error}" if error else "the trial's worker died"
        # Ray wraps the worker's exception; its last line names the cause.
        lines = [ln for ln in str(reason).splitlines() if ln.strip()]
        self._send(self._key(trial), Final("failed", error=lines[-1] if lines else reason))
