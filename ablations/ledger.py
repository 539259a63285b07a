"""The study as the store holds it, read once per round into typed trial states: which trials
exist, how each ended, how far it is logged and, given Ray's storage, which checkpoints it
would resume from. The runner, `ablate show` and `ablate rm` read this, not the store."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from ablations import lease
from ablations.checkpoints import TrialCheckpoints, has_study, remove_study, storage_uri, study_uri
from ablations.errors import AblateError
from ablations.plan import Plan
from ablations.study import experiment_name
from ablations.tracking import (
    Role,
    Store,
    StudyIds,
    StudyRecord,
    Tag,
    TrialStatus,
    existing,
    probe,
    resolve_uri,
)
from reports.layout import REPORTS_ROOT, redact, report_store


@dataclass(frozen=True)
class TrialState:
    key: str
    arm: str
    role: Role
    run_id: str
    status: TrialStatus
    params: dict[str, str]  # as recorded: text
    metrics: dict[str, float]  # final values
    logged_upto: int = -1  # the last iteration whose evaluation is stored
    checkpoints: tuple[int, ...] = ()  # iterations of whole checkpoints, newest first

    @property
    def done(self) -> bool:
        return self.status.done

    @property
    def seed(self) -> int | None:
        text = self.params.get("seed")
        return int(text) if text is not None else None

    def error_pct(self, split: str = "test") -> float | None:
        """The final error of a finished trial, in points; None otherwise."""
        value = self.metrics.get(f"{split}/error")
        if self.status != TrialStatus.FINISHED or value is None or not math.isfinite(value):
            return None
        return 100 * value


@dataclass(frozen=True)
class Ledger:
    trials: dict[str, TrialState] = field(default_factory=dict)  # role trial, by key
    tuning: tuple[TrialState, ...] = ()  # role tune
    running: str = ""  # where another driver runs the study now ("on HOST (process N) since T")

    def done(self, key: str) -> bool:
        state = self.trials.get(key)
        return state is not None and state.done

    def seeds(self) -> dict[str, list[int]]:
        """Per arm, the seeds it has runs for."""
        out: dict[str, list[int]] = {}
        for state in self.trials.values():
            if state.seed is not None:
                out.setdefault(state.arm, []).append(state.seed)
        return {arm: sorted(seeds) for arm, seeds in out.items()}

    def errors(self, split: str = "test") -> dict[str, list[float]]:
        """Per arm, the final error (points) of each finished trial."""
        out: dict[str, list[float]] = {state.arm: [] for state in self.trials.values()}
        for state in self.trials.values():
            if (value := state.error_pct(split)) is not None:
                out[state.arm].append(value)
        return out

    def seconds_per_iteration(self) -> dict[str, float]:
        """Per arm, the mean wall seconds per iteration of its finished trials."""
        per_arm: dict[str, list[float]] = {}
        for state in self.trials.values():
            wall = state.metrics.get("wall_time_s")
            iterations = float(state.params.get("iterations", "nan"))
            if state.status == TrialStatus.FINISHED and wall and iterations > 0:
                per_arm.setdefault(state.arm, []).append(wall / iterations)
        return {arm: sum(v) / len(v) for arm, v in per_arm.items()}

    def tuned(self, arm: str) -> list[TrialState]:
        """The tuning trials of an arm that ended training."""
        return [s for s in self.tuning if s.arm == arm and s.done]


def read(store: Store, study: StudyIds, storage: str | None = None) -> Ledger:
    """The ledger of a study in one search of the store; with
    `storage`, the checkpoints each unfinished trial has there too."""
    trials, tuning = {}, []
    for run in store.trial_runs(study):
        tags = run.data.tags
        status = TrialStatus(tags.get(Tag.STATUS, TrialStatus.PENDING))
        state = TrialState(
            key=tags[Tag.TRIAL_KEY],
            arm=tags.get(Tag.ARM, ""),
            role=Role(tags[Tag.ROLE]),
            run_id=run.info.run_id,
            status=status,
            params=dict(run.data.params),
            metrics=dict(run.data.metrics),
        )
        if state.role == Role.TUNE:
            tuning.append(state)
            continue
        if not state.done:
            found = ()
            if storage is not None:
                kept = TrialCheckpoints(storage, study.name, state.key, state.run_id).found()
                found = tuple(i for i, _ in kept)
            logged = store.logged_upto(state.run_id) if status != TrialStatus.PENDING else -1
            state = replace(state, logged_upto=logged, checkpoints=found)
        trials[state.key] = state
    return Ledger(trials, tuple(tuning))


def record(plan: Plan) -> StudyRecord:
    """What the store records of a plan on the study's parent run (docs/tracking.md)."""
    planned: dict[str, list[int]] = {}
    for t in plan.trials:
        planned.setdefault(t.arm, []).append(t.seed)
    params = {
        "question": plan.question[:500],
        "dataset": plan.dataset,
        "reference": json.dumps(plan.reference),
        "factors": json.dumps(plan.factors),
        "seeds": json.dumps(plan.seeds),
        "preset": plan.preset or "",
        "source": plan.source,
        "expected_trials": len(plan.trials),
        "full_dataset": plan.full["dataset"],
        "full_iterations": plan.full["iterations"],
    }
    rule = plan.replication
    return StudyRecord(
        name=plan.experiment,
        question=plan.question,
        definition=plan.definition(),
        fingerprint=plan.fingerprint(),
        settings=plan.param_types(),
        model=plan.model,
        model_factors=tuple(plan.model_factors),
        params=params,
        replication=rule.describe() if rule else "fixed seeds",
        target_ci=rule.target_ci if rule else None,
        max_seeds=rule.max_seeds if rule else None,
        planned=planned,
    )


def stored(plan: Plan, tracking_uri: str | None, storage: str | None) -> Ledger:
    """What the store already holds of the study, read only; a store holding another
    study of this name is refused, as `run` would refuse it."""
    uri = resolve_uri(tracking_uri)
    probe(uri)
    store = existing(uri)
    if store is None:
        return Ledger()
    store.check_study(record(plan))
    found = store.find_study(plan.experiment)
    ledger = read(store, found, storage_uri(storage)) if found else Ledger()
    running = lease.holder(store, plan.experiment)
    return replace(ledger, running=running.where()) if running else ledger


@dataclass(frozen=True)
class Removal:
    """What `ablate rm` removes: the study's MLflow experiment, its folder in Ray's storage
    (checkpoints, Ray's own files) and its report in ./ablate-reports when that report was
    written from this store. Nothing of another study (or another store's report) is
    touched: each study owns its experiment and its storage folder
    (ablations/checkpoints.py)."""

    name: str
    uri: str
    storage: str
    study: StudyIds | None  # None: not in the store
    runs: int
    folder: bool  # the storage holds a folder of the study
    report: Path | None = None  # its report folder, written from this store

    def describe(self) -> str:
        parts = []
        if self.study is not None:
            shown = redact(self.uri)
            parts.append(f"the MLflow experiment {self.name} in {shown} ({self.runs} runs)")
        if self.folder:
            parts.append(f"{study_uri(self.storage, self.name)} (checkpoints, Ray's files)")
        if self.report is not None:
            parts.append(f"its report {self.report}")
        return f"ablate rm {self.name} will remove " + " and ".join(parts)

    def run(self) -> str:
        if self.study is not None:
            Store(self.uri).delete_study(self.study)
        if self.folder:
            remove_study(self.storage, self.name)
        if self.report is not None:
            shutil.rmtree(self.report, ignore_errors=True)
        return (
            f"removed {self.name}; MLflow keeps deleted runs until `mlflow gc "
            f"--backend-store-uri {redact(self.uri)}`"
        )


def plan_removal(
    study: str, preset: str | None, tracking_uri: str | None, storage: str | None
) -> Removal:
    """What `ablate rm` would remove; nothing is removed here."""
    name = experiment_name(study, preset)
    uri = resolve_uri(tracking_uri)
    probe(uri)
    where = storage_uri(storage)
    store = existing(uri)
    found = store.find_study(name) if store is not None else None
    if found is not None and (running := lease.holder(store, name)) is not None:
        raise AblateError(
            f"study {name} is running {running.where()}: stop it first (kill {running.pid}); "
            f"a driver that died leaves a lease that expires after {lease.timeout_s():g} s"
        )
    runs = 0
    if found is not None:
        ledger = read(store, found)
        runs = 1 + len(ledger.trials) + len(ledger.tuning)  # the parent and its children
    folder = has_study(where, name)
    if found is None and not folder:
        shown = redact(uri)
        raise AblateError(f"no study {name} in the store {shown} nor in the storage {where}")
    report = REPORTS_ROOT.resolve() / name
    mine = report_store(report) == redact(uri)
    return Removal(name, uri, where, found, runs, folder, report if mine else None)
