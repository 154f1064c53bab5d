"""``sncli offsets show|set|reset|import``: a thin shell over sncli.offsets.admin."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sncli.cli.common import CONFIG_OPTION, exit_with, guard, state_of
from sncli.cli.render import error_line, print_json, stdout_console
from sncli.errors import ExitCode

if TYPE_CHECKING:
    from sncli.offsets.admin import OffsetRow
    from sncli.offsets.model import StoredOffset

# Each command imports sncli.offsets inside: its admin imports sncli.config (pydantic) and the package
# its stores and lock, together more than the rest of every command's start-up (``--help`` included).
# rich's table is imported where it renders, for the same reason.

app = typer.Typer(help="Read and edit stored source progress.", no_args_is_help=True)


def _confirm(question: str, yes: bool) -> None:
    """Ask on a terminal; without one, only --yes may proceed (a cron job must never hang on a prompt)."""
    if yes:
        return
    if not sys.stdin.isatty():
        error_line("refusing to change offsets without confirmation: no terminal to ask on, pass --yes")
        exit_with(ExitCode.USAGE)
    if not typer.confirm(question, default=False, err=True):
        error_line("aborted; nothing changed")
        exit_with(ExitCode.FAILED)


def _position(offset: StoredOffset | None) -> str:
    if offset is None:
        return "(none: starts at the table's `start`)"
    return f"{offset.timestamp} / {offset.sys_id or '(no sys_id)'}"


def _lag(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    sign, rest = ("-", -seconds) if seconds < 0 else ("", seconds)
    days, rest = divmod(rest, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s"]
    return sign + " ".join(p for p in parts if p)


def _render_rows(rows: list[OffsetRow]) -> None:
    from rich.table import Table

    table = Table(title="stored offsets")
    for column in ("table", "key", "cursor timestamp (UTC)", "sys_id", "lag", "fingerprint", "updated"):
        table.add_column(column)
    for row in rows:
        key = "poll" if row.key == row.table else row.key.removeprefix(f"backfill/{row.table}/")
        style = {"ok": "green", "mismatch": "red", "not in config": "yellow"}.get(row.fingerprint or "", "")
        fingerprint = f"[{style}]{row.fingerprint}[/]" if style else (row.fingerprint or "-")
        table.add_row(row.table, key, row.timestamp or "-", row.sys_id or "-", _lag(row.lag_seconds),
                      fingerprint, row.updated_at or "-")
    stdout_console().print(table)


@app.command()
def show(
    ctx: typer.Context,
    table: list[str] = typer.Option([], "--table", help="Only these tables (repeatable)."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Show the stored cursor of each table, its lag and whether its fingerprint matches."""
    from sncli.offsets.admin import offset_rows, require_tables, utcnow
    from sncli.offsets.store import open_store

    state = state_of(ctx, config)
    settings = state.settings()
    guard(lambda: require_tables(settings, table))
    stored = guard(lambda: open_store(settings).load_all())
    rows = offset_rows(settings, stored, table or None, utcnow())
    if state.json_output:
        print_json([row.to_json() for row in rows])
    else:
        _render_rows(rows)


@app.command("set")
def set_(
    ctx: typer.Context,
    table: str = typer.Option(..., "--table"),
    timestamp: str = typer.Option(..., "--timestamp", help="'YYYY-MM-DD HH:MM:SS' UTC (or RFC 3339)."),
    sys_id: str = typer.Option("", "--sys-id", help="Last sys_id at that timestamp (default: none)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Move a table's cursor (holds the table's run lock; exit 75 if a run holds it)."""
    from sncli.offsets.admin import parse_position, require_tables, set_offset
    from sncli.offsets.model import poll_key
    from sncli.offsets.store import open_store

    state = state_of(ctx, config)
    settings = state.settings()
    guard(lambda: require_tables(settings, [table]))
    new_ts, new_sys_id = guard(lambda: parse_position(timestamp, sys_id))
    store = open_store(settings)
    before = guard(lambda: store.load(poll_key(table)))
    _confirm(f"Move the cursor of {table} from {_position(before)} to {new_ts} / {new_sys_id or '(no sys_id)'}?",
             yes)
    after = guard(lambda: set_offset(settings, store, table, new_ts, new_sys_id, expect=before))
    if state.json_output:
        print_json({"table": table, "before": before.__dict__ if before else None, "after": after.__dict__})
    else:
        typer.echo(f"{table}: cursor set to {_position(after)} (was {_position(before)})")


@app.command()
def reset(
    ctx: typer.Context,
    table: str = typer.Option(..., "--table"),
    backfill: bool = typer.Option(False, "--backfill", help="Also forget the table's backfill windows."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Forget a table's cursor; the next poll starts at the table's `start`."""
    from sncli.offsets.admin import keys_to_reset, require_tables, reset_offsets
    from sncli.offsets.store import open_store

    state = state_of(ctx, config)
    settings = state.settings()
    guard(lambda: require_tables(settings, [table]))
    store = open_store(settings)
    stored = guard(store.load_all)
    keys = keys_to_reset(stored, table, backfill=backfill)
    if keys:
        _confirm(f"Forget {', '.join(keys)} (the next run of {table} starts at its `start`)?", yes)
        deleted = guard(lambda: reset_offsets(settings, store, table, backfill=backfill,
                                              expect={k: stored[k] for k in keys}))
    else:
        deleted = []
    if state.json_output:
        print_json({"table": table, "deleted": deleted})
    elif deleted:
        typer.echo(f"{table}: forgot {', '.join(deleted)}")
    else:
        typer.echo(f"{table}: nothing stored, nothing to reset")


@app.command("import")
def import_(
    ctx: typer.Context,
    from_bridge: Path = typer.Option(..., "--from-bridge", help="The Go bridge's offsets.json."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Import the Go bridge's offsets so a switch re-reads nothing."""
    from sncli.offsets.admin import check_import_tables, import_offsets, read_bridge_file
    from sncli.offsets.model import poll_key
    from sncli.offsets.store import open_store

    state = state_of(ctx, config)
    settings = state.settings()
    entries = guard(lambda: read_bridge_file(from_bridge))
    guard(lambda: check_import_tables(settings, entries, from_bridge))
    store = open_store(settings)
    before = guard(lambda: {table: store.load(poll_key(table)) for table, _, _ in entries})
    plan = "; ".join(f"{t}: {_position(before[t])} -> {ts} / {s or '(no sys_id)'}" for t, ts, s in entries)
    _confirm(f"Import {len(entries)} offset(s) from {from_bridge}: {plan}?", yes)
    written = guard(lambda: import_offsets(settings, store, entries, expect=before))
    if state.json_output:
        print_json([o.__dict__ for o in written])
    else:
        for offset in written:
            typer.echo(f"{offset.table}: cursor set to {_position(offset)}")
