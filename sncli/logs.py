"""Logging set-up: rich on a terminal, one JSON object per line elsewhere.

Logs go to stderr; stdout carries only results. Every configured secret is
registered with :class:`RedactingFilter`, which masks it in the final text of
each record, so a secret that sneaks into an exception message is masked too.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

import orjson

_context: dict[str, Any] = {}
_secrets: set[str] = set()
_lock = threading.Lock()
REDACTED = "***"


def set_context(**fields: Any) -> None:
    """Fields stamped on every log record (run id, command, ...)."""
    _context.update({k: v for k, v in fields.items() if v is not None})


def register_secrets(values: Iterable[str]) -> None:
    with _lock:
        _secrets.update(v for v in values if v and len(v) >= 3)


def redact(text: str) -> str:
    if not _secrets:
        return text
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record; every value that could carry data is masked, the code's own names are not.

    The time, the level and the logger name come from sncli itself and never
    hold a secret; masking the whole line turned ``sncli.kafka.admin`` into
    ``sncli.kafka.***`` for a deployment whose password is ``admin``.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for name, value in _context.items():
            entry[name] = _masked(value)
        table = getattr(record, "table", None)
        if table is not None:
            entry["table"] = _masked(table)
        if record.exc_text:
            entry["exc"] = redact(record.exc_text)
        return orjson.dumps(entry, default=str).decode()


def _masked(value: Any) -> Any:
    return value if isinstance(value, (bool, int, float)) or value is None else redact(str(value))


def configure(log_format: str | None = None, level: int = logging.INFO) -> None:
    """Install one stderr handler; ``log_format`` None picks text on a TTY, JSON elsewhere."""
    fmt = log_format or ("text" if sys.stderr.isatty() else "json")
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if fmt == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        from rich.logging import RichHandler

        from sncli.cli.render import stderr_console

        handler = RichHandler(console=stderr_console(), show_path=False, rich_tracebacks=False)
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "botocore", "boto3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
