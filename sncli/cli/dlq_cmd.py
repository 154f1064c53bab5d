"""``sncli dlq inspect|replay|export``."""

from __future__ import annotations

import typer

from sncli.cli.common import not_built

app = typer.Typer(help="Inspect, replay and export the dead letter queue.", no_args_is_help=True)

_TABLE = typer.Option(None, "--table", help="Only records for this table.")
_CLASS = typer.Option(None, "--error-class", help="Only this error class (record, permission, ...).")
_SINCE = typer.Option(None, "--since", help="Only records dead-lettered at or after this time.")


@app.command()
def inspect(
    ctx: typer.Context,
    table: str | None = _TABLE,
    error_class: str | None = _CLASS,
    since: str | None = _SINCE,
    limit: int = typer.Option(100, "--limit", min=1),
) -> None:
    """List DLQ records with their error context; commits nothing."""
    not_built("dlq inspect")


@app.command()
def replay(
    ctx: typer.Context,
    table: str | None = _TABLE,
    error_class: str | None = _CLASS,
    since: str | None = _SINCE,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan, write nothing."),
) -> None:
    """Re-attempt DLQ records into ServiceNow; failures go back to the DLQ."""
    not_built("dlq replay")


@app.command()
def export(
    ctx: typer.Context,
    output: str = typer.Option(..., "--output", "-o", help="File to write."),
    fmt: str = typer.Option("parquet", "--format", help="parquet or jsonl"),
    table: str | None = _TABLE,
    error_class: str | None = _CLASS,
    since: str | None = _SINCE,
) -> None:
    """Export DLQ records with their error headers as columns."""
    not_built("dlq export")
