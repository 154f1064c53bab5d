"""``sncli source poll``: one bounded ServiceNow -> Kafka cycle."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sncli.cli.common import CONFIG_OPTION, exit_with, guard, prepare_for_run, run_cycles, state_of

if TYPE_CHECKING:
    from sncli.config import Settings
    from sncli.source.outcome import RunSummary

app = typer.Typer(help="ServiceNow -> Kafka.", no_args_is_help=True)


@app.command()
def poll(
    ctx: typer.Context,
    table: list[str] = typer.Option([], "--table", "-t", help="Table to poll (repeatable; default: all)."),
    max_records: int | None = typer.Option(None, "--max-records", min=1, help="Stop after this many records."),
    max_seconds: float | None = typer.Option(None, "--max-seconds", min=0.1, help="Stop after this long."),
    every: float | None = typer.Option(None, "--every", min=0.1, help="Repeat a cycle every S seconds."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Fetch and count, produce and store nothing."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """One bounded cycle: each table in its own thread, until caught up or a bound is hit.

    The cursor is stored only after Kafka acknowledged every record of a page.
    SIGTERM/SIGINT stop at the next page boundary (exit 0). If any selected table's
    run lock is held by another run, nothing is done and the exit code is 75.
    With --every, cycles repeat (the config is re-read when its content changes)
    until SIGTERM/SIGINT; --max-records/--max-seconds then bound each cycle.
    """
    # Imported when the command runs: the source engine loads confluent_kafka, requests and rich,
    # which would slow every `sncli ... --help` (python -X importtime -m sncli source poll --help).
    from sncli.source.cycle import run_poll
    from sncli.source.poller import StopControl
    from sncli.source.runkit import stop_on_signals

    state = state_of(ctx, config)
    settings = state.settings()
    prepare_for_run()
    stop = StopControl()

    def cycle(current: Settings) -> int:
        from sncli.cli.progress import counter_total, poll_backlog, watch_progress
        from sncli.metrics import RunMetrics

        metrics = RunMetrics()
        total = partial(poll_backlog, current, table)  # asked once the first page is in, beside the run
        with watch_progress("source poll", total, lambda: counter_total(metrics.source_records)):
            summary = guard(lambda: run_poll(current, tables=table, max_records=max_records,
                                             max_seconds=max_seconds, dry_run=dry_run, stop=stop, metrics=metrics))
        _render(summary, json_output=state.json_output)
        return summary.exit_code

    with stop_on_signals(stop):
        code = run_cycles(state, settings, every, cycle, stop.event)
    exit_with(code)


def _render(summary: RunSummary, *, json_output: bool) -> None:
    from sncli.cli.render import error_line, print_json

    if json_output:
        print_json(summary.to_json())
        return
    if summary.error:
        error_line(summary.error)
    for name, t in sorted(summary.tables.items()):
        cursor = f"{t.cursor_after.timestamp} {t.cursor_after.sys_id}".rstrip() if t.cursor_after else "(none)"
        status = f"FAILED: {t.error}" if t.error else (t.stopped or "")
        dead = f", {sum(t.dlq.values())} dead-lettered" if t.dlq else ""
        hidden = f", {t.hidden} hidden by ACLs (not exported)" if t.hidden else ""
        typer.echo(f"{name}: {t.records} records, {t.pages} pages, {t.produced} produced{dead}{hidden}, "
                   f"cursor {cursor}; {status}")
    typer.echo(f"done in {summary.duration_seconds:.1f}s, exit code {summary.exit_code}")
