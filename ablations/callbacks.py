"""Ray Tune callbacks that run in the driver: the single MLflow writer and the live view."""

from __future__ import annotations

import json
import sys
import time

from ray import tune
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ablations.tracking import Store


def _key(trial) -> str:
    return trial.config["trial"]["key"]


class MlflowWriter(tune.Callback):
    """Logs each evaluation once (iteration past the last stored one), then the outcome."""

    def __init__(self, store: Store, todo: list[dict], summary):
        self.summary = summary
        self._store, self.uri = store, store.uri
        self.run_ids = {p["key"]: p["run_id"] for p in todo}
        self.logged = {p["key"]: p["logged_upto"] for p in todo}

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.uri)
        return self._store

    def __getstate__(self) -> dict:
        # Ray pickles its callbacks with the Tuner's state; the client holds locks.
        return {**self.__dict__, "_store": None}

    def key_of(self, trial) -> str:
        return _key(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        key = self.key_of(trial)
        run_id = self.run_ids[key]
        if result.get("kind") == "start":
            for tag in ("resumed_from", "val_digest", "train_size"):
                self.store.client.set_tag(run_id, f"ablate.{tag}", result[tag])
        elif result.get("kind") == "eval":
            record = json.loads(result["record"])
            if record["iteration"] > self.logged[key]:
                self.store.log_record(run_id, record)
                self.logged[key] = record["iteration"]
        elif result.get("kind") == "final":
            final = json.loads(result["final"])
            if final["status"] in ("finished", "diverged"):
                self.store.finish(run_id, final)
            self.summary.statuses[key] = final["status"]

    def on_trial_error(self, iteration, trials, trial, **info):
        key = self.key_of(trial)
        try:
            error = trial.get_error()
        except Exception as err:  # noqa: BLE001 - e.g. a full disk truncated Ray's error file
            error = err
        reason = f"{type(error).__name__}: {error}" if error else "trial failed"
        # Ray wraps the worker's exception; keep its last line, which names the cause.
        lines = [ln for ln in str(reason).splitlines() if ln.strip()]
        self.store.fail(self.run_ids[key], lines[-1] if lines else reason)
        self.summary.statuses[key] = "failed"

    def close_unfinished(self) -> None:
        """Trials that neither ended nor failed were interrupted: marked KILLED (resumable:
        the next run sets them RUNNING again and continues from their checkpoints)."""
        for key, run_id in self.run_ids.items():
            if key not in self.summary.statuses:
                self.store.client.set_tag(run_id, "ablate.status", "interrupted")
                self.store.client.set_terminated(run_id, "KILLED")
                self.summary.statuses[key] = "interrupted"


class StudyView(tune.Callback):
    """Per trial: status, iteration/total, train and val error, images/s; the study's ETA.
    On a terminal, a live table; otherwise one line per finished trial."""

    def __init__(self, plan, todo: list[dict], skipped: int):
        self.rows = {
            p["key"]: {
                "status": "pending",
                "it": 0,
                "total": p["config"]["iterations"],
                "train": None,
                "val": None,
                "ips": None,
            }
            for p in todo
        }
        self.total_trials = len(todo) + skipped
        self.skipped = skipped
        self.console: Console | None = None
        self.live: Live | None = None
        self.start = time.monotonic()
        self.start_its: dict[str, int] = {}
        self.title = plan.experiment

    def __getstate__(self) -> dict:
        return {**self.__dict__, "console": None, "live": None}

    def setup(self, **info):
        self.console = Console(file=sys.stderr)
        if self.console.is_terminal:
            self.live = Live(self._table(), console=self.console, refresh_per_second=2)
            self.live.start()
        else:
            self.console.print(
                f"{self.title}: {len(self.rows)} trials to run, {self.skipped} already done"
            )

    def on_trial_start(self, iteration, trials, trial, **info):
        self.rows[_key(trial)]["status"] = "running"
        self._refresh()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        key = _key(trial)
        row = self.rows[key]
        if result.get("kind") == "eval":
            rec = json.loads(result["record"])
            self.start_its.setdefault(key, rec["iteration"])
            row.update(
                it=rec["iteration"],
                train=rec.get("train/error"),
                val=rec.get("val/error"),
                ips=rec.get("images_per_s"),
            )
        elif result.get("kind") == "final":
            final = json.loads(result["final"])
            row["status"] = final["status"]
            if not self.live:
                test = final.get("test_error")
                self.console.print(
                    f"  {key}: {final['status']} at {final['iterations']}"
                    + (f", test error {test:.4f}" if test is not None else "")
                )
        self._refresh()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.rows[_key(trial)]["status"] = "failed"
        if not self.live:
            self.console.print(f"  {_key(trial)}: failed")
        self._refresh()

    def on_experiment_end(self, trials, **info):
        if self.live:
            self.live.update(self._table())
            self.live.stop()

    def _refresh(self) -> None:
        if self.live:
            self.live.update(self._table())

    def _eta(self) -> str:
        done_its = sum(r["it"] - self.start_its.get(k, r["it"]) for k, r in self.rows.items())
        left = sum(
            r["total"] - r["it"]
            for r in self.rows.values()
            if r["status"] in ("pending", "running")
        )
        elapsed = time.monotonic() - self.start
        if done_its <= 0:
            return "ETA: measuring"
        return f"ETA {left * elapsed / done_its / 60:.1f} min"

    def _table(self) -> Table:
        done = sum(r["status"] not in ("pending", "running") for r in self.rows.values())
        table = Table(
            title=f"{self.title}: {done + self.skipped}/{self.total_trials} trials "
            f"done  {self._eta()}",
            title_justify="left",
        )
        for col in ("trial", "status", "iteration", "train err", "val err", "img/s"):
            table.add_column(col, justify="left" if col in ("trial", "status") else "right")
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        for key, r in self.rows.items():
            table.add_row(
                key,
                r["status"],
                f"{r['it']}/{r['total']}",
                fmt(r["train"], ".3f"),
                fmt(r["val"], ".3f"),
                fmt(r["ips"], ".0f"),
            )
        return table
