"""Applying resolved writes to ServiceNow: per-key lanes, and the 404 / ambiguous-POST policies.

Workers: :class:`KeyedPool` runs ``workers`` threads; records that share a key
are applied one after another in the order they were read, records with
different keys run in parallel, and any idle worker takes any ready key. A
full pool blocks the reader (backpressure), bounding memory to ``max_pending``
records.

:func:`apply_write` is the single place that talks to ServiceNow for the sink
(the drain and ``dlq replay`` both use it). It returns what happened, raises
:class:`WriteFailed` when the record must go to the DLQ, and lets
:class:`SystemicError` (bad credentials, TLS failure) end the run: those are
not the record's fault, and dead-lettering every record for them would empty
the topic into the DLQ.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
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
            Failure(error_class, str(exc), status=exc.status, table=write.table, attempts=max(1, tries.total))
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


# --------------------------------------------------------------------------- keyed worker pool


class KeyedPool(Generic[T]):
    """``workers`` threads that run items in parallel, but one key at a time and in submit order.

    Items of one key wait in that key's queue while an item of the key runs;
    any idle worker takes the next key that is ready. Unlike fixed lanes
    (``hash(key) % workers``), no worker idles while another lane has a
    backlog, so throughput stays near ``workers / latency`` whatever the key
    distribution. At most ``max_pending`` items are queued or running: a
    submit beyond that blocks (backpressure).
    """

    def __init__(self, workers: int, max_pending: int, handle: Callable[[T], None], *, name: str = "sink") -> None:
        self.workers = max(1, workers)
        self._capacity = max(1, max_pending)
        self._handle = handle
        lock = threading.Lock()
        self._work = threading.Condition(lock)  # workers wait here for a ready key
        self._space = threading.Condition(lock)  # submitters wait here for room
        self._queues: dict[bytes, deque[T]] = {}  # keys queued or running -> their waiting items
        self._ready: deque[bytes] = deque()  # keys with a waiting item and none running
        self._pending = 0  # items queued or running
        self._closing = False
        self._abandoned = False
        self._crash: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def crash(self) -> BaseException | None:
        """An exception that escaped the handler (a bug); the pool drops its queued work after it."""
        return self._crash

    @property
    def pending(self) -> int:
        with self._work:
            return self._pending

    def submit(self, key: bytes, item: T, *, keep_waiting: Callable[[], bool] = lambda: True) -> bool:
        """Queue ``item`` behind the earlier items of ``key``, blocking while the pool is full.

        ``keep_waiting`` is called (without the pool's lock) while blocked, to
        serve callbacks and check for a stop; False gives up and submit returns False.
        """
        while True:
            with self._space:
                if self._abandoned or self._closing:
                    return False
                if self._pending < self._capacity:
                    waiting = self._queues.get(key)
                    if waiting is None:
                        self._queues[key] = deque((item,))
                        self._ready.append(key)
                        self._work.notify()
                    else:
                        waiting.append(item)  # the key is running or ready: it is picked up in turn
                    self._pending += 1
                    return True
                self._space.wait(0.05)
            if not keep_waiting():
                return False

    def wait_idle(self, *, abandon: bool = False, tick: Callable[[], bool] = lambda: False) -> None:
        """Wait until nothing is queued or running; ``tick`` runs every ~50 ms, True drops the queue.

        The pool stays open: more work may be submitted afterwards.
        """
        if abandon:
            self._drop_queued()
        while True:
            with self._space:
                if self._pending == 0:
                    return
                self._space.wait(0.05)
            if tick():
                self._drop_queued()

    def close(
        self,
        *,
        abandon: bool = False,
        timeout: float | None = None,
        abandon_if: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Stop: finish queued items, or with ``abandon`` drop the ones not started yet.

        ``abandon_if`` is called about every 50 ms while waiting (the caller also
        uses it to commit progress and serve callbacks); True cuts the queued
        work short. Returns True when every worker ended within ``timeout``.
        """
        with self._work:
            self._closing = True
            self._work.notify_all()
            self._space.notify_all()
        if abandon:
            self._abandon()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            while thread.is_alive():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                thread.join(0.05)
                if not self._abandoned and abandon_if():
                    self._abandon()
        return not any(thread.is_alive() for thread in self._threads)

    def _abandon(self) -> None:
        with self._work:
            self._abandoned = True
        self._drop_queued()

    def _drop_queued(self) -> None:
        """Forget every item not started yet (their keys included); running ones finish."""
        with self._work:
            dropped = 0
            for key in list(self._queues):
                waiting = self._queues[key]
                dropped += len(waiting)
                waiting.clear()
                if key in self._ready:  # queued, not running: forget the key
                    del self._queues[key]
            self._ready.clear()
            self._pending -= dropped
            self._work.notify_all()
            self._space.notify_all()

    def _run(self) -> None:
        while True:
            with self._work:
                while not self._ready:
                    if (self._closing and self._pending == 0) or self._abandoned:
                        return
                    self._work.wait(0.5)
                key = self._ready.popleft()
                item = self._queues[key].popleft()
            try:
                self._handle(item)
            except BaseException as exc:  # a bug in the handler: stop cleanly instead of hanging
                log.exception("sink worker crashed")
                self._crash = exc
                self._abandon()
            with self._work:
                self._pending -= 1
                waiting = self._queues.get(key)
                if waiting:
                    self._ready.append(key)  # its next item, behind the other ready keys
                    self._work.notify()
                elif waiting is not None:
                    del self._queues[key]
                if self._closing and self._pending == 0:
                    self._work.notify_all()
                self._space.notify_all()
