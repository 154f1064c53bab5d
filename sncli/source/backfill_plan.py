"""A backfill's plan: the windows of a range, how they are counted, keyed and stored.

The range ``[since, until)`` is split into N windows by record counts
(:func:`make_plan`, :mod:`sncli.source.windows`), counted with ``limit=1``
queries (:class:`RangeCounter`). The plan is stored under
``backfill/<table>/<range-id>.plan/<i>of<N>`` (timestamp = the window's start)
and each window's cursor under ``backfill/<table>/<range-id>/<i>of<N>``; a
window is done when its cursor is ``(hi, "")``. Why the plan is stored: see
:mod:`sncli.source.backfill`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sncli.errors import OffsetsError, SncliError
from sncli.offsets.model import StoredOffset, backfill_key, parse_key
from sncli.servicenow.query import Query, and_each_clause
from sncli.source.cursor import UpperBound, field_value, range_query
from sncli.source.windows import Window, from_compact, plan_windows, to_epoch, to_sn, windows_from_boundaries

if TYPE_CHECKING:
    from sncli.config import SourceTable
    from sncli.offsets.store import OffsetStore
    from sncli.servicenow.client import Page, ServiceNowClient

PLAN_SUFFIX = ".plan"
COUNT_THREADS = 32  # count queries of one planning level run at once (one round trip per level)


def window_key(table: str, rid: str, index: int, count: int) -> str:
    return backfill_key(table, rid, index, count)


def plan_key(table: str, rid: str, index: int, count: int) -> str:
    return window_key(table, rid + PLAN_SUFFIX, index, count)


def window_done(stored: StoredOffset | None, window: Window) -> bool:
    """A window is done when its cursor is ``(hi, "")``: everything before ``hi`` was read."""
    if window.lo >= window.hi:
        return True
    return stored is not None and stored.sys_id == "" and stored.timestamp == window.hi_text


def load_plan(
    stored: dict[str, StoredOffset], table: str, rid: str, since: int, until: int, n: int
) -> list[Window] | None:
    """The stored plan of this range, or None when it is absent or incomplete (a planner died midway)."""
    entries = [stored.get(plan_key(table, rid, i, n)) for i in range(n)]
    if any(e is None for e in entries):
        return None
    lows = [to_epoch(e.timestamp) for e in entries if e is not None]
    if lows[0] != since or lows != sorted(lows) or lows[-1] > until:
        raise OffsetsError(
            f"the stored plan of backfill {table} {rid} ({n} windows) is inconsistent; "
            f"run `sncli offsets reset --table {table} --backfill` to start this backfill over"
        )
    return windows_from_boundaries(since, until, lows[1:])


def save_plan(store: OffsetStore, table: str, rid: str, windows: list[Window], fingerprint: str) -> None:
    for w in windows:
        store.save(StoredOffset.new(plan_key(table, rid, w.index, w.count), w.lo_text, "", fingerprint))


_RANGE = re.compile(r"(?P<since>[0-9]{8}T[0-9]{6})-(?P<until>[0-9]{8}T[0-9]{6})(?P<suffix>.*)")


def unfinished_until(
    stored: dict[str, StoredOffset], table: str, since: int, n: int, suffix: str
) -> int | None:
    """The ``until`` of the latest unfinished backfill of (table, since, N, output), if any."""
    found: list[int] = []
    for key in stored:
        try:
            info = parse_key(key)
        except ValueError:
            continue
        if info.kind != "backfill" or info.table != table or info.count != n or info.index != 0:
            continue
        rid = info.range_id or ""
        if not rid.endswith(PLAN_SUFFIX):
            continue
        match = _RANGE.fullmatch(rid[: -len(PLAN_SUFFIX)])
        if not match or match.group("suffix") != suffix or from_compact(match.group("since")) != since:
            continue
        until = from_compact(match.group("until"))
        base = rid[: -len(PLAN_SUFFIX)]
        plan = load_plan(stored, table, base, since, until, n)
        if plan is None:
            found.append(until)  # a plan that was never completed: no window ran, resume it anyway
            continue
        if not all(window_done(stored.get(window_key(table, base, w.index, n)), w) for w in plan):
            found.append(until)
    return max(found) if found else None


class RangeCounter:
    """Record counts of ``[lo, hi)`` ranges of one table (``X-Total-Count`` of ``limit=1`` queries)."""

    def __init__(self, client: ServiceNowClient, table: SourceTable, threads: int = 8) -> None:
        self._client = client
        self._table = table
        self._threads = max(1, threads)

    def _query(self, lo: int, hi: int) -> str:
        return range_query(to_sn(lo), UpperBound(to_sn(hi), inclusive=False), ts_field=self._table.timestamp_field,
                           base_query=self._table.query)

    def count(self, lo: int, hi: int) -> int:
        if hi <= lo:
            return 0
        page = self._client.list_page(self._table.name, query=self._query(lo, hi), fields=["sys_id"], limit=1,
                                      no_count=False)
        if page.total is None:
            raise SncliError(f"{self._table.name}: ServiceNow sent no X-Total-Count; cannot split the range")
        return page.total

    def count_many(self, intervals: Iterable[tuple[int, int]]) -> list[int]:
        items = list(intervals)
        if len(items) <= 1:
            return [self.count(lo, hi) for lo, hi in items]
        with ThreadPoolExecutor(max_workers=min(self._threads, len(items)), thread_name_prefix="count") as pool:
            return list(pool.map(lambda iv: self.count(*iv), items))

    def first_and_clock(self, since: int) -> tuple[int | None, int | None, datetime | None]:
        """The first and the last record at or after ``since`` (epoch seconds) and ServiceNow's clock.

        Two requests at once, one round trip. The clock is the first answer's
        ``Date`` (None when it has none): a backfill that needs "now" for its
        upper bound gets the range's edges with it, which saves planning round trips.
        """
        ts = self._table.timestamp_field
        query = and_each_clause(self._table.query, [Query().ge(ts, to_sn(since))])
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="edge") as pool:
            last = pool.submit(self._edge_page, query, last=True)
            first_page = self._edge_page(query, last=False)
            last_page = last.result()
        return _edge_of(first_page.records, ts), _edge_of(last_page.records, ts), first_page.server_time

    def edges(self, lo: int, hi: int) -> tuple[int | None, int | None]:
        """The timestamps of the first and the last record in ``[lo, hi)``, as epoch seconds (one round trip)."""
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="edge") as pool:
            last = pool.submit(self._edge_page, self._query(lo, hi), last=True)
            first = self._edge_page(self._query(lo, hi), last=False)
            ts = self._table.timestamp_field
            return _edge_of(first.records, ts), _edge_of(last.result().records, ts)

    def _edge_page(self, query: str, *, last: bool) -> Page:
        """The first (or last) record of ``query`` in keyset order: ascending, or its exact reverse."""
        ts = self._table.timestamp_field
        order = f"^ORDERBYDESC{ts}^ORDERBYDESCsys_id" if last else f"^ORDERBY{ts}^ORDERBYsys_id"
        return self._client.list_page(self._table.name, query=query + order, fields=["sys_id", ts], limit=1)


def _edge_of(records: list[dict[str, Any]], ts: str) -> int | None:
    if not records:
        return None
    try:
        return to_epoch(field_value(records[0], ts))
    except ValueError:
        return None


def make_plan(
    counter: RangeCounter,
    since: int,
    until: int,
    n: int,
    *,
    first: int | None = None,
    last: int | None = None,
    edges_known: bool = False,
) -> list[Window]:
    """Plan N windows: the range's first and last record (unless ``edges_known``), then the split by counts.

    ``first``/``last``: the timestamps of the first record at or after ``since``
    and of the last one, None when there is none, when the caller already knows
    them (``edges_known``). A last record at or after ``until`` tells nothing
    about the range's end and is not used. Refinement then starts from the
    data's span: a table whose records end long before ``until`` (one that is no
    longer written to, the bench's) needs two refinement levels fewer; for a
    live table it saves nothing, and both edges cost one round trip together.
    The range's count is asked together with the first refinement level (see
    :func:`plan_windows`).
    """
    if n == 1:
        return plan_windows(since, until, 1, counter.count_many)
    if not edges_known:
        first, last = counter.edges(since, until)
    if first is None or first >= until:  # no record in the range
        return plan_windows(since, until, n, counter.count_many, total=0)
    return plan_windows(since, until, n, counter.count_many, first=first,
                        last=last if last is not None and last < until else None)
