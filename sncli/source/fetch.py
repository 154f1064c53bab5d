"""A table's page requests between a cursor and the range's upper bound, and the look past hidden rows.

:class:`TableRequests` gives the page loop its requests (``start``: sent ahead,
read later) and tells it what lies past an empty page (``look_past``: rows
hidden by ACLs, or the end). Shared by ``source poll`` and ``backfill``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import Counter

from sncli.errors import SncliError
from sncli.metrics import RunMetrics
from sncli.source.cursor import Cursor, UpperBound, advance, between_query, page_query, past_bound
from sncli.source.outcome import show
from sncli.source.poller import Beyond, PendingFetch, Records
from sncli.source.rawpage import Decoder as RawDecoder
from sncli.source.rawpage import decode_records, head

if TYPE_CHECKING:
    from sncli.config import Settings, SourceTable
    from sncli.servicenow.client import DecodedPage, ServiceNowClient
    from sncli.servicenow.readahead import PendingPage

log = logging.getLogger("sncli.source")


#: The widest request the look past hidden rows makes: rows ServiceNow reads (and its ACLs drop) for one answer.
LOOK_PAST_MAX_ROWS = 100_000


class HiddenRowsError(SncliError):
    """More rows in a row than :data:`LOOK_PAST_MAX_ROWS` are hidden: sncli cannot see past them."""


class TableRequests:
    """The page requests of one table's range up to ``hi``: the page loop's ``start_fetch`` and ``look_past``.

    With ``decoder`` pages come as RawPages (only for a JSON Kafka output), else as dicts.
    """

    def __init__(
        self,
        client: ServiceNowClient,
        settings: Settings,
        table: SourceTable,
        hi: UpperBound,
        metrics: RunMetrics,
        decoder: RawDecoder | None = None,
        *,
        deletes_of: str | None = None,
    ) -> None:
        """``deletes_of``: ``table`` is the ``sys_audit_delete`` stream of this table (:mod:`sncli.source.deletes`):
        its rows are read as stored (no display values) and not counted as the table's records."""
        self._client = client
        self._table = table
        self._hi = hi
        self._display_value = settings.source.display_value if deletes_of is None else "false"
        self._fetched = metrics.source_records.labels(table=table.name) if deletes_of is None else None
        self._fields = list(table.fields) if table.fields is not None else None
        self._decode: Callable[[bytes], Records] = decoder if decoder is not None else decode_records

    def start(self, cursor: Cursor, limit: int) -> PendingFetch:
        """The page after ``cursor``, requested now (sent ahead, see :mod:`sncli.servicenow.readahead`)."""
        table = self._table
        query = page_query(cursor, self._hi, ts_field=table.timestamp_field, base_query=table.query)
        pending = self._client.start_page_decoded(table.name, decode=self._decode, query=query, fields=self._fields,
                                                  limit=limit, display_value=self._display_value)
        return _Counted(pending, self._fetched)

    def look_past(self, cursor: Cursor, limit: int) -> Beyond:
        """What lies past an empty page (see :mod:`sncli.source.poller`), from what the Table API lets a client see.

        ServiceNow applies ``sysparm_limit`` before row ACLs: a page reads ``limit``
        rows and drops the hidden ones, so an empty page may sit before visible
        rows. A hidden row shows nothing of itself (not even its sys_id or
        timestamp), so the cursor cannot be moved onto it. What a client does see:
        ``X-Total-Count``, the count of the query's rows, taken before the ACLs
        (ServiceNow evaluates them per row of the page read, never for the count).

        So the same keyset query is asked again, with the count and a limit twice
        as wide each time (at most the count, at most :data:`LOOK_PAST_MAX_ROWS`):

        - count 0: nothing remains, the end;
        - visible rows: they come in keyset order right after the cursor, so no
          visible row before the last one returned was left out: the first
          ``limit`` of them are the next page (the rows hidden before them are
          counted with one more count query over that keyset range);
        - none, and the count fits in the limit: every remaining row was read and
          all are hidden; the cursor may move past the range's bound.

        Why not ``sysparm_offset`` past the hidden block: offsets count rows of a
        result that changes while we read (a row updated meanwhile leaves it), so an
        offset can step over a visible row; a keyset query from the cursor cannot.
        A run of hidden rows longer than :data:`LOOK_PAST_MAX_ROWS` fails the table
        (exit 1 or 3) with a message saying so, instead of reading it every cycle.
        """
        table, hi, ts = self._table, self._hi, self._table.timestamp_field
        query = page_query(cursor, hi, ts_field=ts, base_query=table.query)
        width = min(2 * limit, LOOK_PAST_MAX_ROWS)
        while True:
            answer = self._client.list_page_decoded(table.name, decode=self._decode, query=query, fields=self._fields,
                                                    limit=width, display_value=self._display_value, no_count=False)
            total = answer.total
            if total is None:
                raise SncliError(f"{table.name}: ServiceNow sent no X-Total-Count; cannot tell rows hidden by ACLs "
                                 f"from the end of the table")
            if len(answer.records):
                kept = head(answer.records, limit)
                end = advance(cursor, kept, ts)
                rows = self._count(between_query(cursor, end, ts_field=ts, base_query=table.query))
                hidden = max(0, rows - len(kept))
                _warn_hidden(table.name, hidden, cursor, f"up to {end.timestamp} {end.sys_id}")
                return Beyond(kept, hidden=hidden)
            if total == 0:
                return Beyond([])  # nothing remains: the end
            if total <= width:
                past = past_bound(hi)
                _warn_hidden(table.name, total, cursor, f"to the end of the cycle's range ({hi.value})")
                return Beyond([], hidden=total, past=past)
            if width >= LOOK_PAST_MAX_ROWS:
                raise HiddenRowsError(
                    f"{table.name}: the {width} rows after {show(cursor)} are all hidden from the integration user "
                    f"by ACLs ({total} rows remain); sncli cannot see past them. Grant the user read access, or "
                    f"exclude those rows in the table's query (or a before-query business rule)"
                )
            width = min(2 * width, total, LOOK_PAST_MAX_ROWS)

    def _count(self, query: str) -> int:
        page = self._client.list_page(self._table.name, query=query, fields=["sys_id"], limit=1, no_count=False)
        if page.total is None:
            raise SncliError(f"{self._table.name}: ServiceNow sent no X-Total-Count; cannot tell rows hidden by ACLs "
                             f"from the end of the table")
        return page.total


def _warn_hidden(table: str, hidden: int, cursor: Cursor, where: str) -> None:
    if hidden > 0:
        log.warning("%s: %d rows after %s are hidden from the integration user by ACLs and were passed %s; "
                    "they are not exported", table, hidden, show(cursor), where, extra={"table": table})


class _Counted:
    """A page request whose records are counted in ``bridge_source_records_total`` once read."""

    def __init__(self, pending: PendingPage[DecodedPage[Records]], counter: Counter | None) -> None:
        self._pending = pending
        self._counter = counter

    def answered(self, timeout: float) -> bool:
        return self._pending.answered(timeout)

    def ready(self, timeout: float) -> bool:
        return self._pending.ready(timeout)

    def result(self) -> Records:
        records = self._pending.result().records
        if self._counter is not None:
            self._counter.inc(len(records))
        return records

    def cancel(self) -> None:
        self._pending.cancel()

