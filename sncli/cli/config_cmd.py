"""``sncli config validate|show``."""

from __future__ import annotations

from pathlib import Path

import typer

from sncli.cli.common import CONFIG_OPTION, state_of
from sncli.cli.render import print_json
from sncli.logs import redact_data

app = typer.Typer(help="Validate or show the configuration (secrets redacted).", no_args_is_help=True)


@app.command()
def validate(ctx: typer.Context, config: Path | None = CONFIG_OPTION) -> None:
    """Validate the config file; exit 2 with the key path of the first problem."""
    state = state_of(ctx, config)
    settings = state.settings()
    if state.json_output:
        print_json({"valid": True, "tables": settings.source.table_names(),
                    "sink_topics": [t.topic for t in settings.sink.topics]})
    else:
        typer.echo(f"config ok: {len(settings.source.tables)} source table(s), "
                   f"{len(settings.sink.topics)} sink topic(s)")


@app.command()
def show(ctx: typer.Context, config: Path | None = CONFIG_OPTION) -> None:
    """Print the effective config (defaults filled in) with every secret shown as ***."""
    # Lazy: PyYAML would add a tenth to every command's start-up; the config loader has imported it by
    # the time this runs.
    import yaml

    state = state_of(ctx, config)
    data = state.settings().redacted()
    if state.json_output:
        print_json(data)
    else:
        # Masked before dumping: YAML may fold a long value over lines, where no mask would find it.
        typer.echo(yaml.safe_dump(redact_data(data), sort_keys=False).rstrip())
