"""Consoles: results on stdout, everything else (logs, progress) on stderr.

Both streams are masked as a whole once the CLI starts
(:func:`sncli.logs.mask_standard_streams`); the writers here mask their data
before it is serialised as well, so a secret that JSON would escape or a
renderer would wrap cannot slip through.
"""

from __future__ import annotations

import sys
from functools import cache
from typing import TYPE_CHECKING, Any

import orjson

from sncli.logs import redact, redact_data

if TYPE_CHECKING:
    from rich.console import Console


# The consoles import rich lazily: rich.console is the slowest import after typer, and a command
# that only prints JSON or one line (and ``--help``) never needs it.


@cache
def stdout_console() -> Console:
    from rich.console import Console

    return Console(file=sys.stdout, soft_wrap=True)


@cache
def stderr_console() -> Console:
    from rich.console import Console

    return Console(file=sys.stderr, soft_wrap=True)


def print_json(data: Any) -> None:
    """One JSON document on stdout, for scripts (``--json``)."""
    text = orjson.dumps(data, default=str, option=orjson.OPT_INDENT_2).decode()  # default=str: dates, paths
    sys.stdout.write(orjson.dumps(redact_data(orjson.loads(text)), option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def error_line(message: str) -> None:
    """The single line an operator reads when a run fails before or outside logging."""
    sys.stderr.write(f"sncli: error: {redact(message)}\n")
    sys.stderr.flush()
