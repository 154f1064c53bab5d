"""``sncli doctor``: preflight checks."""

from __future__ import annotations

from pathlib import Path

import typer

from sncli.cli.common import CONFIG_OPTION, exit_with, state_of
from sncli.cli.render import print_json, stdout_console
from sncli.logs import redact

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def doctor(ctx: typer.Context, config: Path | None = CONFIG_OPTION) -> None:
    """Check config, ServiceNow, auth, tables, time zone, clock skew, Kafka, registry, Pushgateway, offsets.

    Exit 0 when every check is ok, 3 when some warn, 1 when any fails (2: the config itself is invalid).
    """
    # Lazy: sncli.doctor imports every client (config, ServiceNow, Kafka, S3), several times the whole
    # start-up of a command; rich's table only renders on a terminal.
    from rich.table import Table

    from sncli.doctor import exit_code_for, run_doctor

    state = state_of(ctx, config)
    checks = run_doctor(state.settings())
    code = exit_code_for(checks)
    if state.json_output:
        print_json({"checks": [c.to_json() for c in checks], "exit_code": int(code)})
    else:
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for column in ("check", "status", "detail", "hint"):
            table.add_column(column, overflow="fold")
        for c in checks:
            # Masked per cell: the table folds long cells over lines, where the stream's mask would miss them.
            table.add_row(redact(c.name), f"[{_STYLE[c.status]}]{c.status}[/]", redact(c.detail), redact(c.hint))
        stdout_console().print(table)
    exit_with(code)
