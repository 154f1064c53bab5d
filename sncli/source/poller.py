"""One table's page loop: fetch -> deliver -> store the cursor, with the next fetches overlapped.

The guarantee: the cursor is stored only after every record of
a page was delivered (for Kafka: acknowledged, acks=all). A crash anywhere
re-sends at most the page whose acknowledgement was not yet stored: page N+1
is never sent before page N's cursor is stored.

Overlap: the query of page N+1 depends only on the last record of page N, which
is known as soon as page N is read. So the request for page N+1 is sent before
page N is delivered, and ServiceNow works on it meanwhile
(:mod:`sncli.servicenow.readahead`: sent now, read later, no helper thread).
One page, in order:

1. send page N (queued to Kafka, not yet acknowledged);
2. wait (at most :data:`SETTLE_WAIT_SECONDS`) for N+1's answer; if it came
   and needs no retry, read and decode it, send the request for N+2, and
   prepare N+1's messages;
3. collect N's acknowledgements (``settle``) and store N's cursor.

Step 2 comes before step 3 so that the broker acknowledges page N while the
loop decodes N+1, and N+2 is being answered while N is settled and stored.
The bound keeps a slow ServiceNow answer from holding N's cursor back: when
N+1 is late, N is settled and stored first. So it is when N+1's first attempt
failed (its retries wait for a backoff, a Retry-After or a token): a run
stopped or killed during N+1's retries does not send N again. At most two
pages are requested ahead of the one being delivered; a page requested ahead
but not delivered (a stop, a failure) is dropped unread. A failure found in
N+1 during step 2 (a page out of keyset order, a record the encoder refuses)
is raised only once N is stored.

Bounds are checked at page boundaries: a shared record budget (``--max-records``;
each page is fetched with ``limit = min(page_size, what is left)``, so the bound
is exact) and a :class:`StopControl` (``--max-seconds``, SIGTERM/SIGINT).
A stop also ends the wait for an answer: the page is dropped unread. Every
wait for ServiceNow is bounded by the client (``servicenow.timeout_seconds``
per attempt, the retry budget per page), none by the loop.

The end: a short page is not the end, and an empty one is not either until
ServiceNow says nothing remains. Row ACLs are applied after ``sysparm_limit``,
so a page whose every row is hidden comes back empty mid-table. An empty page
goes to ``look_past`` (:meth:`sncli.source.fetch.TableRequests.look_past`), which asks
ServiceNow: nothing left ends the loop as "caught up"; visible rows past a
hidden run are delivered as the next page, in this cycle; a range whose rest
is all hidden ends the loop with the cursor moved past it. The hidden rows
passed are counted in ``LoopResult.hidden``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sncli.source.cursor import Cursor, advance

log = logging.getLogger("sncli.source")

Records = Sequence[dict[str, Any]]  # a list of dicts, or a RawPage (sncli.source.rawpage)


class PendingFetch(Protocol):
    """A page requested and not yet read (:class:`sncli.servicenow.readahead.PendingPage` is one)."""

    def answered(self, timeout: float) -> bool: ...  # True once the first attempt is over (answered or failed)

    def ready(self, timeout: float) -> bool: ...  # True once result() would not wait for ServiceNow

    def result(self) -> Records: ...

    def cancel(self) -> None: ...


Fetch = Callable[[Cursor, int], Records]  # a plain fetch: (cursor, limit) -> the page after cursor
StartFetch = Callable[[Cursor, int], PendingFetch]  # the same, requested now and read later
MakeMessages = Callable[[Records], Any]  # a page -> what ``send``/``deliver`` take with it (its messages)
Deliver = Callable[[Records, Any], int]  # (records, what prepare made of them or None) -> delivered
Settle = Callable[[], int]  # waits until a sent page is delivered -> delivered; raises if it was not
Send = Callable[[Records, Any], Settle]  # queues a page for delivery
Commit = Callable[[Cursor], None]


@dataclass
class Beyond:
    """What lies past an empty page (see the module doc): what ``look_past`` answers."""

    records: Records  # visible rows after the hidden ones, in keyset order (empty: none before the bound)
    hidden: int = 0  # rows passed that the ACLs hid
    past: Cursor | None = None  # with no records: the cursor past the hidden rest of the range (None: the end)


LookPast = Callable[[Cursor, int], Beyond]  # (cursor of the empty page, limit) -> what lies past it

#: How long a sent page's acknowledgements wait for the next page's answer (module doc).
SETTLE_WAIT_SECONDS = 0.25
#: How often a wait for an answer checks for a stop (``--max-seconds``, a signal).
STOP_CHECK_SECONDS = 0.1


class _Now:
    """A plain fetch as a PendingFetch: it runs when the page is read (no overlap)."""

    def __init__(self, fetch: Fetch, cursor: Cursor, limit: int) -> None:
        self._fetch = fetch
        self._cursor = cursor
        self._limit = limit

    def answered(self, timeout: float) -> bool:
        return True

    def ready(self, timeout: float) -> bool:
        return True

    def result(self) -> Records:
        return self._fetch(self._cursor, self._limit)

    def cancel(self) -> None:
        return None


class _Request:
    """One page of the loop: its fetch and its share of the record budget."""

    def __init__(self, pending: PendingFetch, limit: int) -> None:
        self.pending = pending
        self.limit = limit
        self.taken: int | None = None  # records read (the rest of ``limit`` went back to the budget)


class _Reader:
    """Starts and reads the loop's fetches, keeping the record budget exact."""

    def __init__(
        self, start_fetch: StartFetch, budget: Budget, stop: StopControl, page_size: int,
        look_past: LookPast | None = None,
    ) -> None:
        self._start_fetch = start_fetch
        self._budget = budget
        self._stop = stop
        self._page_size = page_size
        self._look_past = look_past
        self.stopped: str | None = None  # why the last ``start`` started nothing

    def start(self, cursor: Cursor) -> _Request | None:
        """The request for the page after ``cursor``, or None (``stopped`` says why) when a bound is reached."""
        self.stopped = self._stop.reason()
        if self.stopped is not None:
            return None
        limit = self._budget.take(self._page_size)
        if limit <= 0:
            self.stopped = "max_records"
            return None
        try:
            return _Request(self._start_fetch(cursor, limit), limit)
        except BaseException:
            self._budget.give_back(limit)
            raise

    def take(self, request: _Request) -> Records:
        """The page, with its retries (each wait bounded by the client)."""
        records = request.pending.result()
        request.taken = len(records)
        self._budget.give_back(request.limit - len(records))
        return records

    def beyond(self, after: Cursor, limit: int) -> _Next:
        """What lies past the empty page at ``after`` (its visible rows take a share of the budget again)."""
        if self._look_past is None:
            return _Next([])
        share = self._budget.take(limit)
        if share <= 0:  # another table took the rest meanwhile: not caught up, stopped by the bound
            return _Next([], stopped="max_records")
        try:
            beyond = self._look_past(after, share)
        except BaseException:
            self._budget.give_back(share)
            raise
        self._budget.give_back(share - len(beyond.records))
        return _Next(beyond.records, hidden=beyond.hidden, past=beyond.past)

    def drop(self, request: _Request | None) -> None:
        """A page that will not be delivered: its request is abandoned and its budget share goes back."""
        if request is not None:
            request.pending.cancel()
            self._budget.give_back(request.limit if request.taken is None else request.taken)


@dataclass
class _Next:
    """The page after the one being delivered, read during step 2 (module doc)."""

    records: Records
    end: Cursor | None = None  # the cursor after it (None: empty, or ``error``)
    prepared: Any = None
    following: _Request | None = None  # the request for the page after it
    error: Exception | None = None  # raised only once the current page is stored
    hidden: int = 0  # rows hidden by ACLs passed to reach it (counted once it is stored)
    past: Cursor | None = None  # empty: the cursor past a hidden rest of the range, stored at the end
    stopped: str | None = None  # empty: why the loop ends without being caught up


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
    stopped: str | None = None  # None = caught up (nothing remains); else max_records / max_seconds / signal
    hidden: int = 0  # rows the ACLs hid that the cursor passed (see the module doc)


def page_loop(
    *,
    start: Cursor,
    commit: Commit,
    ts_field: str,
    page_size: int,
    stop: StopControl,
    fetch: Fetch | None = None,
    start_fetch: StartFetch | None = None,
    deliver: Deliver | None = None,
    send: Send | None = None,
    budget: Budget | None = None,
    prepare: MakeMessages | None = None,
    on_page: Callable[[LoopResult], None] | None = None,
    look_past: LookPast | None = None,
) -> LoopResult:
    """Page from ``start`` until nothing remains or a bound; see the module doc for the order and the guarantee.

    The input is ``start_fetch`` (requests a page, read later) or ``fetch`` (a
    plain call, run when the page is read); the output is ``send`` (queues a
    page, returns the wait for its delivery) or ``deliver`` (delivers it before
    returning). ``prepare`` makes the messages of a page. ``look_past`` is asked
    what lies past an empty page (None: an empty page is the end).
    """
    if fetch is not None and start_fetch is None:
        start_fetch = _starting(fetch)
    elif fetch is not None or start_fetch is None:
        raise TypeError("page_loop takes one of fetch and start_fetch")
    if deliver is not None and send is None:
        send = _sending(deliver)
    elif deliver is not None or send is None:
        raise TypeError("page_loop takes one of deliver and send")
    return _loop(_Reader(start_fetch, budget or Budget(None), stop, page_size, look_past), start, send, commit,
                 ts_field, stop, prepare, on_page)


def _loop(
    reader: _Reader,
    start: Cursor,
    send: Send,
    commit: Commit,
    ts_field: str,
    stop: StopControl,
    prepare: MakeMessages | None,
    on_page: Callable[[LoopResult], None] | None,
) -> LoopResult:
    result = LoopResult(cursor=start)
    first = reader.start(start)
    if first is None:
        result.stopped = reader.stopped
        return result
    if not _answered(first, stop):
        result.stopped = stop.reason()
        reader.drop(first)
        return result
    current = _read(reader, first, start, ts_field, prepare)
    if current.error is not None:
        raise current.error
    ahead = current.following
    while current.end is not None:
        records, end, hidden = current.records, current.end, current.hidden
        settle = send(records, current.prepared)
        early = _read(reader, ahead, end, ts_field, prepare) if ahead is not None and _arrives(ahead) else None
        try:
            delivered = settle()
            commit(end)
        except BaseException:
            reader.drop(early.following if early is not None else ahead)
            raise
        result.cursor = end
        result.records += len(records)
        result.delivered += delivered
        result.pages += 1
        result.hidden += hidden
        if on_page is not None:
            on_page(result)
        if ahead is None:
            result.stopped = reader.stopped  # a bound was reached before the next page was requested
            break
        reason = stop.reason()
        if reason is not None:
            result.stopped = reason  # pages requested ahead are dropped unread; nothing of them was delivered
            reader.drop(ahead)
            reader.drop(early.following if early is not None else None)
            break
        if early is None and not _answered(ahead, stop):
            result.stopped = stop.reason()  # stopped while waiting for ServiceNow: the page is dropped unread
            reader.drop(ahead)
            break
        current = early if early is not None else _read(reader, ahead, end, ts_field, prepare)
        if current.error is not None:
            reader.drop(current.following)
            raise current.error
        ahead = current.following
    else:
        _end(current, commit, result)
    return result


def _end(last: _Next, commit: Commit, result: LoopResult) -> None:
    """The loop read an empty page: caught up, stopped by the budget, or past a hidden rest (stored now)."""
    result.stopped = last.stopped
    if last.past is not None:
        commit(last.past)  # every page before it is stored: nothing unacknowledged is passed
        result.cursor = last.past
        result.hidden += last.hidden


def _arrives(request: _Request) -> bool:
    """Whether the page's answer is there within the settle wait, and needs no retry."""
    return request.pending.ready(SETTLE_WAIT_SECONDS)


def _answered(request: _Request, stop: StopControl) -> bool:
    """Wait for the first attempt of the page to be over; False when a stop comes first."""
    while not request.pending.answered(STOP_CHECK_SECONDS):
        if stop.reason() is not None:
            return False
    return True


def _read(reader: _Reader, request: _Request, after: Cursor, ts_field: str, prepare: MakeMessages | None) -> _Next:
    """Read the page of ``request``, request the one after it, prepare it; a failure is kept in ``error``.

    Reading itself may raise (ServiceNow failed for good): the caller decides when.
    """
    try:
        page = _Next(reader.take(request))
    except Exception as exc:
        reader.drop(request)  # its share of the budget goes back to the other tables
        return _Next([], error=exc)
    if not page.records:
        try:
            page = reader.beyond(after, request.limit)  # the end only if ServiceNow says nothing remains
        except Exception as exc:
            return _Next([], error=exc)
    if not page.records:
        return page  # caught up, or past a hidden rest of the range
    try:
        page.end = advance(after, page.records, ts_field)
        page.following = reader.start(page.end)
        page.prepared = prepare(page.records) if prepare is not None else None
    except Exception as exc:
        page.end = None
        reader.drop(page.following)
        page.following = None
        page.error = exc
    return page


def _starting(fetch: Fetch) -> StartFetch:
    def start(cursor: Cursor, limit: int) -> PendingFetch:
        return _Now(fetch, cursor, limit)

    return start


def _sending(deliver: Deliver) -> Send:
    """A ``send`` that delivers at once (an output with nothing to wait for separately)."""

    def send(records: Records, prepared: Any) -> Settle:
        delivered = deliver(records, prepared)
        return lambda: delivered

    return send
