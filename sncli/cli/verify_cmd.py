"""``sncli verify``: prove each table's topic mirrors the table; ``--repair`` re-sends what differs."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sncli.cli.common import CONFIG_OPTION, exit_with, guard, state_of

if TYPE_CHECKING:
    from rich.console import Console

    from sncli.verify.report import TableReport, VerifyReport

#: Off a terminal, a JSON progress line at most this often.
PROGRESS_SECONDS = 5.0


def verify(
    ctx: typer.Context,
    table: list[str] = typer.Option([], "--table", "-t", help="Table to verify (repeatable; default: all)."),
    since: str | None = typer.Option(None, "--since", help="Compare from here, 'YYYY-MM-DD HH:MM:SS' UTC "
                                     "(default: the table's start)."),
    until: str | None = typer.Option(None, "--until", help="Compare up to here, excluded (default: the stored "
                                     "poll cursor, included)."),
    repair: bool = typer.Option(False, "--repair", help="Re-send missing and stale records, tombstone extras, "
                                "then verify again. Never moves the poll cursor."),
    exact: bool = typer.Option(False, "--exact", help="Diff every window by sys_id instead of trusting equal "
                               "counts (lists the whole range from ServiceNow)."),
    json_output: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Compare ServiceNow with each table's topic up to the stored poll cursor (or --until).

    Reports per table: missing (in ServiceNow, not alive in Kafka), stale (in Kafka
    with another sys_updated_on) and extra (alive in Kafka, absent from ServiceNow).
    Exit codes: 0 in sync; 3 differences found (run with --repair, or look at why);
    1 a table could not be verified (the message says why); 2 usage or config error.
    """
    # Imported when the command runs: the engine loads confluent_kafka and the HTTP client.
    from sncli.verify.engine import VerifyRequest, run_verify
    from sncli.verify.search import SearchPolicy

    state = state_of(ctx, config)
    settings = state.settings()
    request = VerifyRequest(tables=table, since=since, until=until, repair=repair,
                            policy=SearchPolicy(exact=exact))
    progress = StatusProgress() if sys.stderr.isatty() else JsonProgress()
    try:
        report = guard(lambda: run_verify(settings, request, progress))
    finally:
        progress.close()
    render(report, json_output=json_output or state.json_output, terminal=sys.stdout.isatty())
    exit_with(report.exit_code)


class JsonProgress:
    """A JSON line on stderr at most every :data:`PROGRESS_SECONDS` (and at each new phase)."""

    def __init__(self, every: float = PROGRESS_SECONDS) -> None:
        self._every = every
        self._last = 0.0
        self._phase: tuple[str, str] | None = None

    def update(self, table: str, phase: str, done: int | None = None) -> None:
        import orjson

        now = time.monotonic()
        if (table, phase) == self._phase and now - self._last < self._every:
            return
        self._phase, self._last = (table, phase), now
        line = {"progress": "verify", "table": table, "phase": phase, "done": done}
        sys.stderr.write(orjson.dumps(line).decode() + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        return None


class StatusProgress:
    """A rich status line on the terminal's stderr."""

    def __init__(self) -> None:
        from sncli.cli.render import stderr_console

        self._status = stderr_console().status("verify: starting")
        self._status.start()

    def update(self, table: str, phase: str, done: int | None = None) -> None:
        figure = f" ({done:,})" if done is not None else ""
        self._status.update(f"verify {table}: {phase}{figure}")

    def close(self) -> None:
        self._status.stop()


def render(report: VerifyReport, *, json_output: bool, terminal: bool) -> None:
    from sncli.cli.render import error_line, print_json, stdout_console

    if json_output:
        print_json(report.to_json())
        return
    console = stdout_console() if terminal else None
    for name, t in report.tables.items():
        if console is not None and t.windows:
            _windows_table(console, t)
        if t.error:
            error_line(f"{name}: could not verify: {t.error}")
        typer.echo(summary_line(t))
    typer.echo(f"done in {report.duration_seconds:.1f}s, exit code {int(report.exit_code)}")


def summary_line(t: TableReport) -> str:
    f = t.findings
    state = "in sync" if t.differences == 0 and not t.error else ("differs" if t.differences else "not verified")
    parts = [f"{t.table} -> {t.topic}: {state}; missing {len(f.missing)}, stale {len(f.stale)}, "
             f"extra {len(f.extra)}"]
    if f.pending:
        parts.append(f"{len(f.pending)} changed after the bound (the next poll sends them)")
    if t.repair is not None:
        r = t.repair
        parts.append(f"repaired: {r.resent} re-sent, {r.tombstones} tombstones"
                     + (f", {r.vanished} gone from ServiceNow meanwhile" if r.vanished else ""))
    parts.append(f"{t.sn_records:,} records in ServiceNow up to {t.bound or '?'}, {t.kafka_alive:,} alive in Kafka, "
                 f"{t.requests} ServiceNow requests")
    for label, ids in (("missing", f.missing), ("extra", f.extra), ("stale", [s.sys_id for s in f.stale])):
        if ids:
            parts.append(f"first {label}: {', '.join(ids[:5])}")
    return "; ".join(parts)


def _windows_table(console: Console, t: TableReport) -> None:
    from rich.table import Table

    grid = Table(title=f"{t.table}: windows compared", show_lines=False)
    for column in ("window", "ServiceNow", "Kafka", "result"):
        grid.add_column(column, justify="right" if column in ("ServiceNow", "Kafka") else "left")
    shown = sorted((w for w in t.windows if w.depth == 0 or w.verdict != "same"),
                   key=lambda w: (w.span.lo, w.depth, w.span.hi))  # each cut window above its parts
    for w in shown[:60]:
        result = {"same": "same", "cut": "differs: cut", "diff": "differs: diffed by sys_id"}[w.verdict]
        grid.add_row(("  " * w.depth) + w.span.label, f"{w.sn:,}", f"{w.kafka:,}", result)
    if len(shown) > 60:
        grid.add_row(f"... {len(shown) - 60} more", "", "", "")
    console.print(grid)
