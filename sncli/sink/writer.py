"""Applying resolved writes to ServiceNow: per-key lanes, and the 404 / ambiguous-POST policies.

Lanes: ``workers`` threads, each with its own bounded queue. A record goes to
lane ``crc32(lane key) % workers``, so records that share a key are applied one
after another in the order they were read, and records with different keys
run in parallel. A full lane queue blocks the reader (backpressure), which
bounds memory to about ``max_pending`` records.

:func:`apply_write` is the single place that talks to ServiceNow for the sink
(the drain and ``dlq replay`` both use it). It returns what happened, raises
:class:`WriteFailed` when the record must go to the DLQ, and lets
:class:`SystemicError` (bad credentials, TLS failure) end the run: those are
not the record's fault, and dead-lettering every record for them would empty
the topic into the DLQ.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from sncli.config import SinkTopic
from sncli.dlq import ErrorClass, Failure
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

log = logging.getLogger(__name__)

T = TypeVar("T")

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

    def __init__(self, failure: Failure) -> None:
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


class _Attempts:
    """Counts HTTP attempts across the calls one record takes (404 -> POST, lookups, ...)."""

    def __init__(self) -> None:
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


def apply_write(client: ServiceNowClient, write: Write, topic: SinkTopic) -> Outcome:
    """Perform ``write`` under the topic's policies; raise WriteFailed (DLQ) or SystemicError (stop)."""
    tries = _Attempts()
    try:
        return _apply(client, write, topic, tries)
    except ServiceNowError as exc:
        tries.failed(exc)
        error_class = classify(exc)
        if error_class is None:
            raise SystemicError(str(exc)) from exc
        raise WriteFailed(
            Failure(error_class, str(exc), status=exc.status, table=write.table, attempts=max(1, tries.total))
        ) from exc


def _apply(client: ServiceNowClient, write: Write, topic: SinkTopic, tries: _Attempts) -> Outcome:
    if write.op == "PATCH":
        assert write.sys_id is not None
        try:
            client.update(write.table, write.sys_id, dict(write.body))
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
            client.delete(write.table, write.sys_id)
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
            client.insert(table, body)
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
                client.update(table, existing, patch)
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
        found = client.get(table, sys_id, fields=["sys_id"])
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
    page = client.list_page(table, query=query, fields=["sys_id"], limit=2)
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


# --------------------------------------------------------------------------- lanes


class _Stop:
    pass


_STOP = _Stop()


class LanePool(Generic[T]):
    """``workers`` threads, one bounded queue each; items with one key always land in one lane."""

    def __init__(self, workers: int, max_pending: int, handle: Callable[[T], None], *, name: str = "lane") -> None:
        self.workers = max(1, workers)
        capacity = max(1, max_pending // self.workers)
        self._handle = handle
        self._queues: list[queue.Queue[T | _Stop]] = [queue.Queue(maxsize=capacity) for _ in range(self.workers)]
        self._abandon = threading.Event()
        self._crash: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._run, args=(q,), name=f"{name}-{i}", daemon=True)
            for i, q in enumerate(self._queues)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def crash(self) -> BaseException | None:
        """An exception that escaped the handler (a bug); the pool stops taking work after it."""
        return self._crash

    def lane_of(self, key: bytes) -> int:
        return zlib.crc32(key) % self.workers

    def submit(self, key: bytes, item: T, *, keep_waiting: Callable[[], bool] = lambda: True) -> bool:
        """Queue ``item`` on its key's lane, blocking while that lane is full.

        ``keep_waiting`` is called while blocked (to serve callbacks, check for a
        stop); returning False gives up, and submit returns False.
        """
        lane = self._queues[self.lane_of(key)]
        while True:
            if self._abandon.is_set():
                return False
            try:
                lane.put(item, timeout=0.05)
                return True
            except queue.Full:
                if not keep_waiting():
                    return False

    def close(
        self,
        *,
        abandon: bool = False,
        timeout: float | None = None,
        abandon_if: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Stop the lanes: finish queued items, or with ``abandon`` drop the ones not started yet.

        ``abandon_if`` is called about every 50 ms while waiting (the caller also
        uses it to commit progress and serve callbacks); True cuts the queued
        work short. Returns True when every lane thread ended within ``timeout``.
        """
        if abandon:
            self._abandon_now()
        for lane in self._queues:
            while True:
                try:
                    lane.put(_STOP, timeout=0.05)
                    break
                except queue.Full:
                    if not self._abandon.is_set() and abandon_if():
                        self._abandon_now()
                    if self._abandon.is_set():
                        _drain(lane)
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            while thread.is_alive():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                thread.join(0.05)
                if not self._abandon.is_set() and abandon_if():
                    self._abandon_now()
        return not any(thread.is_alive() for thread in self._threads)

    def _abandon_now(self) -> None:
        self._abandon.set()
        for lane in self._queues:
            _drain(lane)  # this also removes a stop marker queued behind the items: queue it again
            with contextlib.suppress(queue.Full):
                lane.put_nowait(_STOP)

    def _run(self, lane: queue.Queue[T | _Stop]) -> None:
        while True:
            item = lane.get()
            if isinstance(item, _Stop):
                return
            if self._abandon.is_set():
                continue
            try:
                self._handle(item)
            except BaseException as exc:  # a bug in the handler: stop cleanly instead of hanging
                log.exception("sink lane crashed")
                self._crash = exc
                self._abandon.set()


def _drain(lane: queue.Queue[Any]) -> None:
    while True:
        try:
            lane.get_nowait()
        except queue.Empty:
            return
