"""Typed ServiceNow failures, so callers decide by class, not by parsing text.

The sink dead-letters a record with ``sncli.error.class`` = the exception's
class name and ``sncli.error.status`` = its HTTP status, so each class below
means one thing an operator can act on. Messages never carry credentials or
tokens: they are built from the method, a low-cardinality endpoint label, the
status and ServiceNow's own error text.
"""

from __future__ import annotations

import orjson

from sncli.errors import SncliError

MAX_DETAIL_CHARS = 500
MAX_MESSAGE_CHARS = 300


class ServiceNowError(SncliError):
    """A request to ServiceNow failed; ``status`` is the HTTP status when there was an answer."""

    def __init__(
        self,
        status: int | None,
        message: str,
        detail: str | None = None,
        *,
        method: str | None = None,
        endpoint: str | None = None,
        attempts: int = 1,
    ) -> None:
        self.status = status
        self.message = _truncate(message, MAX_MESSAGE_CHARS)
        self.detail = None if detail is None else _truncate(detail, MAX_DETAIL_CHARS)
        self.method = method
        self.endpoint = endpoint
        self.attempts = attempts
        super().__init__(self._render())

    def _render(self) -> str:
        where = f"{self.method} {self.endpoint}: " if self.method and self.endpoint else ""
        status = f"HTTP {self.status}: " if self.status is not None else ""
        detail = f" ({self.detail})" if self.detail else ""
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{where}{status}{self.message}{detail}{tries}"


class BadRequestError(ServiceNowError):
    """400: ServiceNow rejected the request (bad field, bad query, invalid value)."""


class AuthError(ServiceNowError):
    """401 even after a fresh token, or the token endpoint refused the credentials."""


class ForbiddenError(ServiceNowError):
    """403: the integration user lacks an ACL for this table or record."""


PermissionError_ = ForbiddenError  # the name used in COMMON.md's interface list


class NotFoundError(ServiceNowError):
    """404: no such record (or table)."""


class ConflictError(ServiceNowError):
    """409: the write conflicts with the record's current state."""


class ServerError(ServiceNowError):
    """A 5xx that was not retried (a write that must not be repeated blindly)."""


class RetriesExhaustedError(ServiceNowError):
    """Retryable failures (5xx, 429, network) went on past max_attempts or max_elapsed_seconds."""


class AmbiguousWriteError(ServiceNowError):
    """A non-idempotent write may have reached ServiceNow and got no usable answer.

    The record may or may not exist now; repeating the POST could create a
    duplicate, so the client never does it on its own.
    """


class TransportError(ServiceNowError):
    """No usable HTTP answer: TLS failure, connection refused, malformed or truncated body."""


class MalformedResponseError(TransportError):
    """ServiceNow answered with a body that is not the JSON it promises."""


_BY_STATUS: dict[int, type[ServiceNowError]] = {
    400: BadRequestError,
    401: AuthError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
}


class CallAbandoned(SncliError):
    """The caller gave the call up (its ``cancel`` event was set): no attempt was made after that.

    Not a :class:`ServiceNowError`: ServiceNow did not fail, the caller stopped asking
    (a drain at its deadline, a partition revoked from it). An attempt already sent
    when the event was set ran to its answer first.
    """


def class_for_status(status: int) -> type[ServiceNowError]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return ServerError
    return ServiceNowError


def parse_error_body(content: bytes | None) -> tuple[str | None, str | None]:
    """(message, detail) from ``{"error": {"message", "detail"}, "status": "failure"}``; Nones if absent.

    Also understands the OAuth endpoint's ``{"error": "...", "error_description": "..."}``.
    Never raises: an error body is evidence, not a contract.
    """
    if not content:
        return None, None
    try:
        data: object = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    error = data.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        detail = error.get("detail")
        return (
            str(message) if message not in (None, "") else None,
            str(detail) if detail not in (None, "") else None,
        )
    if isinstance(error, str) and error:
        description = data.get("error_description")
        return error, (str(description) if description else None)
    return None, None


def error_from_response(
    status: int,
    content: bytes | None,
    *,
    method: str | None = None,
    endpoint: str | None = None,
    attempts: int = 1,
    reason: str | None = None,
) -> ServiceNowError:
    """The typed exception for an error answer, carrying ServiceNow's message and (truncated) detail."""
    message, detail = parse_error_body(content)
    if message is None:
        message = reason or _default_reason(status)
        if detail is None and content:
            snippet = content[:200].decode("utf-8", "replace").strip()
            detail = snippet or None
    cls = class_for_status(status)
    return cls(status, message, detail, method=method, endpoint=endpoint, attempts=attempts)


def _default_reason(status: int) -> str:
    return {
        400: "bad request",
        401: "unauthorized",
        403: "forbidden",
        404: "not found",
        409: "conflict",
        429: "too many requests",
        500: "internal server error",
        502: "bad gateway",
        503: "service unavailable",
        504: "gateway timeout",
    }.get(status, "request failed")


def _truncate(text: str, limit: int) -> str:
    text = " ".join(text.split())  # one line: these end up in log lines and DLQ headers
    return text if len(text) <= limit else text[: limit - 1] + "…"
