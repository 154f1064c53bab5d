"""The ServiceNow side of a verify: window counts, sys_id listings, look-ups by sys_id (the I/O).

Every request is counted (``requests``), so a run reports what it cost.

- counts: the Aggregate API, one request per window, a level's windows in
  parallel (one round trip of latency per level);
- listings: ``sysparm_fields=sys_id,<timestamp field>`` keyset-paged in
  ``(timestamp, sys_id)`` order inside the window (:func:`span_page_query`),
  never ``sysparm_offset``; a short page is not the end, an empty one is;
- look-ups: ``sys_idIN`` batches of :data:`LOOKUP_BATCH`, with the table's base
  query (a record that no longer matches it is not part of the mirror);
- past the bound: the records changed after the compared range's end, keyset
  paged like a listing, at most :data:`PAST_BOUND_MAX_ROWS` of them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from sncli.servicenow.query import Query, and_each_clause
from sncli.source.cursor import field_value
from sncli.source.windows import to_epoch
from sncli.verify.spans import Bound, Span, past_bound_query, span_page_query, span_query

if TYPE_CHECKING:
    from sncli.config import SourceTable
    from sncli.servicenow.client import ServiceNowClient

COUNT_THREADS = 16
LIST_THREADS = 4  # listings are heavier than counts: fewer at once
LOOKUP_BATCH = 100
LIST_PAGE = 10_000
#: The most records changed after the bound that a verify lists (10 requests of LIST_PAGE): a ``--until``
#: far in the past of a busy table would otherwise list most of the table.
PAST_BOUND_MAX_ROWS = 100_000


class ServiceNowSide:
    """One table's requests for a verify (thread-safe: counts run in parallel)."""

    def __init__(self, client: ServiceNowClient, table: SourceTable, *, page_size: int = LIST_PAGE) -> None:
        self._client = client
        self._table = table
        self._ts = table.timestamp_field
        self._page = page_size
        self._lock = threading.Lock()
        self.requests = 0

    def _count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def count(self, span: Span) -> int:
        self._count_request()
        return self._client.count(self._table.name, span_query(span, ts_field=self._ts, base_query=self._table.query))

    def count_many(self, spans: Sequence[Span]) -> list[int]:
        if len(spans) <= 1:
            return [self.count(s) for s in spans]
        with ThreadPoolExecutor(max_workers=min(COUNT_THREADS, len(spans)), thread_name_prefix="verify-count") as pool:
            return list(pool.map(self.count, spans))

    def listing_many(self, spans: Sequence[Span]) -> list[dict[str, int]]:
        """:meth:`listing` of each span, several at once (each one pages in order)."""
        if len(spans) <= 1:
            return [self.listing(s) for s in spans]
        with ThreadPoolExecutor(max_workers=min(LIST_THREADS, len(spans)), thread_name_prefix="verify-list") as pool:
            return list(pool.map(self.listing, spans))

    def listing(self, span: Span) -> dict[str, int]:
        """Every record of ``span``: sys_id -> timestamp (epoch seconds)."""
        found: dict[str, int] = {}
        after: tuple[int, str] | None = None
        while True:
            query = span_page_query(span, after, ts_field=self._ts, base_query=self._table.query)
            self._count_request()
            page = self._client.list_page(self._table.name, query=query, fields=["sys_id", self._ts],
                                          limit=self._page)
            if not page.records:
                return found
            for record in page.records:
                sys_id, ts = field_value(record, "sys_id"), to_epoch(field_value(record, self._ts))
                found[sys_id] = ts
                after = (ts, sys_id)

    def past_bound(self, bound: Bound, *, limit: int = PAST_BOUND_MAX_ROWS) -> tuple[dict[str, int], bool]:
        """The records changed after ``bound`` (sys_id -> timestamp), and whether that is all of them (False:
        more than ``limit``; the first ``limit`` in keyset order are returned)."""
        after: tuple[int, str] | None = None
        found: dict[str, int] = {}
        while True:
            query = past_bound_query(bound, after, ts_field=self._ts, base_query=self._table.query)
            self._count_request()
            page = self._client.list_page(self._table.name, query=query, fields=["sys_id", self._ts],
                                          limit=min(self._page, limit + 1 - len(found)))
            if not page.records:
                return found, True
            for record in page.records:
                if len(found) == limit:
                    return found, False  # one more than the limit is there
                sys_id, ts = field_value(record, "sys_id"), to_epoch(field_value(record, self._ts))
                found[sys_id] = ts
                after = (ts, sys_id)

    def timestamps(self, sys_ids: Sequence[str]) -> dict[str, int]:
        """The timestamp of each of ``sys_ids`` ServiceNow has (and its base query admits), whatever its time."""
        out: dict[str, int] = {}
        for record in self.records(sys_ids, fields=["sys_id", self._ts], display_value="false"):
            out[field_value(record, "sys_id")] = to_epoch(field_value(record, self._ts))
        return out

    def records(self, sys_ids: Sequence[str], *, fields: list[str] | None,
                display_value: str = "false") -> list[dict[str, Any]]:
        """The records of ``sys_ids`` that exist (and match the table's base query)."""
        return [r for batch in self.record_batches(sys_ids, fields=fields, display_value=display_value) for r in batch]

    def record_batches(self, sys_ids: Sequence[str], *, fields: list[str] | None,
                       display_value: str = "false") -> Iterator[list[dict[str, Any]]]:
        """:meth:`records` a batch (one request of :data:`LOOKUP_BATCH` sys_ids) at a time."""
        for start in range(0, len(sys_ids), LOOKUP_BATCH):
            batch = sorted(sys_ids[start:start + LOOKUP_BATCH])
            query = and_each_clause(self._table.query, [Query().in_("sys_id", batch)])
            self._count_request()
            page = self._client.list_page(self._table.name, query=query, fields=fields, limit=len(batch),
                                          display_value=display_value)  # type: ignore[arg-type]
            yield page.records
