"""Runs a plan (docs/design.md §5b): the store records it, Ray runs its trials, the store
records what they report; a tuning phase first when the study tunes, further rounds of
seeds when it replicates to a precision. Each round reads the study's ledger once:
finished trials are skipped, unfinished ones resume into their own MLflow run.

The tuning phase: per arm, Optuna (through Ray Tune's OptunaSearch) tunes the study's
search space on a short budget; the seeds then train at each arm's best point. Tuning
trials that ended in an earlier run are fed back to Optuna as evaluated points, and only
the remaining number runs; an interrupted one is marked failed and redone (it is cheap).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import search_spaces
from ablations import ledger as ledgers
from ablations.checkpoints import storage_uri
from ablations.environment import code_version
from ablations.errors import AblateError
from ablations.events import METRIC, TrialJob
from ablations.lease import Lease
from ablations.plan import Plan
from ablations.progress import StudyView
from ablations.tracker import Tracker, TuningTracker
from ablations.tracking import Store, StudyIds, TrialStatus, probe, resolve_uri
from reports.layout import redact
from resnet.errors import ResnetError


@dataclass
class RunOptions:
    tracking_uri: str | None = None
    storage: str | None = None  # Ray's storage: a folder, or a bucket URI every node reaches
    progress: bool = True
    address: str | None = None  # a Ray cluster; None: RAY_ADDRESS, else a local Ray
    wait: bool = False  # another driver runs the study: wait for it to end, not refuse


@dataclass(frozen=True)
class Target:
    """An arm's precision when the study replicates to a target by the two-stage design
    (docs/tracking.md): its interval is mean +- t_{n0-1} s0 / sqrt(n), s0 the spread of its
    first-stage seeds."""

    half_width: float  # 95% CI half-width of its mean test error, points (inf: unsized)
    seeds: int  # finished seeds
    needed: int | None  # its two-stage total without the cap (None: first stage unfinished)

    def met(self, target: float) -> bool:
        return self.half_width <= target


@dataclass
class RunSummary:
    experiment: str
    tracking_uri: str
    total: int = 0
    skipped: int = 0  # already done when this run began
    statuses: dict[str, TrialStatus] = field(default_factory=dict)  # trial key -> how it ended
    not_started: list[str] = field(default_factory=list)  # pending when the run stopped
    added: dict[str, list[int]] = field(default_factory=dict)  # seeds added, by arm
    target_ci: float | None = None
    targets: dict[str, Target] = field(default_factory=dict)  # by arm, with target_ci

    @property
    def failed(self) -> int:
        return sum(s == TrialStatus.FAILED for s in self.statuses.values())

    @property
    def interrupted(self) -> bool:
        return TrialStatus.INTERRUPTED in self.statuses.values() or bool(self.not_started)

    @property
    def missed(self) -> dict[str, Target]:
        """Arms still wider than the precision target."""
        if self.target_ci is None:
            return {}
        return {arm: t for arm, t in self.targets.items() if not t.met(self.target_ci)}

    def lines(self) -> list[str]:
        """What happened, for a person: counts, seeds added, arms that missed the target."""
        counts = Counter(self.statuses.values())
        if self.not_started:
            counts["not started"] = len(self.not_started)
        ran = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to run"
        out = [
            f"{self.experiment}: {self.total} trials; {self.skipped} already done; "
            f"this run: {ran}. Store: {self.tracking_uri}"
        ]
        for arm, seeds in self.added.items():
            out.append(
                f"  added seeds {', '.join(map(str, seeds))} to {arm} "
                "(second stage: its first seeds' spread asks for more)"
            )
        if self.interrupted:
            return [*out, "interrupted: run the same command again to resume"]
        for arm, t in self.missed.items():
            needed = f"; about {t.needed:,} seeds would meet it" if t.needed else ""
            out.append(
                f"  target not met: {arm}: 95% CI +-{t.half_width:.2f} points with {t.seeds} "
                f"seeds (target +-{self.target_ci:g}, --max-seeds reached){needed}"
            )
        return out


def ensure_data(plan: Plan) -> None:
    """The data set on disk before anything is written: found, or downloaded once here."""
    from resnet.data import ensure_available  # torch

    config = plan.trials[0].config
    try:
        ensure_available(config.dataset, config.data_dir)
    except ResnetError as err:
        raise AblateError(str(err)) from None


def run_study(plan: Plan, options: RunOptions) -> RunSummary:
    """Run every missing trial of the plan; returns what happened to each."""
    uri = resolve_uri(options.tracking_uri)
    probe(uri)
    storage = storage_uri(options.storage)
    ensure_data(plan)
    store = Store(uri)
    store.check_study(ledgers.record(plan))
    with Lease(store, plan.experiment, wait=options.wait):
        return _run_leased(plan, options, store, storage)


def _run_leased(plan: Plan, options: RunOptions, store: Store, storage: str) -> RunSummary:
    """The study, while this driver holds its lease (ablations/lease.py)."""
    # Everything before the lease only read; from here on the study is written.
    study = store.open_study(ledgers.record(plan), code_version(plan.model))
    summary = RunSummary(plan.experiment, redact(store.uri))
    ledger = ledgers.read(store, study)
    if plan.nuisance is not None:
        best = tune_arms(plan, store, study, ledger, storage, options)
        if best is None:
            summary.statuses["tuning"] = TrialStatus.INTERRUPTED
            store.end(study, "KILLED")
            return summary
        plan = plan.with_tuned(best)
    if plan.replication:
        plan = plan.with_seeds(ledger.seeds())
    summary.skipped = sum(ledger.done(t.key) for t in plan.trials)
    while True:
        store.set_plan_size(study, ledgers.record(plan).planned)
        complete = _run_round(plan, store, study, ledger, storage, options, summary)
        ledger = ledgers.read(store, study)
        more = next_round(plan, ledger) if complete and plan.replication else {}
        if not more:
            break
        for arm, seeds in more.items():
            summary.added.setdefault(arm, []).extend(seeds)
        plan = plan.with_seeds(more)
    summary.total = len(plan.trials)
    if plan.replication:
        summary.target_ci = plan.replication.target_ci
        summary.targets = targets(plan, ledger)
    store.summarize(study, {split: ledger.errors(split) for split in ("test", "train")})
    outcome = "KILLED" if summary.interrupted else "FAILED" if summary.failed else "FINISHED"
    store.end(study, outcome)
    return summary


def _run_round(
    plan: Plan,
    store: Store,
    study: StudyIds,
    ledger: ledgers.Ledger,
    storage: str,
    options: RunOptions,
    summary: RunSummary,
) -> bool:
    """One Tune run over the plan's trials that are not done; False when interrupted."""
    from ablations.execute import fit

    jobs = _jobs(plan, store, study, ledger, storage)
    if not jobs:
        return True
    logged = {j.key: ledger.trials[j.key].logged_upto for j in jobs if j.key in ledger.trials}
    tracker = Tracker(store, {j.key: j.run_id for j in jobs}, logged)
    view = None
    if options.progress:
        iterations = {j.key: j.config.iterations for j in jobs}
        view = StudyView(plan.experiment, iterations, summary.skipped, len(plan.trials))
    store.running(study)
    complete = fit(jobs, "seeds", plan.placement, tracker, view, address=options.address)
    summary.statuses.update(tracker.statuses)
    summary.not_started = tracker.not_started() if not complete else []
    return complete


def _jobs(
    plan: Plan, store: Store, study: StudyIds, ledger: ledgers.Ledger, storage: str
) -> list[TrialJob]:
    """A job per trial that is not done, with a run for each new one; longest first, so
    that with fewer slots than trials the study ends about when its longest trial does."""
    code = code_version(plan.model)
    jobs, cost = [], {}
    for trial in plan.trials:
        if ledger.done(trial.key):
            continue
        state = ledger.trials.get(trial.key)
        params = plan.params(trial)
        if state is None:
            run_id = store.create_trial(study, trial.key, trial.arm, params, code)
        else:
            run_id = state.run_id
        jobs.append(TrialJob.of(plan, trial, run_id, storage))
        cost[trial.key] = params["macs"] * trial.config.iterations * trial.config.batch_size
    return sorted(jobs, key=lambda j: -cost[j.key])


def next_round(plan: Plan, ledger: ledgers.Ledger) -> dict[str, list[int]]:
    """The second stage of the two-stage design (reports/replication.py): once every
    first-stage seed of an arm (the plan's seeds) has ended, the seeds that take it to its
    total, max(n0, ceil((t s0 / target)^2)) capped at the maximum, all at once. The total
    depends on the first stage only, so a later call adds nothing: two rounds, never more,
    and the intervals and tests that follow keep their stated error rates."""
    from reports import replication

    rule, first = plan.replication, set(plan.seeds)
    more = {}
    for arm in plan.arms:
        trials = [t for t in plan.trials if t.arm == arm]
        states = [ledger.trials.get(t.key) for t in trials if t.seed in first]
        if not all(state is not None and state.done for state in states):
            continue  # the first stage has not ended
        stage, _ = _stages(plan, ledger, arm)
        if len(stage) < 2:
            continue  # no spread to size the arm with: it stays at its first stage
        total = replication.total_seeds(stage, rule.target_ci, rule.max_seeds)
        seeds = sorted(t.seed for t in trials)
        if total > len(seeds):
            more[arm] = list(range(seeds[-1] + 1, seeds[-1] + 1 + total - len(seeds)))
    return more


def _stages(plan: Plan, ledger: ledgers.Ledger, arm: str) -> tuple[list[float], list[float]]:
    """An arm's finished test errors (points): of its first-stage seeds, and of the rest."""
    first, rest = [], []
    for state in ledger.trials.values():
        if state.arm == arm and (value := state.error_pct()) is not None:
            (first if state.seed in plan.seeds else rest).append(value)
    return first, rest


def targets(plan: Plan, ledger: ledgers.Ledger) -> dict[str, Target]:
    """Each arm's two-stage interval now, and the total its first stage asks for."""
    from reports import replication

    out = {}
    for arm in plan.arms:
        stage, rest = _stages(plan, ledger, arm)
        found = replication.interval(stage, rest)
        half = found.half_width if math.isfinite(found.half_width) else math.inf
        needed = None
        if len(stage) >= 2:
            needed = replication.needed_seeds(stage, plan.replication.target_ci)
        out[arm] = Target(half, found.n, needed)
    return out


Point = tuple[dict[str, Any], float, str]  # (tuned values, validation error, run id)


def tune_arms(
    plan, store: Store, study: StudyIds, ledger: ledgers.Ledger, storage: str, options
) -> dict[str, tuple[dict[str, Any], str]] | None:
    """{arm: (best values, the tuning run that found them)} for every arm, or None when
    the phase was interrupted."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for state in ledger.tuning:
        if not state.done and state.status != TrialStatus.FAILED:
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

    from ablations.execute import fit

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
        view = StudyView(f"{plan.experiment}: tuning {arm}", {}, 0, left)
    job = TrialJob.of(plan, trial, "", storage, checkpoints=False)
    complete = fit([job], "tuning", plan.placement, tracker, view, searcher, left, options.address)
    return tracker if complete else None


def _point(state, space: dict, types: dict[str, str]) -> Point:
    from reports.data import decode

    values = {p: decode(types[p], state.params[p]) for p in space}
    error = state.metrics.get("val/error")
    return values, math.inf if error is None or math.isnan(error) else error, state.run_id
