"""The compared range and its windows (sncli.verify.spans): tiling, cutting, and the queries ServiceNow reads."""

from __future__ import annotations

from bisect import insort

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sncli.emulator.state import EmulatorState
from sncli.source.windows import to_epoch, to_sn
from sncli.verify.spans import Bound, Span, cut, span_page_query, span_query, whole

IDS = [f"{i:032x}" for i in range(8)]


def _points(lo: int, hi: int) -> list[tuple[int, str]]:
    return [(t, s) for t in range(lo, hi + 1) for s in IDS]


def test_bound_admits_before_its_second_and_its_second_up_to_the_tail() -> None:
    b = Bound(100, IDS[3])
    assert b.admits(99, IDS[7]) and b.admits(100, IDS[3])
    assert not b.admits(100, IDS[4]) and not b.admits(101, IDS[0])
    assert not Bound(100).admits(100, IDS[0])  # --until is excluded


def test_whole_is_the_range_and_empty_past_the_bound() -> None:
    assert whole(10, Bound(20, IDS[1])) == Span(10, 20, IDS[1])
    empty = whole(30, Bound(20))
    assert not any(empty.admits(t, s) for t, s in _points(0, 40))
    assert not any(whole(20, Bound(20)).admits(t, s) for t, s in _points(0, 40))


def test_a_span_cannot_end_before_it_starts() -> None:
    with pytest.raises(ValueError):
        Span(5, 4)


@settings(max_examples=300, deadline=None)
@given(
    lo=st.integers(0, 30),
    width=st.integers(0, 30),
    tail=st.sampled_from(["", *IDS]),
    times=st.lists(st.integers(0, 70), max_size=60),
    parts=st.integers(1, 9),
)
def test_cut_tiles_the_span_exactly_in_order(lo: int, width: int, tail: str, times: list[int], parts: int) -> None:
    span = Span(lo, lo + width, tail)
    children = cut(span, sorted(times), parts)
    assert 1 <= len(children) <= max(parts, 2)
    for t, s in _points(0, 70):
        inside = [c for c in children if c.admits(t, s)]
        assert len(inside) == (1 if span.admits(t, s) else 0), (t, s, children)
    assert [c.lo for c in children] == sorted(c.lo for c in children)
    if span.cuttable and parts >= 2:
        assert len(children) >= 2  # every cuttable span makes progress


def test_cut_follows_the_kafka_quantiles() -> None:
    times = sorted([10] * 50 + [20] * 50 + [30] * 50 + [40] * 50)
    assert [(c.lo, c.hi) for c in cut(Span(0, 100), times, 4)] == [(0, 20), (20, 30), (30, 40), (40, 100)]


def test_a_one_second_span_is_cut_only_from_its_tail() -> None:
    assert cut(Span(5, 6), [5, 5, 5], 8) == [Span(5, 6)]
    assert cut(Span(5, 6, IDS[2]), [], 8) == [Span(5, 6), Span(6, 6, IDS[2])]


# ----------------------------------------------------------------------- the queries, read by the emulator


def _state(points: list[tuple[int, str]]) -> EmulatorState:
    state = EmulatorState()
    state.bulk_insert("incident", [
        {"sys_id": s, "sys_updated_on": to_sn(t), "active": "true" if i % 3 else "false"}
        for i, (t, s) in enumerate(points)
    ])
    return state


SEEDED = [(1_700_000_000 + t, f"{k:02x}{t:030x}") for t in range(0, 12) for k in range(1 + t % 5)]
TAIL1, TAIL2 = "01" + "f" * 30, "02" + "f" * 30  # the first two (three) records of a second


@pytest.mark.parametrize("span", [
    Span(1_700_000_002, 1_700_000_007),
    Span(1_700_000_002, 1_700_000_007, TAIL1),
    Span(1_700_000_007, 1_700_000_007, TAIL2),
    Span(1_700_000_000, 1_700_000_012),
    Span(1_700_000_005, 1_700_000_005),
])
@pytest.mark.parametrize("base", [None, "active=true"])
@pytest.mark.parametrize("page", [1, 2, 7, 100])
def test_counting_and_keyset_paging_select_exactly_the_span(span: Span, base: str | None, page: int) -> None:
    state = _state(SEEDED)
    records = {r["sys_id"] + r["sys_updated_on"]: r for r in state.records("incident")}
    expected = sorted(
        (r["sys_updated_on"], r["sys_id"]) for r in records.values()
        if (base is None or r["active"] == "true")
        and span.admits(to_epoch(r["sys_updated_on"]), r["sys_id"])
    )
    assert state.count_matching("incident", span_query(span, ts_field="sys_updated_on", base_query=base)) == len(
        expected)
    got: list[tuple[str, str]] = []
    after: tuple[int, str] | None = None
    for _ in range(1000):
        query = span_page_query(span, after, ts_field="sys_updated_on", base_query=base)
        rows = state.select("incident", query, limit=page, offset=0, want_count=False).records
        if not rows:
            break
        for row in rows:
            insort(got, row.key)
            after = (to_epoch(row.key[0]), row.key[1])
    assert got == expected
