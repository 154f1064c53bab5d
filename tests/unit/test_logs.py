"""JSON log lines: secrets masked wherever data goes, the code's own names left alone."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest

from sncli import logs


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    saved_secrets, saved_context = set(logs._secrets), dict(logs._context)
    yield
    logs._secrets.clear()
    logs._secrets.update(saved_secrets)
    logs._context.clear()
    logs._context.update(saved_context)


def _line(logger: str, message: str, *args: object, **extra: object) -> dict[str, object]:
    record = logging.LogRecord(logger, logging.INFO, __file__, 1, message, args, None)
    for name, value in extra.items():
        setattr(record, name, value)
    assert logs.RedactingFilter().filter(record)
    parsed: dict[str, object] = orjson.loads(logs.JsonFormatter().format(record))
    return parsed


def test_a_weak_password_is_masked_in_the_message_but_not_in_the_logger_name() -> None:
    logs.register_secrets(["admin"])
    entry = _line("sncli.kafka.admin", "login as %s failed", "admin")
    assert entry["logger"] == "sncli.kafka.admin"
    assert entry["msg"] == "login as *** failed"


def test_context_table_and_traceback_are_masked() -> None:
    logs.register_secrets(["canary-s3cret"])
    logs.set_context(run_id="r1", command="source poll canary-s3cret", attempt=3)
    try:
        raise RuntimeError("token canary-s3cret refused")
    except RuntimeError:
        record = logging.LogRecord("sncli.x", logging.ERROR, __file__, 1, "boom", None, __import__("sys").exc_info())
    assert logs.RedactingFilter().filter(record)
    record.table = "canary-s3cret"
    text = logs.JsonFormatter().format(record)
    assert "canary-s3cret" not in text
    entry = orjson.loads(text)
    assert entry["command"] == "source poll ***" and entry["table"] == "***" and entry["attempt"] == 3
    assert "token *** refused" in entry["exc"]
