"""``sncli status``: every table's cursor, lag and last run, the DLQ and the sink group's lag, at a glance.

The reads and the judgement live in :mod:`sncli.status`; this module parses the
options, renders (a rich screen, or ``--json``) and exits 3 when something needs
attention (0 otherwise, 2 for a bad config or option), so it can gate a CI smoke run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sncli.cli.common import CONFIG_OPTION, exit_with, guard, state_of
from sncli.cli.render import print_json, stdout_console

if TYPE_CHECKING:
    from rich.console import Group

    from sncli.status.model import StatusReport
    from sncli.status.pushed import LastRun

_MAX_LAG = typer.Option(
    "1h", "--max-lag", help="A table whose cursor is older than this needs attention (3600, 30m, 2h, 1d)."
)
_MAX_SINK_LAG = typer.Option(
    None, "--max-sink-lag", min=0, help="A sink topic with more unread records than this needs attention."
)


def status(
    ctx: typer.Context,
    max_lag: str = _MAX_LAG,
    max_sink_lag: int | None = _MAX_SINK_LAG,
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Show each table's cursor, freshness lag, last runs, the DLQ's pending records and the sink group's lag.

    Exit 0 when all is well, 3 when something needs attention (a lag above --max-lag, DLQ records
    pending, a last run that failed, a part that could not be read, ...), 2 for a bad config.
    """
    from sncli.status.gather import gather_status
    from sncli.status.model import make_policy

    state = state_of(ctx, config)
    settings = state.settings()
    policy = guard(lambda: make_policy(max_lag, max_sink_lag))
    report = guard(lambda: gather_status(settings, policy, datetime.now(UTC)))
    if state.json_output:
        print_json(report.to_json())
    else:
        stdout_console().print(render_status(report))
    exit_with(report.exit_code)


def _run_cell(run: LastRun, now: datetime) -> str:
    from rich.markup import escape

    from sncli.status.model import FAILED_EXIT_CODES, duration_text

    code = "?" if run.exit_code is None else str(run.exit_code)
    style = "red" if run.exit_code in FAILED_EXIT_CODES else "green" if run.exit_code == 0 else "yellow"
    ago = duration_text((now - run.pushed_at).total_seconds()) + " ago" if run.pushed_at else "never"
    took = f", took {duration_text(run.duration_seconds)}" if run.duration_seconds is not None else ""
    window = f" [{escape(run.window)}]" if run.window else ""
    return f"{escape(run.command)}{window}: [{style}]exit {code}[/] {ago}{took}"


def render_status(report: StatusReport) -> Group:
    """The status screen: tables, DLQ, sink lag, then what needs attention."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    from sncli.status.model import duration_text

    tables = Table(title=f"sncli status at {report.generated_at:%Y-%m-%d %H:%M:%S} UTC", title_justify="left")
    for column in ("table", "cursor (UTC)", "sys_id", "lag", "fingerprint", "deletes cursor", "last runs"):
        tables.add_column(column, overflow="fold")
    for row in report.tables:
        cursor = row.cursor_timestamp or ("?" if not row.cursor_known else "-" if row.polled else "(sink only)")
        fingerprint = {"ok": "[green]ok[/]", "mismatch": "[red]mismatch[/]"}.get(row.fingerprint or "", "-")
        runs = "\n".join(_run_cell(run, report.generated_at) for run in row.runs) or "-"
        tables.add_row(escape(row.table), cursor, (row.cursor_sys_id or "-")[:12], duration_text(row.lag_seconds),
                       fingerprint, row.delete_cursor or "-", runs)
    parts: list[Table | str] = [tables]
    if report.dlq:
        dlq = Table(title="dead letter queue (pending for dlq replay)", title_justify="left")
        for column in ("topic", "pending", "by class"):
            dlq.add_column(column)
        for queue in report.dlq:
            classes = ", ".join(f"{c}: {n}" for c, n in sorted((queue.pending_by_class or {}).items())) or "-"
            pending = "?" if queue.pending is None else str(queue.pending)
            dlq.add_row(escape(queue.topic), f"[red]{pending}[/]" if queue.pending else pending, escape(classes))
        parts.append(dlq)
    if report.sink:
        sink = Table(title=f"sink group {report.group_id}: unread records", title_justify="left")
        for column in ("topic", "table", "partitions", "lag"):
            sink.add_column(column)
        for topic in report.sink:
            lag = "missing" if not topic.exists else "?" if topic.lag is None else f"{topic.lag:,}"
            sink.add_row(escape(topic.topic), escape(topic.table or "-"), str(topic.partitions), lag)
        parts.append(sink)
    if report.attention:
        parts.append("[bold red]needs attention[/] (exit 3):\n" +
                     "\n".join(f"  - {escape(reason)}" for reason in report.attention))
    else:
        parts.append("[bold green]all well[/] (exit 0)")
    return Group(*parts)
