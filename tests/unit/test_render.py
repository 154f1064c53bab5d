"""The CLI's own writers (``--json`` results, error lines) mask secrets before the text leaves them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sncli import logs
from sncli.cli.render import error_line, print_json


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    saved = set(logs._secrets)
    yield
    logs._secrets.clear()
    logs._secrets.update(saved)


def test_a_json_summary_masks_secrets_even_where_json_escapes_them(capsys: pytest.CaptureFixture[str]) -> None:
    secret = 'canary-"json"-pw'
    logs.register_secrets([secret])
    print_json({"tables": {"incident": {"error": f"401 for {secret}", "at": datetime(2026, 1, 2, tzinfo=UTC)}},
                "proxy": "http://svc:url-pw-5@proxy:3128", secret: Path("/tmp/x")})
    out = capsys.readouterr().out
    assert "canary" not in out and "url-pw-5" not in out
    data = json.loads(out)  # still one valid document
    assert data["tables"]["incident"]["error"] == "401 for ***"
    assert data["tables"]["incident"]["at"].startswith("2026-01-02")
    assert data["proxy"] == "http://svc:***@proxy:3128" and data["***"] == "/tmp/x"


def test_an_error_line_masks_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    logs.register_secrets(["canary-error-line"])
    error_line("auth failed with canary-error-line at http://u:pw@instance")
    assert capsys.readouterr().err == "sncli: error: auth failed with *** at http://u:***@instance\n"
