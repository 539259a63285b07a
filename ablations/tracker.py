"""The driver's writer of what trials report: each trial's events into its MLflow run.
Each evaluation is logged once: only iterations past the last one stored, so the history a
resumed trial replays from its checkpoint never repeats (docs/tracking.md)."""

from __future__ import annotations

import math
from dataclasses import asdict

from ablations.events import Evaluation, Event, Final, Saved, Start
from ablations.tracking import CodeVersion, Role, Store, StudyIds, TrialStatus


def ended(final: Final) -> TrialStatus:
    """How a trial's Final event leaves it in the store (a stopped trial is interrupted)."""
    return TrialStatus.INTERRUPTED if final.status == "stopped" else TrialStatus(final.status)


class Tracker:
    """Writes the events of trials whose child runs exist (`runs`: key -> run id)."""

    def __init__(self, store: Store, runs: dict[str, str], logged: dict[str, int]):
        self.store, self.runs, self.logged = store, dict(runs), dict(logged)
        self.statuses: dict[str, TrialStatus] = {}  # key -> how the trial ended in this run
        self.started: set[str] = set()
        self._newest: dict[str, str] = {}  # key -> newest checkpoint path

    def name(self, hint: str) -> str:
        """The key of a trial Tune starts, from the key its job carries."""
        return hint

    def trial_started(self, key: str, sampled: dict) -> None:
        self.started.add(key)
        self.store.start(self.runs[key])

    def trial_event(self, key: str, event: Event) -> None:
        run_id = self.runs[key]
        if isinstance(event, Start):
            split = {k: getattr(event, k) for k in ("resumed_from", "val_digest", "train_size")}
            self.store.log_start(run_id, split, asdict(event.environment))
            for evaluation in event.history:
                self._log(key, evaluation)
        elif isinstance(event, Evaluation):
            self._log(key, event.evaluation)
        elif isinstance(event, Saved):
            self.store.log_checkpoint(run_id, event.path, self._newest.get(key))
            self._newest[key] = event.path
        elif isinstance(event, Final):
            status = ended(event)
            if status.done:
                self.store.finish(
                    run_id, status, event.summary, event.lr_trace, event.layer_responses
                )
            elif status == TrialStatus.FAILED:
                self.store.fail(run_id, event.error)
            else:  # stopped part-way
                self.store.interrupt(run_id)
            self.statuses[key] = status

    def _log(self, key: str, evaluation: dict) -> None:
        if evaluation["iteration"] > self.logged.get(key, -1):
            self.store.log_evaluation(self.runs[key], evaluation)
            self.logged[key] = evaluation["iteration"]

    def close(self) -> None:
        """After Tune returns: a trial that started and did not end was interrupted
        (resumable); one that never started stays pending."""
        for key in sorted(self.started - set(self.statuses)):
            self.store.interrupt(self.runs[key])
            self.statuses[key] = TrialStatus.INTERRUPTED

    def not_started(self) -> list[str]:
        return sorted(set(self.runs) - self.started - set(self.statuses))


class TuningTracker(Tracker):
    """The tuning phase's writer: a child run (role `tune`) is made when Tune starts a
    trial, when its sampled values are known; `ended` keeps (values, val error, run id)."""

    def __init__(
        self, store: Store, study: StudyIds, arm: str, first: int, base: dict, code: CodeVersion
    ):
        super().__init__(store, {}, {})
        self.study, self.arm, self.next, self.base, self.code = study, arm, first, base, code
        self.sampled: dict[str, dict] = {}
        self.ended: list[tuple[dict, float, str]] = []

    def name(self, hint: str) -> str:
        key = f"{self.arm} tune={self.next}"
        self.next += 1
        return key

    def trial_started(self, key: str, sampled: dict) -> None:
        params = {**self.base, **sampled}
        run_id = self.store.create_trial(self.study, key, self.arm, params, self.code, Role.TUNE)
        self.runs[key], self.logged[key], self.sampled[key] = run_id, -1, dict(sampled)
        super().trial_started(key, sampled)

    def trial_event(self, key: str, event: Event) -> None:
        super().trial_event(key, event)
        if isinstance(event, Final) and ended(event).done:
            value = event.summary.get("val_error")
            error = value if isinstance(value, float) and math.isfinite(value) else math.inf
            self.ended.append((self.sampled[key], error, self.runs[key]))
