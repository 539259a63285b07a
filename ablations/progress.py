"""Progress views on stderr: a bar for `ablate train`, a live table for `ablate run` (on a
terminal; otherwise one line per trial that starts, resumes or ends)."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ablations.events import Evaluation, Event, Final, Start
from resnet.train import Callback


class TrainProgress(Callback):
    """A progress bar on stderr for one training run; the last evaluation beside it."""

    def __init__(self, total: int):
        self.total = total
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[metrics]}"),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
        )
        self.task = None

    def __enter__(self) -> TrainProgress:
        self.progress.start()
        self.task = self.progress.add_task("train", total=self.total, metrics="")
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def on_start(self, info: dict) -> None:
        self.progress.update(self.task, completed=info["resumed_from"])
        if info["resumed_from"]:
            self.progress.console.print(f"resumed from iteration {info['resumed_from']}")

    def on_step(self, iteration: int) -> None:
        self.progress.update(self.task, completed=iteration)

    def on_eval(self, record: dict) -> None:
        val = record.get("val/error")
        text = f"train err {record['train/error']:.3f}"
        text += f"  val err {val:.3f}" if val is not None else ""
        text += f"  {record['images_per_s']:.0f} img/s"
        self.progress.update(self.task, metrics=text)


class StudyView:
    """Per trial: status, iteration/total, train and val error, images/s; the study's ETA."""

    def __init__(self, title: str, todo: dict[str, int], skipped: int, total: int):
        self.title, self.skipped, self.total_trials = title, skipped, total
        self.rows = {key: self._row(iterations) for key, iterations in todo.items()}
        self.console = Console(file=sys.stderr)
        self.live: Live | None = None
        self.start = time.monotonic()
        self.start_its: dict[str, int] = {}

    @staticmethod
    def _row(iterations: int) -> dict:
        return {"status": "pending", "it": 0, "total": iterations, "train": None, "val": None,
                "ips": None, "note": ""}  # fmt: skip

    def __enter__(self) -> StudyView:
        if self.console.is_terminal:
            self.live = Live(self._table(), console=self.console, refresh_per_second=2)
            self.live.start()
        else:
            self.console.print(
                f"{self.title}: {len(self.rows)} trials to run, {self.skipped} already done"
            )
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.live.update(self._table())
            self.live.stop()

    def _say(self, text: str) -> None:
        if not self.live:
            self.console.print(text)

    def trial_started(self, key: str, sampled: dict) -> None:
        total = self.rows[key]["total"] if key in self.rows else 0
        self.rows.setdefault(key, self._row(total))["status"] = "running"
        self._refresh()

    def trial_event(self, key: str, event: Event) -> None:
        row = self.rows.setdefault(key, self._row(0))
        if isinstance(event, Start):
            row["it"] = event.resumed_from
            self.start_its[key] = event.resumed_from
            if event.resumed_from:
                row["note"] = f"resumed from {event.resumed_from}"
                self._say(f"  {key}: resumed from iteration {event.resumed_from}")
        elif isinstance(event, Evaluation):
            rec = event.record
            self.start_its.setdefault(key, rec["iteration"])
            row.update(it=rec["iteration"], train=rec.get("train/error"),
                       val=rec.get("val/error"), ips=rec.get("images_per_s"))  # fmt: skip
        elif isinstance(event, Final):
            row["status"] = event.status
            test = event.summary.get("test_error")
            detail = f", test error {test:.4f}" if test is not None else ""
            if event.error:
                detail = f": {event.error}"
            self._say(f"  {key}: {event.status} at {event.summary.get('iterations', '-')}{detail}")
        self._refresh()

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
        for col in ("trial", "status", "iteration", "train err", "val err", "img/s", ""):
            table.add_column(col, justify="left" if col in ("trial", "status", "") else "right")
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        for key, r in self.rows.items():
            table.add_row(
                key,
                r["status"],
                f"{r['it']}/{r['total']}",
                fmt(r["train"], ".3f"),
                fmt(r["val"], ".3f"),
                fmt(r["ips"], ".0f"),
                r["note"],
            )
        return table
