"""The rich progress bar of a terminal, kept apart so a run off a terminal never imports rich (about 20 ms)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, Task, TaskID, TextColumn, TimeRemainingColumn
from rich.text import Text


class _Rate(TextColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} rec/s")


def new_bar(label: str, total: int | None) -> tuple[Progress, TaskID]:
    """A started bar on stderr: description, bar, done of total, rate, time remaining."""
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(""),
                   TimeRemainingColumn(), console=Console(file=sys.stderr), transient=False)
    task = bar.add_task(label, total=total)
    bar.start()
    return bar, task
