"""A table's page requests between a cursor and the range's upper bound, and the look past hidden rows.

:func:`make_fetch` gives the page loop its requests (sent ahead, read later);
:func:`make_look_past` tells it what lies past an empty page (rows hidden by ACLs
or the end). Shared by ``source poll`` and ``backfill``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sncli.errors import SncliError
from sncli.metrics import RunMetrics
from sncli.source.cursor import Cursor, UpperBound, advance, between_query, page_query, past_bound
from sncli.source.outcome import show
from sncli.source.poller import Beyond, LookPast, PendingFetch, Records, StartFetch
from sncli.source.rawpage import Decoder as RawDecoder
from sncli.source.rawpage import decode_records, head

if TYPE_CHECKING:
    from sncli.config import Settings, SourceTable
    from sncli.servicenow.client import DecodedPage, ServiceNowClient
    from sncli.servicenow.readahead import PendingPage

log = logging.getLogger("sncli.source")


def make_fetch(
    client: ServiceNowClient,
    settings: Settings,
    table: SourceTable,
    hi: UpperBound,
    metrics: RunMetrics,
    decoder: RawDecoder | None = None,
) -> StartFetch:
    """The page requests of a table (sent ahead, see :mod:`sncli.servicenow.readahead`).

    With ``decoder`` pages come as RawPages (only for a JSON Kafka output), else as dicts.
    """
    fetched = metrics.source_records.labels(table=table.name)
    fields = list(table.fields) if table.fields is not None else None
    decode: Callable[[bytes], Records] = decoder if decoder is not None else decode_records

    def start(cursor: Cursor, limit: int) -> PendingFetch:
        query = page_query(cursor, hi, ts_field=table.timestamp_field, base_query=table.query)
        pending = client.start_page_decoded(table.name, decode=decode, query=query, fields=fields, limit=limit,
                                            display_value=settings.source.display_value)
        return _Counted(pending, fetched)

    return start


#: The widest request the look past hidden rows makes: rows ServiceNow reads (and its ACLs drop) for one answer.
LOOK_PAST_MAX_ROWS = 100_000


class HiddenRowsError(SncliError):
    """More rows in a row than :data:`LOOK_PAST_MAX_ROWS` are hidden: sncli cannot see past them."""


def make_look_past(
    client: ServiceNowClient,
    settings: Settings,
    table: SourceTable,
    hi: UpperBound,
    decoder: RawDecoder | None = None,
) -> LookPast:
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
    ts = table.timestamp_field
    fields = list(table.fields) if table.fields is not None else None
    decode: Callable[[bytes], Records] = decoder if decoder is not None else decode_records

    def counted(query: str) -> int:
        page = client.list_page(table.name, query=query, fields=["sys_id"], limit=1, no_count=False)
        if page.total is None:
            raise SncliError(f"{table.name}: ServiceNow sent no X-Total-Count; cannot tell rows hidden by ACLs "
                             f"from the end of the table")
        return page.total

    def look_past(cursor: Cursor, limit: int) -> Beyond:
        query = page_query(cursor, hi, ts_field=ts, base_query=table.query)
        width = min(2 * limit, LOOK_PAST_MAX_ROWS)
        while True:
            answer = client.list_page_decoded(table.name, decode=decode, query=query, fields=fields, limit=width,
                                              display_value=settings.source.display_value, no_count=False)
            total = answer.total
            if total is None:
                raise SncliError(f"{table.name}: ServiceNow sent no X-Total-Count; cannot tell rows hidden by ACLs "
                                 f"from the end of the table")
            if len(answer.records):
                kept = head(answer.records, limit)
                end = advance(cursor, kept, ts)
                hidden = max(0, counted(between_query(cursor, end, ts_field=ts, base_query=table.query)) - len(kept))
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

    return look_past


def _warn_hidden(table: str, hidden: int, cursor: Cursor, where: str) -> None:
    if hidden > 0:
        log.warning("%s: %d rows after %s are hidden from the integration user by ACLs and were passed %s; "
                    "they are not exported", table, hidden, show(cursor), where, extra={"table": table})


class _Counted:
    """A page request whose records are counted in ``bridge_source_records_total`` once read."""

    def __init__(self, pending: PendingPage[DecodedPage[Records]], counter: Any) -> None:
        self._pending = pending
        self._counter = counter

    def answered(self, timeout: float) -> bool:
        return self._pending.answered(timeout)

    def ready(self, timeout: float) -> bool:
        return self._pending.ready(timeout)

    def result(self) -> Records:
        records = self._pending.result().records
        self._counter.inc(len(records))
        return records

    def cancel(self) -> None:
        self._pending.cancel()

