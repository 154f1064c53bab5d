"""The sink's write policies: one resolved write -> ServiceNow calls, under the topic's 404 / ambiguous-POST rules.

:func:`apply_write` is the single place that talks to ServiceNow for the sink
(the drain and ``dlq replay`` both use it, from the workers of
:mod:`sncli.sink.pool`). It returns what happened, raises
:class:`WriteFailed` when the record must go to the DLQ, and lets
:class:`SystemicError` (bad credentials, TLS failure) end the run: those are
not the record's fault, and dead-lettering every record for them would empty
the topic into the DLQ.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Literal

from sncli.config import SinkTopic
from sncli.dlq.record import DeadLetterReason, ErrorClass
from sncli.servicenow.client import ServiceNowClient
from sncli.servicenow.errors import (
    AmbiguousWriteError,
    AuthError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    MalformedResponseError,
    NotFoundError,
    RetriesExhaustedError,
    ServiceNowError,
    TransportError,
)
from sncli.servicenow.query import Query, QueryError
from sncli.sink.resolve import Write

#: Consecutive records that exhausted their retries before the run stops (at least ``workers``).
BREAKER_MIN = 5

#: How many POSTs one record may take when the answers keep being ambiguous
#: (``ambiguous: retry`` / ``lookup`` finding nothing).
AMBIGUOUS_ROUNDS = 3


@dataclass(frozen=True)
class Outcome:
    """What a write did: ``written`` (op = the call that wrote it) or ``skipped`` (with why)."""

    outcome: Literal["written", "skipped"]
    op: str  # post | patch | delete
    attempts: int
    reason: str | None = None


class WriteFailed(Exception):
    """The record failed for good; ``failure`` becomes its DLQ headers."""

    def __init__(self, failure: DeadLetterReason) -> None:
        super().__init__(failure.message)
        self.failure = failure


class SystemicError(Exception):
    """A failure of the run, not of the record (credentials, TLS): stop, commit nothing past it."""


def classify(exc: ServiceNowError) -> ErrorClass | None:
    """The DLQ class of a ServiceNow failure, or None when it is systemic."""
    if isinstance(exc, AuthError):
        return None
    if isinstance(exc, TransportError) and not isinstance(exc, MalformedResponseError):
        return None  # TLS / invalid URL: every record would fail the same way
    if isinstance(exc, ForbiddenError):
        return "permission"
    if isinstance(exc, NotFoundError):
        return "not_found"
    if isinstance(exc, ConflictError):
        return "conflict"
    if isinstance(exc, AmbiguousWriteError):
        return "ambiguous"
    if isinstance(exc, RetriesExhaustedError):
        return "retries_exhausted"
    if isinstance(exc, BadRequestError):
        return "record"
    return "record"  # 405, 413, 422, a 500 ServiceNow will not accept for a POST, ...


class Breaker:
    """Stop when ServiceNow keeps failing for every record: that is an outage, not bad records.

    Without it an outage would move the whole topic into the DLQ, one retry
    budget per record. It trips after ``max(BREAKER_MIN, workers)`` records in a
    row exhausted their retries; the records that tripped it are in the DLQ
    (replayable), the rest stay unread, and the commit stays below them.
    """

    def __init__(self, workers: int) -> None:
        self.threshold = max(BREAKER_MIN, workers)
        self._lock = threading.Lock()
        self._in_a_row = 0

    def record(self, exhausted: bool) -> bool:
        """One write's end (``exhausted``: it ran out of retries); True when the run must stop."""
        with self._lock:
            self._in_a_row = self._in_a_row + 1 if exhausted else 0
            return self._in_a_row >= self.threshold


class _Attempts:
    """Counts HTTP attempts across the calls one record takes (404 -> POST, lookups, ...).

    It also carries the write's ``cancel`` event to every one of those calls.
    """

    def __init__(self, cancel: threading.Event | None = None) -> None:
        self.cancel = cancel
        self.total = 0
        self._counted: set[int] = set()

    def ok(self) -> None:
        self.total += 1

    def derived(self, exc: AmbiguousWriteError) -> AmbiguousWriteError:
        """An error built from one already counted: it adds no attempts of its own."""
        self._counted.add(id(exc))
        return exc

    def failed(self, exc: ServiceNowError) -> None:
        if id(exc) not in self._counted:  # a handled error may be re-raised and seen again
            self._counted.add(id(exc))
            self.total += max(1, exc.attempts)


def apply_write(
    client: ServiceNowClient, write: Write, topic: SinkTopic, *, cancel: threading.Event | None = None
) -> Outcome:
    """Perform ``write`` under the topic's policies; raise WriteFailed (DLQ) or SystemicError (stop).

    ``cancel`` set: no further HTTP attempt is made for this write (one already sent
    runs to its answer) and :class:`~sncli.servicenow.errors.CallAbandoned` propagates:
    the record is neither written nor failed, and is read again by the next run.
    """
    tries = _Attempts(cancel)
    try:
        return _apply(client, write, topic, tries)
    except ServiceNowError as exc:
        tries.failed(exc)
        error_class = classify(exc)
        if error_class is None:
            raise SystemicError(str(exc)) from exc
        raise WriteFailed(
            DeadLetterReason(error_class, str(exc), status=exc.status, table=write.table, attempts=max(1, tries.total))
        ) from exc


def _apply(client: ServiceNowClient, write: Write, topic: SinkTopic, tries: _Attempts) -> Outcome:
    if write.op == "PATCH":
        assert write.sys_id is not None
        try:
            client.update(write.table, write.sys_id, dict(write.body), cancel=tries.cancel)
            tries.ok()
            return Outcome("written", "patch", tries.total)
        except NotFoundError as exc:
            tries.failed(exc)
            if topic.not_found == "fail":
                raise
            if topic.not_found == "ignore":
                return Outcome("skipped", "patch", tries.total, reason="not found (not_found: ignore)")
        # not_found: create -> insert it under the same sys_id
        return _post(client, write.table, {**write.body, "sys_id": write.sys_id}, write.sys_id, topic, tries)
    if write.op == "DELETE":
        assert write.sys_id is not None
        try:
            client.delete(write.table, write.sys_id, cancel=tries.cancel)
            tries.ok()
            return Outcome("written", "delete", tries.total)
        except NotFoundError as exc:
            tries.failed(exc)
            if topic.not_found == "fail":
                raise
            return Outcome("skipped", "delete", tries.total, reason="already absent")
    return _post(client, write.table, dict(write.body), None, topic, tries)


def _post(
    client: ServiceNowClient, table: str, body: dict[str, Any], sys_id: str | None, topic: SinkTopic, tries: _Attempts
) -> Outcome:
    """Insert, resolving an ambiguous answer per ``topic.ambiguous`` without creating duplicates blindly."""
    last: AmbiguousWriteError | None = None
    for _round in range(AMBIGUOUS_ROUNDS):
        try:
            client.insert(table, body, cancel=tries.cancel)
            tries.ok()
            return Outcome("written", "post", tries.total)
        except MalformedResponseError as exc:
            if exc.status is not None and 200 <= exc.status < 300:
                # ServiceNow said it created the record; only the echo was unreadable.
                tries.failed(exc)
                return Outcome("written", "post", tries.total)
            raise
        except AmbiguousWriteError as exc:
            tries.failed(exc)
            last = exc
            if topic.ambiguous == "fail":
                raise
            if topic.ambiguous == "retry":
                continue
            existing = _lookup(client, table, body, sys_id, topic, tries, exc)
            if existing is None:
                continue  # it did not land: POST again
            patch = {k: v for k, v in body.items() if k != "sys_id"}
            if patch:
                client.update(table, existing, patch, cancel=tries.cancel)
                tries.ok()
            return Outcome("written", "post", tries.total, reason="ambiguous POST found by lookup")
    assert last is not None
    raise tries.derived(AmbiguousWriteError(
        last.status, f"still ambiguous after {AMBIGUOUS_ROUNDS} POSTs: {last.message}",
        method="POST", endpoint=last.endpoint, attempts=last.attempts,
    ))


def _lookup(
    client: ServiceNowClient,
    table: str,
    body: dict[str, Any],
    sys_id: str | None,
    topic: SinkTopic,
    tries: _Attempts,
    cause: AmbiguousWriteError,
) -> str | None:
    """The sys_id of the record an ambiguous POST created, None if it did not; 2+ matches fail."""
    if sys_id is not None:
        found = client.get(table, sys_id, fields=["sys_id"], cancel=tries.cancel)
        tries.ok()
        return sys_id if found is not None else None
    field = topic.correlation_field
    assert field is not None  # config validation: lookup needs correlation_field
    value = body.get(field)
    if value in (None, ""):
        raise tries.derived(AmbiguousWriteError(
            cause.status, f"{cause.message}; cannot look it up: the record has no {field} value",
            method="POST", endpoint=cause.endpoint, attempts=cause.attempts,
        ))
    try:
        query = Query().eq(field, value).build()
    except QueryError as exc:
        raise tries.derived(AmbiguousWriteError(
            cause.status, f"{cause.message}; cannot look it up by {field}: {exc}",
            method="POST", endpoint=cause.endpoint, attempts=cause.attempts,
        )) from None
    page = client.list_page(table, query=query, fields=["sys_id"], limit=2, cancel=tries.cancel)
    tries.ok()
    if not page.records:
        return None
    if len(page.records) > 1:
        raise tries.derived(AmbiguousWriteError(
            cause.status, f"{cause.message}; {field} matches more than one record, cannot tell which was written",
            method="POST", endpoint=cause.endpoint, attempts=cause.attempts,
        ))
    found_id = page.records[0].get("sys_id")
    if not isinstance(found_id, str) or not found_id:
        raise tries.derived(AmbiguousWriteError(cause.status, f"{cause.message}; the lookup answer has no sys_id",
                                                method="POST", endpoint=cause.endpoint, attempts=cause.attempts))
    return found_id
