"""``sncli backfill``: a full or windowed load of one table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sncli.cli.common import CONFIG_OPTION, exit_with, guard, prepare_for_run, state_of

if TYPE_CHECKING:
    from sncli.source.outcome import RunSummary


def backfill(
    ctx: typer.Context,
    table: str = typer.Option(..., "--table", "-t", help="Table to load."),
    since: str | None = typer.Option(None, "--since", help="Start of the range, 'YYYY-MM-DD HH:MM:SS' UTC."),
    until: str | None = typer.Option(None, "--until", help="End of the range (exclusive)."),
    parallel: int = typer.Option(1, "--parallel", "-p", min=1, max=64, help="Disjoint windows run at once."),
    window: str | None = typer.Option(None, "--window", help="Run only window i of N ('i/N', 0-based)."),
    output: str = typer.Option("kafka", "--output", "-o", help="kafka or parquet:PATH"),
    set_cursor: bool = typer.Option(False, "--set-cursor", help="Move the poll cursor to the end when done."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Plan the windows and count, load nothing."),
    deletes: bool = typer.Option(False, "--deletes", help="Send the range's deletes (sys_audit_delete) as "
                                 "tombstones before its records."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Load a time range of one table with keyset paging; resumable per window.

    [since, until) is split into --parallel windows of similar record counts (or
    run only --window i/N of such a split, e.g. one pod of a Kubernetes Indexed
    Job; needs --until). Re-running the same command resumes each window where
    it stopped. The poll cursor is left alone unless --set-cursor.
    """
    # Imported when the command runs: the source engine loads confluent_kafka, requests and rich,
    # which would slow every `sncli ... --help` (python -X importtime -m sncli source poll --help).
    from sncli.cli.progress import terminal_progress
    from sncli.errors import UsageError
    from sncli.source.backfill import BackfillRequest, parse_output, run_backfill
    from sncli.source.poller import StopControl
    from sncli.source.runkit import stop_on_signals
    from sncli.source.windows import parse_window_spec

    state = state_of(ctx, config)

    def build() -> BackfillRequest:
        try:
            spec = parse_window_spec(window) if window is not None else None
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return BackfillRequest(table=table, since=since, until=until, parallel=parallel, window=spec,
                               output=parse_output(output), set_cursor=set_cursor, dry_run=dry_run,
                               deletes=deletes)

    request = guard(build)
    settings = state.settings()
    prepare_for_run()
    stop = StopControl()
    with stop_on_signals(stop):
        summary = guard(lambda: run_backfill(settings, request, stop=stop, progress=terminal_progress))
    _render(summary, json_output=state.json_output)
    exit_with(summary.exit_code)


def _render(summary: RunSummary, *, json_output: bool) -> None:
    from sncli.cli.render import error_line, print_json

    if json_output:
        print_json(summary.to_json())
        return
    if summary.error:
        error_line(summary.error)
    extra = summary.extra
    if "range_id" in extra:
        typer.echo(f"range [{extra['since']}, {extra['until']}) -> {extra['output']} (range id {extra['range_id']})")
    for w in extra.get("windows", []):
        state = (w.get("error") and f"FAILED: {w['error']}") or w.get("stopped") or ""
        done = w.get("records", "-")
        typer.echo(f"  window {w['index']}: [{w['lo']}, {w['hi']}) {w.get('records_in_window', '?')} in window, "
                   f"{done} loaded now; {state}")
    for name, t in summary.tables.items():
        dead = f", {sum(t.dlq.values())} dead-lettered" if t.dlq else ""
        hidden = f", {t.hidden} hidden by ACLs (not exported)" if t.hidden else ""
        typer.echo(f"{name}: {t.records} records, {t.produced} delivered{dead}{hidden}; {t.error or t.stopped or ''}")
    if "poll_cursor_set" in extra:
        typer.echo(f"poll cursor {'moved to ' + str(extra['until']) if extra['poll_cursor_set'] else 'not moved'}")
    typer.echo(f"done in {summary.duration_seconds:.1f}s, exit code {summary.exit_code}")
