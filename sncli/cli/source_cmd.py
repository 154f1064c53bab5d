"""``sncli source poll``: one bounded ServiceNow -> Kafka cycle."""

from __future__ import annotations

import typer

from sncli.cli.common import not_built

app = typer.Typer(help="ServiceNow -> Kafka.", no_args_is_help=True)


@app.command()
def poll(
    ctx: typer.Context,
    table: list[str] = typer.Option([], "--table", "-t", help="Table to poll (repeatable; default: all)."),
    max_records: int | None = typer.Option(None, "--max-records", min=1, help="Stop after this many records."),
    max_seconds: float | None = typer.Option(None, "--max-seconds", min=0.1, help="Stop after this long."),
    every: float | None = typer.Option(None, "--every", min=0.1, help="Repeat a cycle every S seconds."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Fetch and count, produce and store nothing."),
) -> None:
    """One bounded cycle: each table in its own thread, until caught up or a bound is hit.

    The cursor is stored only after Kafka acknowledged every record of a page.
    """
    not_built("source poll")
