"""``sncli backfill``: a full or windowed load of one table."""

from __future__ import annotations

import typer

from sncli.cli.common import not_built


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
) -> None:
    """Load a time range of one table with keyset paging; resumable per window."""
    not_built("backfill")
