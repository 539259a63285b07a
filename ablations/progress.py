"""Progress views: one bar for `ablate train`, a live table for `ablate run`."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from resnet.train import Callback


class TrainProgress(Callback):
    """A progress bar on stderr for one training run; the last evaluation beside it."""

    def __init__(self, total: int, quiet: bool = False):
        self.total = total
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[metrics]}"),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            disable=quiet,
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

    def on_step(self, iteration: int) -> None:
        self.progress.update(self.task, completed=iteration)

    def on_eval(self, record: dict) -> None:
        val = record.get("val/error")
        text = f"train err {record['train/error']:.3f}"
        text += f"  val err {val:.3f}" if val is not None else ""
        text += f"  {record['images_per_s']:.0f} img/s"
        self.progress.update(self.task, metrics=text)
