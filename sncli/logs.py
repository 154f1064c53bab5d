"""Logging set-up (rich on a terminal, one JSON object per line elsewhere) and the one place secrets are masked.

Logs go to stderr; stdout carries only results. Every configured secret is
registered here (:func:`register_secrets`), and :func:`redact` masks the
registered secrets and the password of any ``scheme://user:password@`` URL in
a text. Every output channel passes through it: :class:`RedactingFilter` masks
each log record's final text (exception messages and tracebacks included), and
:func:`mask_standard_streams` puts :class:`RedactingWriter` in front of the
process's stdout and stderr, so results, ``--json`` summaries, error lines,
doctor tables and any traceback Python prints are masked too.
"""

from __future__ import annotations

import io
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TextIO

import orjson

if TYPE_CHECKING:
    from rich.console import Console

_context: dict[str, str] = {}
_secrets: set[str] = set()
_lock = threading.Lock()
REDACTED = "***"
#: Shorter values are never masked: hiding every "1" or "yes" would garble all output. The config
#: refuses a ``${...}`` reference that expands to fewer characters (sncli.config).
MIN_MASKED_LENGTH = 4
#: The password of a URL's userinfo, wherever the URL appears and whether or not it was registered.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:\"'<>]*:)[^\s/?#\"'<>]+(?=@)")


def set_context(**fields: str | None) -> None:
    """Fields stamped on every log record (run id, command, ...); None leaves a field as it is."""
    _context.update({k: v for k, v in fields.items() if v is not None})


def register_secrets(values: Iterable[str]) -> None:
    """Mask these values from now on, in every output; values under MIN_MASKED_LENGTH are left alone."""
    forms = {form for value in values if len(value) >= MIN_MASKED_LENGTH for form in _written_forms(value)}
    with _lock:
        _secrets.update(forms)


def _written_forms(secret: str) -> set[str]:
    """A secret as output may carry it: as is, escaped in a JSON string, and inside a Python repr."""
    return {secret, orjson.dumps(secret).decode()[1:-1], repr(secret)[1:-1]}


def mask_url_passwords(text: str) -> str:
    """``http://user:pw@host`` -> ``http://user:***@host`` for every URL in ``text`` (pure)."""
    return _URL_PASSWORD.sub(rf"\g<head>{REDACTED}", text) if "://" in text else text


def redact(text: str) -> str:
    """``text`` with every registered secret and every password inside a URL replaced by ``***``."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return mask_url_passwords(text)


def redact_data(node: Any) -> Any:
    """``node`` (JSON-like data) with :func:`redact` applied to every string, keys included.

    For structured output: masking each value before it is serialised also
    catches a secret that serialisation would escape or a renderer would wrap.
    """
    if isinstance(node, str):
        return redact(node)
    if isinstance(node, dict):
        return {redact_data(k): redact_data(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [redact_data(v) for v in node]
    return node


class RedactingWriter(io.TextIOBase):
    """A text stream that masks secrets in every write, then passes the text on to ``target``.

    Each write is masked whole, so a secret split over two writes would pass; every
    writer of the CLI (click, rich, logging, print, Python's traceback printer) writes
    whole values at a time. It has no ``buffer``: whoever looks for the binary stream
    under it (click does, for odd encodings) falls back to writing text through it.
    """

    def __init__(self, target: TextIO) -> None:
        super().__init__()
        self.target = target

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self.target.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.target.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self.target.errors


def mask_standard_streams() -> None:
    """Put :class:`RedactingWriter` in front of ``sys.stdout`` and ``sys.stderr`` (once per process)."""
    if not isinstance(sys.stdout, RedactingWriter):
        sys.stdout = RedactingWriter(sys.stdout)
    if not isinstance(sys.stderr, RedactingWriter):
        sys.stderr = RedactingWriter(sys.stderr)


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


def _masked(value: object) -> object:
    return value if isinstance(value, (bool, int, float)) or value is None else redact(str(value))


def configure(
    log_format: str | None = None,
    level: int = logging.INFO,
    *,
    text_console: Callable[[], Console] | None = None,
) -> None:
    """Install one stderr handler; ``log_format`` None picks text on a TTY, JSON elsewhere.

    ``text_console`` gives the text format the stderr console the rest of the
    output shares (a progress bar on the same console keeps log lines above it);
    without it the text format gets a console of its own on stderr.
    """
    fmt = log_format or ("text" if sys.stderr.isatty() else "json")
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if fmt == "json":
        # Past the whole-stream mask: JsonFormatter masks every field that can carry data and leaves
        # the code's own names alone, where the stream's mask would turn sncli.kafka.admin into
        # sncli.kafka.*** for a deployment whose password is "admin".
        stream = sys.stderr.target if isinstance(sys.stderr, RedactingWriter) else sys.stderr
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter())
    else:
        # Lazy: rich's console and logging modules are the slowest part of start-up after typer,
        # and the JSON format (every run that is not on a terminal) does not need them.
        from rich.console import Console
        from rich.logging import RichHandler

        console = text_console() if text_console is not None else Console(file=sys.stderr, soft_wrap=True)
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "botocore", "boto3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
