"""Consoles: results on stdout, everything else (logs, progress) on stderr."""

from __future__ import annotations

import sys
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


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
    import orjson

    sys.stdout.write(orjson.dumps(data, default=str, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def error_line(message: str) -> None:
    """The single line an operator reads when a run fails before or outside logging."""
    sys.stderr.write(f"sncli: error: {message}\n")
    sys.stderr.flush()
