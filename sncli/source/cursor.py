"""Keyset paging over ``(timestamp, sys_id)``: the whole source guarantee in one pure module.

Why keyset and never ``sysparm_offset``: an offset counts rows of a result that
changes while we page (a record updated between two pages moves to the end),
so offset paging skips and repeats records. A keyset page asks for "the records
after the last one I have", which stays right however the table changes.

The position is a :class:`Cursor` = the ``(timestamp, sys_id)`` of the last
record Kafka acknowledged. The next page is everything strictly after it, in
``(timestamp, sys_id)`` order, up to an upper bound::

    ts=T^sys_id>S  ^NQ  ts>T^ts<=HI      ORDERBYts^ORDERBYsys_id

The first clause finishes the second ``T`` (any number of records may share
one second: bulk updates), the second continues after it. ``HI`` is the
ServiceNow server time minus a safety lag, fixed for a whole cycle, so records
still being written "now" are left for the next cycle and a cycle always ends.

A cursor with an empty ``sys_id`` means "nothing at ``T`` consumed yet": the
page is ``ts>=T^ts<=HI`` (a table's configured ``start`` is such a cursor).

The table's base query is ANDed into *each* clause (distributed over its own
``^NQ`` clauses too, via :func:`sncli.servicenow.query.and_each_clause`):
``base^clause1^NQclause2`` would restrict only the first clause.

A short page is not the end (ACLs remove records from a page after the limit
is applied), and an empty page is the end only when ServiceNow says nothing
remains (see :mod:`sncli.source.poller`): the look past a run of hidden rows
counts them with :func:`between_query` and may move the cursor to
:func:`past_bound` when the rest of the range is all hidden.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from operator import lt
from typing import Any

from sncli.servicenow.query import Query, and_each_clause, check_field
from sncli.source.rawpage import column

SN_FORMAT = "%Y-%m-%d %H:%M:%S"


class CursorOrderError(ValueError):
    """A page did not come back in keyset order; trusting it could skip records."""


class CursorValueError(ValueError):
    """A record's timestamp is not 'YYYY-MM-DD HH:MM:SS': it cannot be a cursor (nor be stored as one)."""


_SN_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")


@dataclass(frozen=True, slots=True, order=True)
class Cursor:
    """The position after which the next page starts (ordering = keyset ordering)."""

    timestamp: str  # 'YYYY-MM-DD HH:MM:SS' UTC
    sys_id: str = ""  # "" = nothing at `timestamp` was consumed yet

    @classmethod
    def at_start(cls, start: str) -> Cursor:
        """Before every record at or after ``start`` (records exactly at ``start`` are included)."""
        return cls(start, "")


@dataclass(frozen=True, slots=True)
class UpperBound:
    """Where a run stops: ``ts<=value`` (a poll cycle's HI) or ``ts<value`` (a backfill window's end)."""

    value: str
    inclusive: bool = True

    def admits(self, timestamp: str) -> bool:
        return timestamp <= self.value if self.inclusive else timestamp < self.value


def upper_bound(server_time: datetime, safety_lag_seconds: int) -> UpperBound:
    """``HI`` for a poll cycle: server time (HTTP ``Date``) minus the safety lag, inclusive."""
    if server_time.tzinfo is None:
        server_time = server_time.replace(tzinfo=UTC)
    moment = server_time.astimezone(UTC) - timedelta(seconds=safety_lag_seconds)
    return UpperBound(moment.strftime(SN_FORMAT), inclusive=True)


def _hi(query: Query, ts_field: str, hi: UpperBound) -> Query:
    return query.le(ts_field, hi.value) if hi.inclusive else query.lt(ts_field, hi.value)


def page_query(cursor: Cursor, hi: UpperBound, *, ts_field: str, base_query: str | None = None) -> str:
    """The ``sysparm_query`` of the page after ``cursor``, up to ``hi``, in keyset order."""
    check_field(ts_field)
    if cursor.sys_id:
        clauses = [
            Query().eq(ts_field, cursor.timestamp).gt("sys_id", cursor.sys_id),
            _hi(Query().gt(ts_field, cursor.timestamp), ts_field, hi),
        ]
    else:
        clauses = [_hi(Query().ge(ts_field, cursor.timestamp), ts_field, hi)]
    conditions = and_each_clause(base_query, clauses)
    return f"{conditions}^ORDERBY{ts_field}^ORDERBYsys_id"


def between_query(lo: Cursor, hi: Cursor, *, ts_field: str, base_query: str | None = None) -> str:
    """Every record after ``lo`` and up to ``hi`` included, in keyset terms (no ordering): for counting.

    ``hi`` is a record's cursor (its sys_id is not empty).
    """
    check_field(ts_field)
    if hi.timestamp == lo.timestamp:
        same = Query().eq(ts_field, lo.timestamp)
        if lo.sys_id:
            same.gt("sys_id", lo.sys_id)
        return and_each_clause(base_query, [same.le("sys_id", hi.sys_id)])
    first = Query().eq(ts_field, lo.timestamp).gt("sys_id", lo.sys_id) if lo.sys_id else None
    middle = (Query().gt(ts_field, lo.timestamp) if lo.sys_id else Query().ge(ts_field, lo.timestamp))
    clauses = [first] if first is not None else []
    clauses += [middle.lt(ts_field, hi.timestamp), Query().eq(ts_field, hi.timestamp).le("sys_id", hi.sys_id)]
    return and_each_clause(base_query, clauses)


def past_bound(hi: UpperBound) -> Cursor:
    """The cursor after every record within ``hi``: ``(hi, "")``, or the next second when ``hi`` is inclusive."""
    if not hi.inclusive:
        return Cursor.at_start(hi.value)
    return Cursor.at_start(format_sn_time(parse_sn_time(hi.value) + timedelta(seconds=1)))


def range_query(lo: str, hi: UpperBound, *, ts_field: str, base_query: str | None = None) -> str:
    """Every record with ``lo <= ts`` below ``hi`` (no ordering): used for counting windows."""
    check_field(ts_field)
    return and_each_clause(base_query, [_hi(Query().ge(ts_field, lo), ts_field, hi)])


def field_value(record: dict[str, Any], name: str) -> str:
    """A field as a plain string; with ``display_value=all`` a field is ``{"value", "display_value"}``."""
    value = record.get(name)
    if isinstance(value, dict):
        value = value.get("value")
    return "" if value is None else str(value)


def cursor_of(record: dict[str, Any], ts_field: str) -> Cursor:
    """The cursor that points just after ``record``."""
    return Cursor(field_value(record, ts_field), field_value(record, "sys_id"))


def advance(cursor: Cursor, records: Sequence[dict[str, Any]], ts_field: str) -> Cursor:
    """The cursor after a page, checking the page really is in keyset order after ``cursor``.

    ServiceNow sorts as asked, so this never fires against a healthy instance; it
    guards against a proxy or customisation that drops the ORDERBY, in which case
    moving to "the last record" could skip everything between. Cost: one tuple
    comparison per record.
    """
    if not records:
        return cursor
    last = _last_if_ordered(cursor, records, ts_field)
    if last is not None:
        return _checked(last, ts_field)
    # Not plain strings, or out of order: the record-by-record walk unwraps and names the culprit.
    prev = (cursor.timestamp, cursor.sys_id)
    for record in records:
        key = (field_value(record, ts_field), field_value(record, "sys_id"))
        if not key > prev:
            raise CursorOrderError(
                f"page out of keyset order: {key[0]} {key[1] or '(no sys_id)'} came after "
                f"{prev[0]} {prev[1] or '(start)'}; refusing to move the cursor"
            )
        prev = key
    return _checked(prev, ts_field)


def _last_if_ordered(cursor: Cursor, records: Sequence[dict[str, Any]], ts_field: str) -> tuple[str, str] | None:
    """The last ``(ts, sys_id)`` when every key is a plain string pair in strictly increasing order, else None.

    The same check as the walk in :func:`advance`, with C-level loops only (a page
    is 1 000 to 10 000 records and this runs for each).
    """
    stamps = column(records, ts_field)
    ids = column(records, "sys_id")
    if set(map(type, stamps)) != {str} or set(map(type, ids)) != {str}:
        return None
    keys = list(zip(stamps, ids, strict=True))
    if not keys[0] > (cursor.timestamp, cursor.sys_id) or not all(map(lt, keys, islice(keys, 1, None))):
        return None
    return keys[-1]


def _checked(last: tuple[str, str], ts_field: str) -> Cursor:
    if not _SN_TIMESTAMP.fullmatch(last[0]):
        raise CursorValueError(
            f"{ts_field} of record {last[1] or '(no sys_id)'} is {last[0]!r}, not 'YYYY-MM-DD HH:MM:SS': "
            f"it cannot be a cursor (use a date-time field as timestamp_field, and display_value false or all)"
        )
    return Cursor(last[0], last[1])


def parse_sn_time(value: str) -> datetime:
    """'YYYY-MM-DD HH:MM:SS' (UTC) as an aware datetime."""
    return datetime.strptime(value, SN_FORMAT).replace(tzinfo=UTC)


def format_sn_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(SN_FORMAT)
