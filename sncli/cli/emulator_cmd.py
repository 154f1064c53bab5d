"""``sncli emulator``: the bundled ServiceNow Table API emulator."""

from __future__ import annotations

import typer

from sncli.cli.common import not_built


def emulator(
    port: int = typer.Option(18080, "--port", help="Port on 127.0.0.1."),
    host: str = typer.Option("127.0.0.1", "--host"),
) -> None:
    """Run the ServiceNow emulator (Table API, OAuth, faults, journal) until interrupted."""
    not_built("emulator")
