"""``sncli doctor``: preflight checks."""

from __future__ import annotations

import typer

from sncli.cli.common import not_built


def doctor(ctx: typer.Context) -> None:
    """Check config, ServiceNow, auth, tables, time zone, clock skew, Kafka, registry, Pushgateway."""
    not_built("doctor")
