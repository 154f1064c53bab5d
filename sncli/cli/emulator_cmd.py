"""``sncli emulator``: the bundled ServiceNow Table API emulator, in the foreground.

Prints one ready line on stdout once it accepts connections (scripts wait for
it), logs to stderr, and stops cleanly on SIGTERM or SIGINT. It is driven from
other processes through its control API under ``/__emulator/``.

That control API has no authentication (it can add records, faults and users)
and the default credentials are ``admin/admin``: the emulator is a test tool
for this machine. It listens on loopback only, unless ``--allow-remote`` says
the operator means to expose it, and then it says so on stderr.
"""

from __future__ import annotations

import logging
import sys
import threading

import typer

from sncli.cli.common import exit_with
from sncli.cli.render import error_line
from sncli.errors import ExitCode
from sncli.signals import stop_on_signals
from sncli.transport_security import is_loopback

log = logging.getLogger("sncli.emulator")


def _parse_seed(spec: str) -> tuple[str, int]:
    table, sep, count = spec.partition("=")
    if not sep or not table or not count.isdigit():
        raise typer.BadParameter(f"expected TABLE=COUNT, got {spec!r}", param_hint="--seed")
    return table, int(count)


def emulator(
    port: int = typer.Option(18080, "--port", envvar="SNCLI_SNOW_PORT", help="Port to listen on (0 = any free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback only, see --allow-remote)."),
    allow_remote: bool = typer.Option(
        False, "--allow-remote",
        help="Allow a non-loopback --host. The control API is unauthenticated: anyone who reaches it "
             "controls the emulator.",
    ),
    user: str = typer.Option("admin", "--user", envvar="SNCLI_EMULATOR_USER", help="Basic/OAuth user name."),
    password: str = typer.Option(
        "admin", "--password", envvar="SNCLI_EMULATOR_PASSWORD", help="Password of that user.", show_default=False
    ),
    client_id: str = typer.Option("sncli", "--client-id", envvar="SNCLI_EMULATOR_CLIENT_ID", help="OAuth client id."),
    client_secret: str = typer.Option(
        "sncli-secret",
        "--client-secret",
        envvar="SNCLI_EMULATOR_CLIENT_SECRET",
        help="OAuth client secret.",
        show_default=False,
    ),
    token_ttl: int = typer.Option(
        1800, "--token-ttl", min=1, help="OAuth access token lifetime (expires_in), seconds."
    ),
    time_zone: str = typer.Option("UTC", "--time-zone", help="time_zone of the integration user in sys_user."),
    seed: list[str] = typer.Option(
        [], "--seed", help="Generate records at start: TABLE=COUNT (repeatable), e.g. --seed incident=1000."
    ),
    seed_spread: int = typer.Option(
        3600, "--seed-spread", min=0, help="Spread seeded records' sys_updated_on over this many seconds."
    ),
    record_bytes: int = typer.Option(1024, "--record-bytes", min=0, help="Approximate JSON size of a seeded record."),
    round_trip_ms: int = typer.Option(0, "--round-trip-ms", min=0, help="Network round trip paid per HTTP exchange."),
    write_time_ms: int = typer.Option(0, "--write-time-ms", min=0, help="Server time per write (batch items too)."),
    max_concurrent: int = typer.Option(
        0, "--max-concurrent", min=0, help="API transactions at once; past it 429 with Retry-After (0 = no limit)."
    ),
    batch_budget_ms: int = typer.Option(
        0, "--batch-budget-ms", min=0, help="Batch API time budget; items past it come back unserviced (0 = none)."
    ),
) -> None:
    """Run the ServiceNow emulator (Table API, OAuth, faults, journal, control API) until SIGTERM/SIGINT."""
    # Lazy: the emulator's HTTP server and state cost about as much as the rest of start-up, and no
    # other command needs them.
    from sncli.emulator.auth import Credentials
    from sncli.emulator.server import ServiceNowEmulator
    from sncli.emulator.state import EmulatorSettings, EmulatorState

    _check_bind(host, allow_remote, default_login=(user, password) == ("admin", "admin"))
    seeds = [_parse_seed(s) for s in seed]
    # The physics are part of the initial settings, so a control-API reset keeps them.
    physics = EmulatorSettings(token_ttl_seconds=token_ttl, user_time_zone=time_zone, round_trip_ms=round_trip_ms,
                               write_time_ms=write_time_ms, max_concurrent=max_concurrent,
                               batch_budget_ms=batch_budget_ms)
    emu = ServiceNowEmulator(
        host,
        port,
        state=EmulatorState(credentials=Credentials(user, password, client_id, client_secret), settings=physics),
    )
    for table, count in seeds:
        emu.state.generate(table, count, spread_seconds=seed_spread, record_bytes=record_bytes)
        log.info("seeded %d records into %s", count, table)
    stop = threading.Event()
    with stop_on_signals(stop.set, then="stopping the emulator"):
        try:
            emu.start()
        except OSError as exc:
            error_line(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
            exit_with(ExitCode.USAGE)
        typer.echo(f"ServiceNow emulator ready on {emu.url} (control API: {emu.url}/__emulator/)")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
        emu.stop()
    log.info("emulator stopped")


def _check_bind(host: str, allow_remote: bool, *, default_login: bool) -> None:
    """Refuse a non-loopback address unless --allow-remote; warn when it is allowed."""
    if not is_loopback(host):
        if not allow_remote:
            error_line(f"refusing to listen on {host}: the emulator's control API has no authentication and "
                       f"its default login is admin/admin; use a loopback address, or --allow-remote to expose "
                       f"it anyway")
            exit_with(ExitCode.USAGE)
        login = " with the default login admin/admin" if default_login else ""
        log.warning("listening on %s%s: anyone who can reach it can use the unauthenticated control API "
                    "under /__emulator/ (add records, faults, users); this is a test tool", host, login)
