"""The root ``sncli`` command: global options and the command groups.

Every command module is imported here to build the command tree, so each one
imports what its command runs (sncli.config and its pydantic models, the
clients, confluent_kafka, pyarrow, boto3) inside the command: ``sncli --help``
and a command's ``--help`` load typer and little else.
"""

from __future__ import annotations

from pathlib import Path

import typer

from sncli import __version__, logs
from sncli.cli import (
    backfill_cmd,
    config_cmd,
    dlq_cmd,
    doctor_cmd,
    emulator_cmd,
    offsets_cmd,
    sink_cmd,
    source_cmd,
    status_cmd,
    verify_cmd,
)
from sncli.cli.common import AppState
from sncli.cli.render import stderr_console

EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 run failed (nothing committed past what succeeded); "
    "2 usage or config error; 3 partial (some tables or records failed, the rest committed); "
    "75 another run holds the lock (safe to retry)."
)

app = typer.Typer(
    name="sncli",
    help="Move data between ServiceNow and Kafka in bounded, lossless runs.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sncli {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None, "--config", "-c", envvar="SNCLI_CONFIG", help="Config file (default ./sncli.yaml)."
    ),
    log_format: str | None = typer.Option(
        None, "--log-format", help="text or json (default: text on a terminal, json otherwise)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Machine-readable result on stdout."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    if log_format not in (None, "text", "json"):
        raise typer.BadParameter("must be 'text' or 'json'", param_hint="--log-format")
    state = AppState(config_path=config, log_format=log_format, json_output=json_output)
    ctx.obj = state
    logs.mask_standard_streams()  # before anything holds on to the streams: logging, consoles
    logs.configure(log_format, text_console=stderr_console)
    logs.set_context(run_id=state.run_id, command=ctx.invoked_subcommand)


app.add_typer(source_cmd.app, name="source")
app.add_typer(sink_cmd.app, name="sink")
app.command("backfill")(backfill_cmd.backfill)
app.add_typer(dlq_cmd.app, name="dlq")
app.add_typer(offsets_cmd.app, name="offsets")
app.command("doctor")(doctor_cmd.doctor)
app.add_typer(config_cmd.app, name="config")
app.command("emulator")(emulator_cmd.emulator)
app.command("verify")(verify_cmd.verify)
app.command("status")(status_cmd.status)


def main() -> None:
    app()
