"""``sncli sink drain``: one bounded Kafka -> ServiceNow drain."""

from __future__ import annotations

import typer

from sncli.cli.common import not_built

app = typer.Typer(help="Kafka -> ServiceNow.", no_args_is_help=True)


@app.command()
def drain(
    ctx: typer.Context,
    topic: list[str] = typer.Option([], "--topic", help="Topic to drain (repeatable; default: all)."),
    max_messages: int | None = typer.Option(None, "--max-messages", min=1, help="Stop after this many."),
    max_seconds: float | None = typer.Option(None, "--max-seconds", min=0.1, help="Stop after this long."),
    workers: int | None = typer.Option(None, "--workers", "-w", min=1, help="Parallel writers."),
    every: float | None = typer.Option(None, "--every", min=0.1, help="Repeat a drain every S seconds."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Resolve and print operations, write nothing."),
) -> None:
    """Consume up to the end offsets seen at start, write to ServiceNow, dead-letter failures, commit."""
    not_built("sink drain")
