"""``sncli sink drain``: one bounded Kafka -> ServiceNow drain.

The engine (:mod:`sncli.sink.drain`, which loads confluent_kafka) and rich's
console and table are imported inside the functions that use them: every
``sncli`` command, ``--help`` included, imports this module to build the CLI, and
those imports are most of a command's start-up time (``python -X importtime``).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sncli import signals
from sncli.cli.common import CONFIG_OPTION, exit_with, guard, prepare_for_run, run_cycles, state_of
from sncli.cli.render import print_json, stdout_console

if TYPE_CHECKING:
    from rich.console import Console

    from sncli.config import Settings
    from sncli.sink.job import DrainSummary

app = typer.Typer(help="Kafka -> ServiceNow.", no_args_is_help=True)

#: Tables printed to a pipe or file are not cut to 80 columns: a script or a log keeps every value.
WIDE = 10_000


def table_console() -> Console:
    """stdout for tables: the terminal's width on a TTY, unbounded elsewhere."""
    console = stdout_console()
    if console.is_terminal:
        return console
    from rich.console import Console  # lazy: start-up cost (module docstring)

    return Console(file=sys.stdout, width=WIDE, soft_wrap=True)


@app.command()
def drain(
    ctx: typer.Context,
    topic: list[str] = typer.Option([], "--topic", help="Topic to drain (repeatable; default: all)."),
    max_messages: int | None = typer.Option(
        None, "--max-messages", min=1, help="Read at most this many, write them, exit."
    ),
    max_seconds: float | None = typer.Option(
        None, "--max-seconds", min=0.1,
        help="Deadline for the whole run: writes not sent by then are left, uncommitted, for the next run.",
    ),
    workers: int | None = typer.Option(None, "--workers", "-w", min=1, help="Parallel writers."),
    every: float | None = typer.Option(None, "--every", min=0.1, help="Repeat a drain every S seconds."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Resolve and print operations, write nothing."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Consume up to the end offsets seen at start, write to ServiceNow, dead-letter failures, commit.

    Exit 0 when every record was written or skipped, 3 when some went to the DLQ,
    1 when the run failed (nothing committed past an unfinished record).
    At --max-seconds or SIGTERM only the HTTP calls already sent finish (each within
    servicenow.timeout_seconds); the rest is read and written again by the next run.
    """
    state = state_of(ctx, config)
    settings = state.settings()
    prepare_for_run()
    from sncli.sink.drain import run_drain  # lazy: start-up cost (module docstring)
    from sncli.sink.job import DrainOptions

    options = DrainOptions(
        topics=list(topic), max_messages=max_messages, max_seconds=max_seconds, workers=workers, dry_run=dry_run
    )
    stop = threading.Event()

    def cycle(current: Settings) -> int:
        from sncli.cli.progress import counter_total, drain_backlog, watch_progress
        from sncli.metrics import RunMetrics

        metrics = RunMetrics()
        total = partial(drain_backlog, current.kafka, current.sink.group_id,
                        options.topics or [t.topic for t in current.sink.topics])  # learned beside the run
        with watch_progress("sink drain", total, lambda: counter_total(metrics.sink_records)):
            summary = guard(lambda: run_drain(current, options, stop=stop, metrics=metrics))
        render_summary(summary, json_output=state.json_output)
        return summary.exit_code

    with stop_on_signals(stop):
        code = run_cycles(state, settings, every, cycle, stop)
    exit_with(code)


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM / SIGINT ask the drain to stop reading, finish what it writes, commit and exit
    (:func:`sncli.signals.stop_on_signals`; the same signal again stops the process at once)."""
    with signals.stop_on_signals(stop.set, then="finishing the writes already sent, then committing"):
        yield


def render_summary(summary: DrainSummary, *, json_output: bool, command: str = "sink drain") -> None:
    """The run summary on stdout: JSON for scripts, or a plan table (dry run) and a few lines."""
    if json_output:
        print_json(summary.as_dict())
        return
    console = stdout_console()
    if summary.plan is not None:
        from rich.table import Table  # lazy: start-up cost (module docstring)

        table = Table(title=f"{command} --dry-run: planned operations")
        for column in ("topic", "partition", "offset", "operation", "table", "sys_id", "detail"):
            table.add_column(column)
        for entry in summary.plan:
            detail = entry.get("error") or entry.get("reason") or ", ".join(entry.get("fields", []))
            table.add_row(
                str(entry["topic"]), str(entry["partition"]), str(entry["offset"]), str(entry["operation"]),
                str(entry.get("table") or ""), str(entry.get("sys_id") or ""), str(detail),
            )
        table_console().print(table)
    written = ", ".join(f"{op} {n}" for op, n in sorted(summary.written.items())) or "0"
    dlq = ", ".join(f"{cls} {n}" for cls, n in sorted(summary.dlq.items())) or "0"
    passed = f", carried forward {summary.carried_forward}" if summary.carried_forward else ""
    if summary.refused:
        passed += ", refused " + ", ".join(f"{why} {n}" for why, n in sorted(summary.refused.items()))
    console.print(
        f"{command}: {summary.messages} messages{passed}, written {written}, skipped {summary.skipped}, "
        f"dead-lettered {dlq}; stopped by {summary.stopped_by} after {summary.duration_seconds:.1f}s "
        f"-> exit {summary.exit_code}",
        highlight=False,
        markup=False,
    )
    for topic_name, parts in sorted(summary.committed.items()):
        shown = ", ".join(f"[{p}]={o}" for p, o in sorted(parts.items(), key=lambda kv: int(kv[0])))
        console.print(f"  committed {topic_name}: {shown}", highlight=False, markup=False)
    rate = (summary.servicenow or {}).get("rate_limit") or {}
    if rate.get("bound_the_run"):
        console.print(f"  note: servicenow.rate_limit ({rate['requests_per_second']:g} calls/s) bounded this run "
                      f"({rate['waits']} calls waited for it); remove it (null) or raise it to go faster",
                      highlight=False, markup=False)
    if summary.error:
        console.print(f"  error: {summary.error}", highlight=False, markup=False)
