"""Keyset cursor: the exact query text, and (property) that paging with it is lossless.

The property test evaluates the generated ``sysparm_query`` text with a small
evaluator of the encoded-query subset the cursor emits, so it checks the real
strings, not a parallel model of them. The same property runs against the
emulator in tests/integration/test_source_cursor_emulator.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sncli.servicenow.query import QueryError, split_encoded
from sncli.source.cursor import (
    Cursor,
    CursorOrderError,
    CursorValueError,
    UpperBound,
    advance,
    between_query,
    cursor_of,
    field_value,
    page_query,
    past_bound,
    range_query,
    upper_bound,
)

TS = "sys_updated_on"
A = "a" * 32


# --------------------------------------------------------------------------- exact text


def test_first_page_includes_start_and_caps_at_hi() -> None:
    q = page_query(Cursor.at_start("2024-01-01 00:00:00"), UpperBound("2024-01-02 00:00:00"), ts_field=TS)
    assert q == (
        "sys_updated_on>=2024-01-01 00:00:00^sys_updated_on<=2024-01-02 00:00:00"
        "^ORDERBYsys_updated_on^ORDERBYsys_id"
    )


def test_keyset_page_has_two_clauses_and_never_an_offset() -> None:
    q = page_query(Cursor("2024-01-01 00:00:05", A), UpperBound("2024-01-02 00:00:00"), ts_field=TS)
    assert q == (
        f"sys_updated_on=2024-01-01 00:00:05^sys_id>{A}"
        "^NQsys_updated_on>2024-01-01 00:00:05^sys_updated_on<=2024-01-02 00:00:00"
        "^ORDERBYsys_updated_on^ORDERBYsys_id"
    )
    assert "offset" not in q.lower()


def test_exclusive_upper_bound_for_windows() -> None:
    q = page_query(Cursor("2024-01-01 00:00:05", A), UpperBound("2024-01-03 00:00:00", inclusive=False),
                   ts_field="sys_created_on")
    assert "^NQsys_created_on>2024-01-01 00:00:05^sys_created_on<2024-01-03 00:00:00^" in q
    assert q.endswith("^ORDERBYsys_created_on^ORDERBYsys_id")


def test_base_query_is_anded_into_both_clauses() -> None:
    q = page_query(Cursor("2024-01-01 00:00:05", A), UpperBound("2024-01-02 00:00:00"), ts_field=TS,
                   base_query="active=true^priority=1")
    clauses, order = split_encoded(q)
    assert order == ["ORDERBYsys_updated_on", "ORDERBYsys_id"]
    assert len(clauses) == 2
    assert all(c.startswith("active=true^priority=1^") for c in clauses)


def test_base_query_with_its_own_nq_is_distributed() -> None:
    q = page_query(Cursor("2024-01-01 00:00:05", A), UpperBound("2024-01-02 00:00:00"), ts_field=TS,
                   base_query="active=true^NQpriority=1^ORDERBYnumber")
    clauses, order = split_encoded(q)
    # (active OR priority) AND (clause1 OR clause2) = four clauses, each restricted.
    assert len(clauses) == 4
    assert sum(c.startswith("active=true^") for c in clauses) == 2
    assert sum(c.startswith("priority=1^") for c in clauses) == 2
    assert order == ["ORDERBYsys_updated_on", "ORDERBYsys_id"]  # the base's ORDERBY is dropped


def test_a_cursor_value_with_a_caret_is_refused_so_it_cannot_widen_the_query() -> None:
    with pytest.raises(QueryError, match="may not contain"):
        page_query(Cursor("2024-01-01 00:00:05", "x^NQactive=false"), UpperBound("2024-01-02 00:00:00"),
                   ts_field=TS)


def test_bad_timestamp_field_is_refused() -> None:
    with pytest.raises(QueryError):
        page_query(Cursor.at_start("2024-01-01 00:00:00"), UpperBound("2024-01-02 00:00:00"),
                   ts_field="sys_updated_on^NQactive=true")


def test_range_query_has_no_ordering() -> None:
    q = range_query("2024-01-01 00:00:00", UpperBound("2024-01-02 00:00:00", inclusive=False), ts_field=TS,
                    base_query="active=true")
    assert q == "active=true^sys_updated_on>=2024-01-01 00:00:00^sys_updated_on<2024-01-02 00:00:00"


def test_upper_bound_is_server_time_minus_lag_in_utc() -> None:
    server = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert upper_bound(server, 2) == UpperBound("2024-03-01 11:59:58", inclusive=True)
    other_zone = server.astimezone(timezone(timedelta(hours=5)))
    assert upper_bound(other_zone, 0).value == "2024-03-01 12:00:00"
    assert upper_bound(datetime(2024, 3, 1, 0, 0, 1), 2).value == "2024-02-29 23:59:59"  # naive = UTC


def test_upper_bound_admits() -> None:
    assert UpperBound("2024-01-01 00:00:00").admits("2024-01-01 00:00:00")
    assert not UpperBound("2024-01-01 00:00:00", inclusive=False).admits("2024-01-01 00:00:00")


# --------------------------------------------------------------------------- advancing


def _rec(ts: str, sys_id: str, field: str = TS) -> dict[str, Any]:
    return {field: ts, "sys_id": sys_id}


def test_advance_moves_to_the_last_record() -> None:
    page = [_rec("2024-01-01 00:00:00", "a" * 32), _rec("2024-01-01 00:00:00", "b" * 32),
            _rec("2024-01-01 00:00:01", "0" * 32)]
    assert advance(Cursor.at_start("2024-01-01 00:00:00"), page, TS) == Cursor("2024-01-01 00:00:01", "0" * 32)


def test_advance_of_an_empty_page_keeps_the_cursor() -> None:
    cur = Cursor("2024-01-01 00:00:00", A)
    assert advance(cur, [], TS) is cur


def test_advance_refuses_a_page_out_of_order() -> None:
    page = [_rec("2024-01-01 00:00:01", "b" * 32), _rec("2024-01-01 00:00:01", "a" * 32)]
    with pytest.raises(CursorOrderError, match="out of keyset order"):
        advance(Cursor.at_start("2024-01-01 00:00:00"), page, TS)


def test_advance_refuses_a_page_that_repeats_the_cursor() -> None:
    cur = Cursor("2024-01-01 00:00:01", A)
    with pytest.raises(CursorOrderError):
        advance(cur, [_rec("2024-01-01 00:00:01", A)], TS)


def test_advance_refuses_a_timestamp_that_cannot_be_stored() -> None:
    with pytest.raises(CursorValueError, match="not 'YYYY-MM-DD HH:MM:SS'"):
        advance(Cursor.at_start("2024-01-01 00:00:00"), [_rec("2024-01-02", A, "u_due_date")], "u_due_date")


def test_display_value_all_fields_are_unwrapped() -> None:
    rec = {TS: {"value": "2024-01-01 00:00:00", "display_value": "01/01/2024"}, "sys_id": {"value": A}}
    assert cursor_of(rec, TS) == Cursor("2024-01-01 00:00:00", A)
    assert field_value({}, "x") == ""


def test_cursor_ordering_is_keyset_ordering() -> None:
    assert Cursor("2024-01-01 00:00:00", "") < Cursor("2024-01-01 00:00:00", A) < Cursor("2024-01-01 00:00:01", "")


# --------------------------------------------------------------------------- property: lossless paging


def _matches(condition: str, record: dict[str, str]) -> bool:
    for op in (">=", "<=", ">", "<", "="):
        field, sep, value = condition.partition(op)
        if sep and field.isidentifier():
            actual = record[field]
            value = value.replace("^^", "^")
            return {
                ">=": actual >= value, "<=": actual <= value, ">": actual > value,
                "<": actual < value, "=": actual == value,
            }[op]
    raise AssertionError(f"unexpected condition {condition!r}")


def run_query(table: list[dict[str, str]], query: str, limit: int) -> list[dict[str, str]]:
    """Evaluate the encoded-query subset the cursor emits (AND, ^NQ, ORDERBY) like ServiceNow does."""
    clauses, order = split_encoded(query)
    fields = [o.removeprefix("ORDERBY") for o in order]

    def clause_ok(clause: str, rec: dict[str, str]) -> bool:
        return all(_matches(c, rec) for c in clause.split("^"))

    hits = [r for r in table if any(clause_ok(c, r) for c in clauses)]
    hits.sort(key=lambda r: tuple(r[f] for f in fields))
    return hits[:limit]


@st.composite
def tables(draw: st.DrawFn) -> list[dict[str, str]]:
    base = datetime(2024, 1, 1, tzinfo=UTC)
    n = draw(st.integers(0, 60))
    # Few distinct seconds, so many records share one (bulk updates).
    seconds = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    ids = draw(st.lists(st.text("0123456789abcdef", min_size=32, max_size=32), min_size=n, max_size=n,
                        unique=True))
    return [
        {TS: (base + timedelta(seconds=s)).strftime("%Y-%m-%d %H:%M:%S"), "sys_id": i}
        for s, i in zip(seconds, ids, strict=True)
    ]


@settings(max_examples=300, deadline=None)
@given(table=tables(), page_size=st.integers(1, 12), crash_after=st.integers(0, 40),
       hi_offset=st.integers(0, 6), base_filter=st.booleans())
def test_paging_yields_every_record_exactly_once_in_order(
    table: list[dict[str, str]], page_size: int, crash_after: int, hi_offset: int, base_filter: bool
) -> None:
    start = "2024-01-01 00:00:00"
    hi = UpperBound((datetime(2024, 1, 1) + timedelta(seconds=hi_offset)).strftime("%Y-%m-%d %H:%M:%S"))
    base = "sys_id>5" if base_filter else None
    expected = sorted(
        (r for r in table if r[TS] <= hi.value and (not base_filter or r["sys_id"] > "5")),
        key=lambda r: (r[TS], r["sys_id"]),
    )
    stored: Cursor | None = None  # what the offset store holds
    delivered: list[tuple[str, str]] = []
    pages = 0
    crashed = False
    while True:
        cursor = stored or Cursor.at_start(start)
        page = run_query(table, page_query(cursor, hi, ts_field=TS, base_query=base), page_size)
        if not page:
            break
        delivered.extend((r[TS], r["sys_id"]) for r in page)
        pages += 1
        if pages == crash_after and not crashed:
            crashed = True  # killed after producing, before storing: the page is re-sent once
            continue
        stored = advance(cursor, page, TS)
    unique = list(dict.fromkeys(delivered))
    assert unique == [(r[TS], r["sys_id"]) for r in expected]
    assert len(delivered) - len(unique) <= page_size  # at most one page re-sent after the crash
    if expected:
        assert stored == Cursor(expected[-1][TS], expected[-1]["sys_id"])


@settings(max_examples=300, deadline=None)
@given(table=tables(), picks=st.tuples(st.integers(0, 59), st.integers(0, 59)), lo_at_start=st.booleans(),
       base_filter=st.booleans())
def test_between_query_holds_exactly_the_records_after_lo_up_to_hi(
    table: list[dict[str, str]], picks: tuple[int, int], lo_at_start: bool, base_filter: bool
) -> None:
    # What the look past hidden rows counts: (lo, hi] in keyset order, hi a record, lo a record or a start.
    keys = sorted((r[TS], r["sys_id"]) for r in table)
    if not keys:
        return
    first, second = sorted(p % len(keys) for p in picks)
    lo = Cursor.at_start(keys[first][0]) if lo_at_start else Cursor(*keys[first])
    hi = Cursor(*keys[second])
    base = "sys_id>5" if base_filter else None
    expected = [k for k in keys if (lo.timestamp, lo.sys_id) < k <= (hi.timestamp, hi.sys_id)
                and (not base_filter or k[1] > "5")]
    found = run_query(table, between_query(lo, hi, ts_field=TS, base_query=base) + f"^ORDERBY{TS}^ORDERBYsys_id",
                      10_000)
    assert [(r[TS], r["sys_id"]) for r in found] == expected


def test_past_bound_is_after_every_record_within_the_bound() -> None:
    # Inclusive (a poll's HI): the next second, nothing of it consumed; exclusive (a window): the bound itself.
    assert past_bound(UpperBound("2024-01-01 23:59:59")) == Cursor("2024-01-02 00:00:00", "")
    assert past_bound(UpperBound("2024-01-02 00:00:00", inclusive=False)) == Cursor("2024-01-02 00:00:00", "")


# --------------------------------------------------------------------------- advance: fast path == the walk

_SECONDS = st.sampled_from(["2024-01-01 00:00:00", "2024-01-01 00:00:01", "2024-01-02 10:00:00", "2024-01-02"])
_IDS = st.sampled_from(["", "0" * 32, A, "b" * 32, "f" * 32])


def _walk(cursor: Cursor, records: list[dict[str, Any]], ts: str) -> Cursor | str:
    """The definition: every (ts, sys_id) strictly after the previous one; the last must be a storable time."""
    prev = (cursor.timestamp, cursor.sys_id)
    for record in records:
        key = (field_value(record, ts), field_value(record, "sys_id"))
        if not key > prev:
            return "order"
        prev = key
    if len(prev[0]) != 19:
        return "value"
    return Cursor(*prev)


@st.composite
def _pages(draw: st.DrawFn) -> list[dict[str, Any]]:
    keys = draw(st.lists(st.tuples(_SECONDS, _IDS), max_size=12))
    if draw(st.booleans()):
        keys = sorted(set(keys))  # mostly well-formed pages
    wrap = draw(st.sampled_from(["plain", "display_value_all", "missing"]))
    page: list[dict[str, Any]] = []
    for ts, sys_id in keys:
        if wrap == "display_value_all" and draw(st.booleans()):
            page.append({TS: {"value": ts, "display_value": "x"}, "sys_id": {"value": sys_id}})
        elif wrap == "missing" and draw(st.booleans()):
            page.append({TS: ts})
        else:
            page.append({TS: ts, "sys_id": sys_id})
    return page


@settings(max_examples=400, deadline=None)
@given(page=_pages(), start=st.tuples(_SECONDS, _IDS))
def test_advance_agrees_with_the_record_by_record_walk(page: list[dict[str, Any]], start: tuple[str, str]) -> None:
    cursor = Cursor(*start)
    expected = _walk(cursor, page, TS)
    if not page:
        assert advance(cursor, page, TS) is cursor
    elif expected == "order":
        with pytest.raises(CursorOrderError):
            advance(cursor, page, TS)
    elif expected == "value":
        with pytest.raises(CursorValueError):
            advance(cursor, page, TS)
    else:
        assert advance(cursor, page, TS) == expected
