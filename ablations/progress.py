"""Progress views on stderr: a bar for `ablate train`, a live table for `ablate run` (on a
terminal; otherwise one line per trial that starts, resumes or ends)."""

from __future__ import annotations

import sys
import time

from rich import progress as bars
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ablations.events import Evaluation, Event, Final, Progress, Start
from resnet.train import Callback


class TrainProgress(Callback):
    """A progress bar on stderr for one training run; the last evaluation beside it."""

    def __init__(self, total: int):
        self.total = total
        self.progress = bars.Progress(
            bars.TextColumn("[bold]train"),
            bars.BarColumn(),
            bars.MofNCompleteColumn(),
            bars.TextColumn("{task.fields[metrics]}"),
            bars.TimeRemainingColumn(),
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

    def on_eval(self, evaluation: dict) -> None:
        val = evaluation.get("val/error")
        text = f"train err {100 * evaluation['train/error']:.1f}%"
        text += f"  val err {100 * val:.1f}%" if val is not None else ""
        text += f"  {evaluation['images_per_s']:.0f} img/s"
        self.progress.update(self.task, metrics=text)


class StudyView:
    """Per trial: status, progress, last errors, images/s and time left; the study's ETA.
    On a terminal a live table, otherwise a line per trial that starts, resumes or ends."""

    COLUMNS = ("trial", "status", "iteration", "train err", "val err", "img/s", "left", "note")

    def __init__(self, title: str, todo: dict[str, int], skipped: int, total: int):
        self.title, self.skipped, self.total_trials = title, skipped, total
        self.rows = {key: self._row(iterations) for key, iterations in todo.items()}
        self.console = Console(file=sys.stderr)
        self.live: Live | None = None

    @staticmethod
    def _row(iterations: int) -> dict:
        return {"status": "pending", "it": 0, "total": iterations, "train": None, "val": None,
                "ips": None, "note": "", "since": None}  # fmt: skip

    def __enter__(self) -> StudyView:
        if self.console.is_terminal:
            self.live = Live(self._table(), console=self.console, refresh_per_second=2)
            self.live.start()
        else:
            self.console.print(
                f"{self.title}: {len(self.rows)} trials to run, {self.skipped} already done"
            )
        return self

    def finish(self, statuses: dict[str, str]) -> None:
        """The final table, with how each trial ended in this run (interrupted ones too)."""
        for key, status in statuses.items():
            row = self.rows.setdefault(key, self._row(0))
            if status == "interrupted" and row["status"] != status:
                self._say(f"  {key}: interrupted at {row['it']}")
            row["status"] = status
        self._refresh()
        if self.live:
            self.live.stop()

    def _say(self, text: str) -> None:
        if not self.live:
            self.console.print(text)

    def trial_started(self, key: str, sampled: dict) -> None:
        self.rows.setdefault(key, self._row(0))["status"] = "running"
        self._refresh()

    def trial_event(self, key: str, event: Event) -> None:
        row = self.rows.setdefault(key, self._row(0))
        if isinstance(event, Start):
            row.update(it=event.resumed_from, total=event.iterations or row["total"])
            row["since"] = (time.monotonic(), event.resumed_from)
            if event.resumed_from:
                row["note"] = f"resumed from {event.resumed_from}"
                self._say(f"  {key}: resumed from iteration {event.resumed_from}")
        elif isinstance(event, Progress):
            row.update(it=event.iteration, ips=event.images_per_s)
        elif isinstance(event, Evaluation):
            ev = event.evaluation
            row.update(it=ev["iteration"], train=ev.get("train/error"), val=ev.get("val/error"))
        elif isinstance(event, Final):
            row["status"] = event.status
            test = event.summary.get("test_error")
            detail = f", test error {100 * test:.2f}%" if test is not None else ""
            at = event.summary.get("iterations")
            where = f" at iteration {at}" if at is not None else ""
            if event.error:
                detail = f": {event.error}"
            self._say(f"  {key}: {event.status}{where}{detail}")
        self._refresh()

    def _refresh(self) -> None:
        if self.live:
            self.live.update(self._table())

    def _left(self, row: dict) -> float | None:
        """Seconds left for a running trial, at its pace since it (re)started."""
        if row["status"] != "running" or row["since"] is None:
            return None
        started, first = row["since"]
        done, elapsed = row["it"] - first, time.monotonic() - started
        return (row["total"] - row["it"]) * elapsed / done if done > 0 else None

    def _eta(self) -> str:
        rates = [
            (r["it"] - r["since"][1]) / (time.monotonic() - r["since"][0])
            for r in self.rows.values()
            if r["since"] is not None and r["it"] > r["since"][1]
        ]
        left = sum(
            r["total"] - r["it"]
            for r in self.rows.values()
            if r["status"] in ("pending", "running")
        )
        if not rates:
            return "ETA: measuring"
        return f"ETA {duration(left / sum(rates))}"

    def _table(self) -> Table:
        done = sum(r["status"] not in ("pending", "running") for r in self.rows.values())
        table = Table(
            title=f"{self.title}: {done + self.skipped}/{self.total_trials} trials "
            f"done  {self._eta()}",
            title_justify="left",
        )
        for col in self.COLUMNS:
            table.add_column(col, justify="left" if col in ("trial", "status", "note") else "right")
        pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        for key, r in self.rows.items():
            table.add_row(
                key,
                r["status"],
                f"{r['it']}/{r['total']}",
                pct(r["train"]),
                pct(r["val"]),
                "-" if r["ips"] is None else f"{r['ips']:.0f}",
                duration(self._left(r)),
                r["note"],
            )
        return table


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s" if seconds >= 0.5 else "< 1 s"
