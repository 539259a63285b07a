"""Runs a plan: the store records it, Ray runs its trials, the store records what they
report (docs/design.md §5b). One trial per arm x seed; a nuisance phase first when the
study tunes; further rounds of seeds when it replicates to a precision.

Resume model: the MLflow store says what is done (a child run per trial key with
`ablate.status` finished or diverged) and where each trial's newest checkpoints are (in
Ray's storage). Every `ablate run` starts a fresh Tuner over what is missing: finished
trials are skipped, interrupted ones resume from their checkpoint into their own run.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ablations.errors import AblateError
from ablations.manifest import code_version
from ablations.plan import Plan
from ablations.recorder import Recorder
from ablations.store import TERMINAL, Store, StudyRecord, probe, resolve_uri


@dataclass
class RunOptions:
    tracking_uri: str | None = None
    storage: str | None = None  # Ray's storage: a folder, or a bucket URI every node reaches
    progress: bool = True


@dataclass
class RunSummary:
    experiment: str
    tracking_uri: str
    total: int = 0
    skipped: int = 0  # already done when this run began
    statuses: dict[str, str] = field(default_factory=dict)  # trial key -> how it ended
    not_started: list[str] = field(default_factory=list)  # pending when the run stopped
    added: dict[str, list[int]] = field(default_factory=dict)  # seeds added, by arm

    @property
    def failed(self) -> int:
        return sum(s == "failed" for s in self.statuses.values())

    @property
    def interrupted(self) -> bool:
        return "interrupted" in self.statuses.values() or bool(self.not_started)


def storage_uri(storage: str | None) -> str:
    """Ray's storage: a bucket URI as given (checked now), or an absolute local folder."""
    value = storage or os.environ.get("ABLATE_STORAGE") or "ablate-results"
    if "://" in value:
        import pyarrow.fs

        try:
            pyarrow.fs.FileSystem.from_uri(value)
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types here
            raise AblateError(f"--storage {value}: {str(err).splitlines()[0]}") from None
        return value
    return str(Path(value).expanduser().resolve())


def ensure_data(plan: Plan) -> None:
    """The data set on disk before anything is written: found, or downloaded once here."""
    from resnet.data import ensure_available
    from resnet.errors import ResnetError

    config = plan.trials[0].config
    try:
        ensure_available(config.dataset, config.data_dir)
    except ResnetError as err:
        raise AblateError(str(err)) from None


def run_study(plan: Plan, options: RunOptions, address: str | None = None) -> RunSummary:
    """Run every missing trial of the plan; returns what happened to each."""
    uri = resolve_uri(options.tracking_uri)
    probe(uri)
    storage = storage_uri(options.storage)
    ensure_data(plan)
    store = Store(uri)
    store.check_study(plan)
    # Everything above only read; from here on the store is written.
    record = store.open_study(plan, code_version())
    summary = RunSummary(plan.experiment, uri)
    tuned = None
    if plan.nuisance is not None:
        from ablations.tuning import tune_arms

        tuned = tune_arms(plan, store, record, storage, address=address)
        if tuned is None:
            summary.statuses["tuning"] = "interrupted"
            store.end(record, "KILLED")
            return summary
    if plan.replication:
        plan = plan.with_seeds(_stored_seeds(store, record, plan))
    first = True
    while True:
        store.set_plan_size(record, plan)
        complete = _run_trials(
            plan, store, record, storage, options, tuned, summary, first, address
        )
        first = False
        if not complete or not plan.replication:
            break
        more = next_round(plan, store.final_test_errors(record.experiment_id))
        if not more:
            break
        for arm, seeds in more.items():
            summary.added.setdefault(arm, []).extend(seeds)
        plan = plan.with_seeds(more)
    summary.total = len(plan.trials)
    store.summarize(record)
    outcome = "KILLED" if summary.interrupted else "FAILED" if summary.failed else "FINISHED"
    store.end(record, outcome)
    return summary


def _run_trials(
    plan: Plan,
    store: Store,
    record: StudyRecord,
    storage: str,
    options: RunOptions,
    tuned: dict | None,
    summary: RunSummary,
    first: bool,
    address: str | None,
) -> bool:
    """One Tuner over the plan's trials that are not done; False when interrupted."""
    from ablations.execute import fit
    from ablations.trainable import stored_checkpoints
    from resnet.complexity import complexity

    existing = store.trial_runs(record.experiment_id)
    stored = {}  # run id -> checkpoints in the storage, newest first
    unfinished = [
        k for k, r in existing.items() if r.data.tags.get("ablate.status") not in TERMINAL
    ]
    if unfinished:
        stored = stored_checkpoints(storage, f"{plan.experiment}-", unfinished)
    code = code_version()
    runs, logged, payloads = {}, {}, []
    counts: dict = {}
    cost: dict[str, float] = {}  # trial key -> multiply-accumulates it will train
    for trial in plan.trials:
        run = existing.get(trial.key)
        if run is not None and run.data.tags.get("ablate.status") in TERMINAL:
            summary.skipped += 1 if first else 0
            continue
        point = (tuned or {}).get(trial.arm)
        config = trial.config
        if point:
            config = dataclasses.replace(config, **point["values"])
        spec = config.model_spec(plan.data["num_classes"], plan.data["in_channels"])
        if spec not in counts:
            counts[spec] = complexity(spec)
        cost[trial.key] = counts[spec]["macs"] * config.iterations * config.batch_size
        if run is None:
            params = {
                **config.science(),
                "num_classes": spec.num_classes,
                "in_channels": spec.in_channels,
                **counts[spec],
            }
            if point:
                params["tuned_from"] = point["run_id"]
            run_id = store.create_trial(record, plan.experiment, trial.key, trial.arm, params, code)
            logged[trial.key], resume = -1, []
        else:
            run_id = run.info.run_id
            logged[trial.key] = store.logged_upto(run_id)
            tags = run.data.tags
            recorded = [
                tags[k] for k in ("ablate.checkpoint", "ablate.checkpoint_previous") if k in tags
            ]
            found = stored.get(run_id, [])
            resume = found + [path for path in recorded if path not in found]
        runs[trial.key] = run_id
        payloads.append(
            {
                "key": trial.key,
                "arm": trial.arm,
                "config": {**config.to_dict(), "device": plan.placement.device},
                "threads": plan.placement.threads,
                "storage": storage,
                "run": run_id,
                "resume": resume,
                "checkpoints": True,
            }
        )
    if not payloads:
        return True
    # Longest first (multiply-accumulates x images): with fewer slots than trials, the
    # study then ends about when its longest trial does instead of long after.
    payloads.sort(key=lambda p: -cost[p["key"]])
    recorder = Recorder(store, runs, logged)
    listeners = [recorder]
    view = None
    if options.progress:
        from ablations.progress import StudyView

        iterations = {p["key"]: p["config"]["iterations"] for p in payloads}
        view = StudyView(plan.experiment, iterations, summary.skipped, len(plan.trials))
        listeners.append(view)
    store.running(record)
    try:
        if view is not None:
            view.__enter__()
        complete = fit(
            plan.experiment, payloads, plan.placement, storage, listeners, address=address
        )
    finally:
        if view is not None:
            view.__exit__(None, None, None)
        recorder.close()
    summary.statuses.update(recorder.statuses)
    summary.not_started = recorder.not_started() if not complete else []
    return complete


def _stored_seeds(store: Store, record: StudyRecord, plan: Plan) -> dict[str, list[int]]:
    """Seeds the store already holds for the plan's arms (earlier rounds)."""
    out: dict[str, list[int]] = {}
    for run in store.trial_runs(record.experiment_id).values():
        arm = run.data.tags.get("ablate.arm")
        if arm in plan.arms and "seed" in run.data.params:
            out.setdefault(arm, []).append(int(run.data.params["seed"]))
    return out


def next_round(plan: Plan, errors: dict[str, list[float]]) -> dict[str, list[int]]:
    """The next seed for every arm whose 95% CI half-width of the mean test error is above
    the target and that has fewer than the maximum seeds (docs/tracking.md). Stopping on
    precision, not on significance, keeps the tests that follow honest."""
    from reports.stats import summarize

    rule = plan.replication
    more = {}
    for arm in plan.arms:
        seeds = sorted(t.seed for t in plan.trials if t.arm == arm)
        s = summarize(errors.get(arm, []))
        half = (s.ci_high - s.ci_low) / 2 if s.n >= 2 else math.inf
        if half > rule.target_ci and len(seeds) < rule.max_seeds:
            more[arm] = [seeds[-1] + 1]
    return more
