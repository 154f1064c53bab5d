"""``sncli dlq inspect|replay|export``.

The DLQ package and the sink's replay are imported inside the commands: they load
sncli.config (pydantic) and confluent_kafka, which the CLI's start-up (``sncli
--help``, every other command) must not pay for. ``dlq inspect`` and ``export``
import only :mod:`sncli.dlq`; ``replay`` also the sink engine. rich's table likewise: only
``dlq inspect`` draws one.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sncli.cli.common import CONFIG_OPTION, exit_with, guard, state_of
from sncli.cli.render import print_json, stdout_console
from sncli.cli.sink_cmd import render_summary, stop_on_signals, table_console
from sncli.errors import ExitCode

if TYPE_CHECKING:
    from rich.table import Table

    from sncli.config import Settings
    from sncli.dlq.record import DlqEntry
    from sncli.dlq.select import Filters, View

app = typer.Typer(help="Inspect, replay and export the dead letter queue.", no_args_is_help=True)

_TABLE = typer.Option(None, "--table", help="Only records for this table.")
_CLASS = typer.Option(
    None, "--error-class",
    help="Only this error class (record, permission, not_found, conflict, ambiguous, retries_exhausted, decode).",
)
_SINCE = typer.Option(
    None, "--since", help="Only records dead-lettered at or after this time (2h, 7d, 2024-05-01, ISO 8601; UTC)."
)
_TOPIC = typer.Option(None, "--topic", help="Only records that came from this source topic.")
_DLQ_TOPIC = typer.Option(None, "--dlq-topic", help="The DLQ topic to read (default: sink.dlq_topic).")
_ALL = typer.Option(
    False, "--all",
    help="The full history: also records a replay already wrote or re-queued (marked pending=false).",
)
_REPLAY_GROUP = typer.Option(
    None, "--group",
    help="The replay group whose progress says what is pending (default: <sink.group_id>-dlq-replay, as replay).",
)


def _filters(table: str | None, error_class: str | None, since: str | None, topic: str | None) -> Filters:
    from sncli.dlq.select import make_filters

    return guard(lambda: make_filters(table, error_class, since, now=datetime.now(UTC), topic=topic))


def _view(settings: Settings, group: str | None, history: bool) -> View:
    """Pending for the replay group that ``dlq replay`` would use (``--group`` names another), or everything."""
    from sncli.dlq.select import View, replay_group

    return View(replay_group=replay_group(settings.sink.group_id, group), history=history)


@app.command()
def inspect(
    ctx: typer.Context,
    table: str | None = _TABLE,
    error_class: str | None = _CLASS,
    since: str | None = _SINCE,
    topic: str | None = _TOPIC,
    limit: int = typer.Option(100, "--limit", min=1, help="Show the most recent N matching records."),
    history: bool = _ALL,
    group: str | None = _REPLAY_GROUP,
    dlq_topic: str | None = _DLQ_TOPIC,
    config: Path | None = CONFIG_OPTION,
) -> None:
    """List the DLQ records still pending, with their error context; commits nothing.

    The signature column says what replay would make of each record: valid
    (written), unsigned (kept), invalid (passed over), unchecked (no key set).

    Pending: neither written by a replay nor re-queued by one (a re-queued copy
    is listed in their place). ``--all`` lists the full history instead.
    """
    state = state_of(ctx, config)
    settings = state.settings()
    filters = _filters(table, error_class, since, topic)
    from sncli.dlq.signing import DlqSigner
    from sncli.dlq.views import inspect_dlq

    name = dlq_topic or settings.sink.dlq_topic
    view = _view(settings, group, history)
    signer = DlqSigner.of(settings.sink)
    entries = guard(lambda: inspect_dlq(settings.kafka, name, filters, limit, view=view, signer=signer))
    if state.json_output:
        print_json([entry.as_row() for entry in entries])
        return
    table_console().print(_listing(name, entries, history=history))


def _listing(name: str, entries: list[DlqEntry], *, history: bool) -> Table:
    """The inspect table; ``history`` adds the pending column."""
    from rich.markup import escape
    from rich.table import Table

    plural = "s" if len(entries) != 1 else ""
    title = f"{name}: {len(entries)} record{plural}" if history else f"{name}: {len(entries)} pending record{plural}"
    listing = Table(title=title)
    columns = ["offset", "time", "table", "sys_id", "class", "status", "signature", "message"]
    for column in [*columns, "pending"] if history else columns:
        listing.add_column(column, overflow="fold")
    for entry in entries:
        when = entry.dead_lettered_at.strftime("%Y-%m-%d %H:%M:%S") if entry.dead_lettered_at else ""
        cells = [
            f"{entry.partition}:{entry.offset}", when, entry.table, entry.sys_id or "", entry.error_class,
            "" if entry.status is None else str(entry.status), entry.signature or "",
            f"[unparseable {', '.join(entry.problems)}] {entry.message}" if entry.problems else entry.message,
        ]
        if history:
            cells.append("yes" if entry.pending else "no")
        listing.add_row(*(escape(cell) for cell in cells))  # data, not markup: "[...]" must show
    return listing


@app.command()
def replay(
    ctx: typer.Context,
    table: str | None = _TABLE,
    error_class: str | None = _CLASS,
    since: str | None = _SINCE,
    topic: str | None = _TOPIC,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan, write nothing."),
    workers: int | None = typer.Option(None, "--workers", "-w", min=1, help="Parallel writers."),
    group: str | None = typer.Option(
        None, "--group", help="Consumer group for replay progress (default: <sink.group_id>-dlq-replay)."
    ),
    trust_unsigned: bool = typer.Option(
        False, "--trust-unsigned",
        help="Also replay records without a signature (written before sink.dlq_signing_key was set, or "
             "without one); needs --topic: their claim to come from it is taken on your word.",
    ),
    drop_unsigned: bool = typer.Option(
        False, "--drop-unsigned",
        help="Pass over unsigned records instead of keeping them in the DLQ (they stay in dlq inspect --all); "
             "for junk produced to the DLQ, which every replay would otherwise carry forward.",
    ),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Re-attempt DLQ records into ServiceNow; failures go back to the DLQ.

    Progress is committed in its own consumer group, so a replay resumes where the
    last one stopped and never repeats finished work. Records the filters do not
    select are carried forward (re-queued unchanged at the end of the DLQ) for a
    later replay. Only records signed with sink.dlq_signing_key are written;
    others are refused (unsigned ones kept in the DLQ unless --drop-unsigned,
    forged ones passed over).
    Exit 0 when every selected record was written, 3 when some failed again or
    were refused, 2 without a signing key (unless --trust-unsigned --topic),
    1 when the run failed.
    """
    state = state_of(ctx, config)
    settings = state.settings()
    filters = _filters(table, error_class, since, topic)
    from sncli.cli.progress import counter_total, drain_backlog, watch_progress
    from sncli.dlq.select import replay_group
    from sncli.metrics import RunMetrics
    from sncli.sink.replay import run_replay

    stop = threading.Event()
    metrics = RunMetrics()
    total = partial(drain_backlog, settings.kafka, replay_group(settings.sink.group_id, group),
                    [settings.sink.dlq_topic])  # learned beside the run
    with stop_on_signals(stop), watch_progress("dlq replay", total, lambda: counter_total(metrics.sink_records)):
        summary = guard(
            lambda: run_replay(settings, filters, group_id=group, dry_run=dry_run, workers=workers, stop=stop,
                               trust_unsigned=trust_unsigned, drop_unsigned=drop_unsigned, metrics=metrics)
        )
    render_summary(summary, json_output=state.json_output, command="dlq replay")
    exit_with(summary.exit_code)


@app.command()
def export(
    ctx: typer.Context,
    output: Path = typer.Option(..., "--output", "-o", help="File to write."),
    fmt: str = typer.Option("parquet", "--format", help="parquet or jsonl"),
    table: str | None = _TABLE,
    error_class: str | None = _CLASS,
    since: str | None = _SINCE,
    topic: str | None = _TOPIC,
    history: bool = _ALL,
    group: str | None = _REPLAY_GROUP,
    dlq_topic: str | None = _DLQ_TOPIC,
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Export the pending DLQ records (``--all``: the full history), one row each, error headers as columns."""
    state = state_of(ctx, config)
    settings = state.settings()
    filters = _filters(table, error_class, since, topic)
    from sncli.dlq.signing import DlqSigner
    from sncli.dlq.views import export_dlq

    name = dlq_topic or settings.sink.dlq_topic
    view = _view(settings, group, history)
    signer = DlqSigner.of(settings.sink)
    count = guard(lambda: export_dlq(settings.kafka, name, filters, output, fmt.lower(), view=view, signer=signer))
    if state.json_output:
        print_json({"rows": count, "output": str(output), "format": fmt.lower(), "dlq_topic": name,
                    "view": "all" if history else "pending"})
    else:
        what = "" if history else "pending "
        stdout_console().print(f"exported {count} {what}DLQ record{'s' if count != 1 else ''} from {name} to {output}",
                               highlight=False, markup=False)
    exit_with(ExitCode.OK)
