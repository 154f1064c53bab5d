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


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("GET http://svc:pw-9f@proxy:3128/x failed", "GET http://svc:***@proxy:3128/x failed"),
        ("url='https://u:p@ss@registry.example/subjects'", "url='https://u:***@registry.example/subjects'"),
        ('{"url":"http://:tok3n@gw:9091","b":"ftp://x:y@h"}', '{"url":"http://:***@gw:9091","b":"ftp://x:***@h"}'),
        ("http://user@host/no-password and a@b:c", "http://user@host/no-password and a@b:c"),
    ],
)
def test_a_password_inside_any_url_is_masked_registered_or_not(text: str, shown: str) -> None:
    assert logs.redact(text) == shown


def test_a_secret_escaped_by_json_or_repr_is_masked_too() -> None:
    secret = 'pa"ss\\wo\nrd-31'
    logs.register_secrets([secret])
    for text in (orjson.dumps({"error": f"login {secret} refused"}).decode(), repr(f"login {secret} refused")):
        assert "wo" not in logs.redact(text), text


def test_values_too_short_to_mask_are_left_alone() -> None:
    # Masking "yes" or "1" everywhere would garble every line; the config refuses such ${...} values instead.
    logs.register_secrets(["yes", "1", "four"])
    assert logs.redact("yes, 1 or four") == "yes, 1 or ***"
    assert logs.MIN_MASKED_LENGTH == 4


def test_the_redacting_writer_masks_every_write_and_keeps_the_stream_interface() -> None:
    import io

    logs.register_secrets(["canary-writer-77"])
    target = io.StringIO()
    writer = logs.RedactingWriter(target)
    writer.write("a canary-writer-77 in a line\n")
    print("print canary-writer-77", file=writer)
    writer.writelines(["and canary-writer-77\n"])
    assert target.getvalue() == "a *** in a line\nprint ***\nand ***\n"
    with pytest.raises(TypeError):
        writer.write(b"bytes bypass nothing")  # type: ignore[arg-type]
    assert not writer.isatty() and not hasattr(writer, "buffer")


def test_masked_standard_streams_cover_echo_print_and_tracebacks() -> None:
    """Anything the process writes to stdout or stderr, a traceback Python prints included, is masked."""
    import subprocess
    import sys

    code = (
        "import sys, typer\n"
        "from sncli import logs\n"
        "logs.mask_standard_streams()\n"
        "logs.register_secrets(['canary-stream-31'])\n"
        "typer.echo('echo canary-stream-31')\n"
        "print('print canary-stream-31')\n"
        "raise RuntimeError('boom http://u:canary-url-pw@h canary-stream-31')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout == "echo ***\nprint ***\n"
    assert "RuntimeError: boom http://u:***@h ***" in proc.stderr
    assert "canary" not in proc.stdout + proc.stderr


def test_json_log_lines_keep_the_logger_name_behind_the_masked_streams() -> None:
    import subprocess
    import sys

    code = (
        "import logging\n"
        "from sncli import logs\n"
        "logs.mask_standard_streams()\n"
        "logs.configure('json')\n"
        "logs.register_secrets(['admin'])\n"
        "logging.getLogger('sncli.kafka.admin').warning('login as admin failed')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    entry = orjson.loads(proc.stderr)
    assert (entry["logger"], entry["msg"]) == ("sncli.kafka.admin", "login as *** failed")
