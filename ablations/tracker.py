"""The driver's MLflow writer: trial events in, store writes out (docs/tracking.md).

Each evaluation is logged once: only iterations past the last one stored, so the history a
resumed trial replays from its checkpoint never repeats. Knows the store, not Ray.
"""

from __future__ import annotations

from ablations.events import Evaluation, Event, Final, Saved, Start
from ablations.store import Store, StudyRecord


class Recorder:
    """Writes the events of trials whose child runs exist (`runs`: key -> run id)."""

    def __init__(self, store: Store, runs: dict[str, str], logged: dict[str, int]):
        self.store, self.runs, self.logged = store, dict(runs), dict(logged)
        self.statuses: dict[str, str] = {}  # key -> how the trial ended in this run
        self.started: set[str] = set()
        self.resumed: dict[str, int] = {}  # key -> iteration it continued from
        self._newest: dict[str, str] = {}  # key -> newest checkpoint path

    def trial_started(self, key: str, sampled: dict) -> None:
        self.started.add(key)
        self.store.start(self.runs[key])

    def trial_event(self, key: str, event: Event) -> None:
        run_id = self.runs[key]
        if isinstance(event, Start):
            self.resumed[key] = event.resumed_from
            self.store.record_start(run_id, event)
            for record in event.history:
                self._log(key, record)
        elif isinstance(event, Evaluation):
            self._log(key, event.record)
        elif isinstance(event, Saved):
            self.store.record_checkpoint(run_id, event.path, self._newest.get(key))
            self._newest[key] = event.path
        elif isinstance(event, Final):
            if event.status in ("finished", "diverged"):
                self.store.finish(run_id, event)
            elif event.status == "failed":
                self.store.fail(run_id, event.error)
            else:  # stopped part-way
                self.store.interrupt(run_id)
            self.statuses[key] = {"stopped": "interrupted"}.get(event.status, event.status)

    def _log(self, key: str, record: dict) -> None:
        if record["iteration"] > self.logged.get(key, -1):
            self.store.record_eval(self.runs[key], record)
            self.logged[key] = record["iteration"]

    def close(self) -> None:
        """After Tune returns: a trial that started and did not end was interrupted
        (resumable); one that never started stays pending."""
        for key in sorted(self.started - set(self.statuses)):
            self.store.interrupt(self.runs[key])
            self.statuses[key] = "interrupted"

    def not_started(self) -> list[str]:
        return sorted(set(self.runs) - self.started - set(self.statuses))


class TuningRecorder(Recorder):
    """The tuning phase's writer: a child run (role `tune`) is made when Tune starts a
    trial, since only then are its sampled values known."""

    def __init__(
        self, store: Store, record: StudyRecord, study: str, arm: str, first: int, base: dict
    ):
        super().__init__(store, {}, {})
        self.record, self.study, self.arm, self.next, self.base = record, study, arm, first, base

    def name(self, hint: str) -> str:
        key = f"{self.arm} tune={self.next}"
        self.next += 1
        return key

    def trial_started(self, key: str, sampled: dict) -> None:
        from ablations.manifest import code_version

        params = {**self.base, **sampled}
        run_id = self.store.create_trial(
            self.record, self.study, key, self.arm, params, code_version(), role="tune"
        )
        self.runs[key] = run_id
        self.logged[key] = -1
        super().trial_started(key, sampled)
