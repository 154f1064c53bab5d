"""One table's page loop: fetch -> deliver -> store the cursor, with the next fetch overlapped.

The guarantee (DESIGN.md §4): the cursor is stored only after every record of
a page was delivered (for Kafka: acknowledged, acks=all). A crash anywhere
re-sends at most the page whose acknowledgement was not yet stored.

Overlap: the query of page N+1 depends only on the last record of page N, which
is known as soon as page N is fetched. So the fetch of N+1 starts (on a helper
thread) before page N is produced; the HTTP wait and JSON decoding of the next
page run while this page is produced and acknowledged. The cursor still moves
strictly page by page, after each page's acknowledgement: the overlap changes
the timing, never the order of "delivered, then stored".

Bounds are checked at page boundaries: a shared record budget (``--max-records``;
each page is fetched with ``limit = min(page_size, what is left)``, so the bound
is exact) and a :class:`StopControl` (``--max-seconds``, SIGTERM/SIGINT).
Only an empty page ends the loop as "caught up"; a short page does not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sncli.source.cursor import Cursor, advance

log = logging.getLogger("sncli.source")

Records = Sequence[dict[str, Any]]  # a list of dicts, or a RawPage (sncli.source.rawpage)
Fetch = Callable[[Cursor, int], Records]
Prepare = Callable[[Records], Any]
Deliver = Callable[[Records, Any], int]  # (records, what prepare made of them or None) -> delivered
Commit = Callable[[Cursor], None]


class _Prefetch:
    """One fetch (and its preparation) on a daemon thread; a dropped prefetch never delays process exit.

    Preparing (encoding values, building headers) here too means that work runs
    while the loop thread waits for the previous page's acknowledgements.
    """

    def __init__(self, fetch: Fetch, prepare: Prepare | None, cursor: Cursor, limit: int, name: str) -> None:
        self.limit = limit
        self._done = threading.Event()
        self._records: Records = []
        self._prepared: Any = None
        self._error: BaseException | None = None
        threading.Thread(target=self._run, args=(fetch, prepare, cursor, limit), name=f"fetch-{name}",
                         daemon=True).start()

    def _run(self, fetch: Fetch, prepare: Prepare | None, cursor: Cursor, limit: int) -> None:
        try:
            self._records = fetch(cursor, limit)
            if prepare is not None and self._records:
                self._prepared = prepare(self._records)
        except BaseException as exc:
            self._error = exc
        finally:
            self._done.set()

    def result(self) -> tuple[Records, Any]:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._records, self._prepared


class StopControl:
    """Why the run should stop at the next page boundary, if it should (thread-safe)."""

    def __init__(
        self,
        max_seconds: float | None = None,
        *,
        parent: StopControl | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``parent``: a longer-lived control (signals) whose stop also stops this one."""
        self._clock = clock
        self._deadline = None if max_seconds is None else clock() + max_seconds
        self._parent = parent
        self._reason: str | None = None
        self._event = threading.Event()

    def request(self, reason: str) -> None:
        if self._reason is None:
            self._reason = reason
        self._event.set()

    def reason(self) -> str | None:
        if self._reason is None:
            inherited = self._parent.reason() if self._parent is not None else None
            if inherited is not None:
                self.request(inherited)
            elif self._deadline is not None and self._clock() >= self._deadline:
                self.request("max_seconds")
        return self._reason

    @property
    def event(self) -> threading.Event:
        """Set when a stop is requested (not by the deadline): lets a ``--every`` loop wait on it."""
        return self._event


class Budget:
    """A record budget shared by every table of a run (``--max-records``); None = unbounded."""

    def __init__(self, total: int | None) -> None:
        self._left = total
        self._lock = threading.Lock()

    def take(self, wanted: int) -> int:
        with self._lock:
            if self._left is None:
                return wanted
            got = min(wanted, self._left)
            self._left -= got
            return got

    def give_back(self, unused: int) -> None:
        if unused <= 0:
            return
        with self._lock:
            if self._left is not None:
                self._left += unused


@dataclass
class LoopResult:
    cursor: Cursor  # the last stored (delivered) cursor
    records: int = 0  # records fetched and delivered
    pages: int = 0
    delivered: int = 0  # acknowledged by the output
    stopped: str | None = None  # None = caught up (empty page); else max_records / max_seconds / signal


def page_loop(
    *,
    start: Cursor,
    fetch: Fetch,
    deliver: Deliver,
    commit: Commit,
    ts_field: str,
    page_size: int,
    stop: StopControl,
    budget: Budget | None = None,
    prepare: Prepare | None = None,
    on_page: Callable[[LoopResult], None] | None = None,
    name: str = "source",
) -> LoopResult:
    """Page from ``start`` until an empty page or a bound; see the module doc for the guarantee."""
    budget = budget or Budget(None)
    result = LoopResult(cursor=start)
    result.stopped = stop.reason()
    if result.stopped is not None:
        return result
    limit = budget.take(page_size)
    if limit <= 0:
        result.stopped = "max_records"
        return result
    pending: _Prefetch | None = _Prefetch(fetch, prepare, start, limit, name)
    while pending is not None:
        records, prepared = pending.result()
        budget.give_back(pending.limit - len(records))
        pending = None
        if not records:
            break  # caught up: only an empty page ends the cycle
        cursor = advance(result.cursor, records, ts_field)
        reason = stop.reason()
        if reason is None:
            limit = budget.take(page_size)
            if limit > 0:
                pending = _Prefetch(fetch, prepare, cursor, limit, name)  # overlaps with delivering this page
            else:
                reason = "max_records"
        delivered = deliver(records, prepared)
        commit(cursor)
        result.cursor = cursor
        result.records += len(records)
        result.delivered += delivered
        result.pages += 1
        if on_page is not None:
            on_page(result)
        if pending is None:
            result.stopped = reason
            break
        reason = stop.reason()
        if reason is not None:
            result.stopped = reason  # the prefetched page is dropped unread; nothing of it was delivered
            budget.give_back(pending.limit)
            pending = None
    return result
