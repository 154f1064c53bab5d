"""The backfill's progress on a terminal: a rich bar on stderr (count, rate, ETA).

Imported only by the ``backfill`` command when it runs, so rich's import cost
is not paid by ``--help`` or by other commands. Off a terminal the run logs a
line every few seconds instead (:class:`sncli.source.backfill.LogProgress`).
"""

from __future__ import annotations

import sys
import threading

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from sncli.source.backfill import LogProgress, ProgressReport


class _Rate(TextColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} rec/s")


class BarProgress:
    """A rich progress bar on stderr, advanced by the windows' threads."""

    def __init__(self, label: str, total: int) -> None:
        self._lock = threading.Lock()
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(""),
                             TimeRemainingColumn(), console=Console(file=sys.stderr), transient=False)
        self._task = self._bar.add_task(label, total=total or None)
        self._bar.start()

    def add(self, records: int) -> None:
        with self._lock:
            self._bar.update(self._task, advance=records)

    def close(self) -> None:
        self._bar.stop()


def terminal_progress(label: str, total: int, *, tty: bool | None = None) -> ProgressReport:
    """A bar when stderr is a terminal (or ``tty``), else a log line every few seconds."""
    if sys.stderr.isatty() if tty is None else tty:
        return BarProgress(label, total)
    return LogProgress(label, total)
