"""``sncli offsets show|set|reset|import``."""

from __future__ import annotations

from pathlib import Path

import typer

from sncli.cli.common import not_built

app = typer.Typer(help="Read and edit stored source progress.", no_args_is_help=True)


@app.command()
def show(ctx: typer.Context, table: list[str] = typer.Option([], "--table")) -> None:
    """Show the stored cursor of each table, its lag and whether its fingerprint matches."""
    not_built("offsets show")


@app.command("set")
def set_(
    ctx: typer.Context,
    table: str = typer.Option(..., "--table"),
    timestamp: str = typer.Option(..., "--timestamp", help="'YYYY-MM-DD HH:MM:SS' UTC"),
    sys_id: str = typer.Option("", "--sys-id", help="Last sys_id at that timestamp (default: none)."),
    yes: bool = typer.Option(False, "--yes", "-y"),
) -> None:
    """Move a table's cursor."""
    not_built("offsets set")


@app.command()
def reset(ctx: typer.Context, table: str = typer.Option(..., "--table"),
          yes: bool = typer.Option(False, "--yes", "-y")) -> None:
    """Forget a table's cursor; the next poll starts at the table's `start`."""
    not_built("offsets reset")


@app.command("import")
def import_(
    ctx: typer.Context,
    from_bridge: Path = typer.Option(..., "--from-bridge", help="The Go bridge's offsets.json."),
    yes: bool = typer.Option(False, "--yes", "-y"),
) -> None:
    """Import the Go bridge's offsets so a switch re-reads nothing."""
    not_built("offsets import")
