"""ServiceNow error bodies -> typed exceptions with status, message and a bounded detail."""

from __future__ import annotations

import orjson
import pytest

from sncli.errors import ExitCode, SncliError
from sncli.servicenow.errors import (
    MAX_DETAIL_CHARS,
    AmbiguousWriteError,
    AuthError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PermissionError_,
    ServerError,
    ServiceNowError,
    error_from_response,
    parse_error_body,
)


def _body(message: str | None, detail: str | None) -> bytes:
    return orjson.dumps({"error": {"message": message, "detail": detail}, "status": "failure"})


@pytest.mark.parametrize(
    ("status", "cls"),
    [(400, BadRequestError), (401, AuthError), (403, ForbiddenError), (404, NotFoundError), (409, ConflictError),
     (500, ServerError), (503, ServerError), (418, ServiceNowError)],
)
def test_status_maps_to_its_class(status: int, cls: type[ServiceNowError]) -> None:
    err = error_from_response(status, _body("m", "d"))
    assert type(err) is cls
    assert err.status == status
    assert isinstance(err, SncliError) and err.exit_code == ExitCode.FAILED


def test_servicenow_error_body_is_parsed() -> None:
    err = error_from_response(
        403, _body("User Not Authorized", "ACL restricts the record retrieval"), method="GET", endpoint="table/incident"
    )
    assert err.message == "User Not Authorized"
    assert err.detail == "ACL restricts the record retrieval"
    assert str(err) == "GET table/incident: HTTP 403: User Not Authorized (ACL restricts the record retrieval)"
    assert PermissionError_ is ForbiddenError


def test_long_or_multiline_detail_is_truncated_to_one_line() -> None:
    err = error_from_response(400, _body("Invalid", "line\n" * 1000))
    assert err.detail is not None
    assert len(err.detail) == MAX_DETAIL_CHARS
    assert "\n" not in err.detail and err.detail.endswith("…")


def test_oauth_error_body_is_parsed() -> None:
    body = orjson.dumps({"error": "invalid_grant", "error_description": "access_denied"})
    assert parse_error_body(body) == ("invalid_grant", "access_denied")


@pytest.mark.parametrize(
    "body", [b"", b"not json", b"[1,2]", b'{"error": null}', b'{"error": {"message": ""}}', b"\xff\xfe"]
)
def test_unparsable_error_bodies_fall_back_to_a_generic_message(body: bytes) -> None:
    assert parse_error_body(body) in ((None, None),)
    err = error_from_response(502, body)
    assert err.message == "bad gateway"
    assert err.status == 502


def test_html_error_page_gives_a_short_snippet_as_detail() -> None:
    err = error_from_response(503, b"<html><body>" + b"x" * 5000 + b"</body></html>", reason="Service Unavailable")
    assert err.message == "Service Unavailable"
    assert err.detail is not None and err.detail.startswith("<html>") and len(err.detail) <= 200


def test_attempts_are_reported() -> None:
    err = AmbiguousWriteError(None, "no answer", method="POST", endpoint="table/incident", attempts=1)
    assert str(err) == "POST table/incident: no answer"
    assert err.status is None
    assert "after 3 attempts" in str(ServerError(500, "boom", attempts=3))
