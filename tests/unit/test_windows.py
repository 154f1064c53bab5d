"""Backfill windows: tile the range exactly, balance by counts, deterministic."""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Sequence
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sncli.source.windows import (
    Window,
    equal_time_windows,
    parse_range_id,
    parse_window_spec,
    plan_windows,
    range_id,
    to_epoch,
    to_sn,
    windows_from_boundaries,
)


class Counter:
    """count_many over a sorted list of record timestamps; remembers how many queries it answered."""

    def __init__(self, stamps: Sequence[int]) -> None:
        self.stamps = sorted(stamps)
        self.queries = 0
        self.batches = 0
        self.biggest_batch = 0

    def count(self, lo: int, hi: int) -> int:
        return bisect_left(self.stamps, hi) - bisect_left(self.stamps, lo)

    def __call__(self, intervals: Sequence[tuple[int, int]]) -> list[int]:
        self.queries += len(intervals)
        self.batches += 1
        self.biggest_batch = max(self.biggest_batch, len(intervals))
        return [self.count(lo, hi) for lo, hi in intervals]


def assert_tiles(windows: list[Window], since: int, until: int, n: int) -> None:
    assert len(windows) == n
    assert [w.index for w in windows] == list(range(n))
    assert all(w.count == n for w in windows)
    assert windows[0].lo == since and windows[-1].hi == until
    for a, b in pairwise(windows):
        assert a.hi == b.lo  # no gap, no overlap
    assert all(w.lo <= w.hi for w in windows)


@st.composite
def datasets(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    since = draw(st.integers(0, 10_000))
    until = since + draw(st.integers(0, 100_000))
    hot = draw(st.lists(st.integers(since, max(since, until - 1)), max_size=5))
    stamps = draw(st.lists(st.integers(since - 50, until + 50), max_size=300))
    stamps += [h for h in hot for _ in range(draw(st.integers(0, 50)))]  # bulk updates: many in one second
    return since, until, stamps


@settings(max_examples=300, deadline=None)
@given(data=datasets(), n=st.integers(1, 12), fanout=st.integers(2, 16), tol=st.sampled_from([0.0, 0.02, 0.2]),
       narrow=st.booleans())
def test_windows_tile_the_range_and_every_record_is_in_exactly_one(
    data: tuple[int, int, list[int]], n: int, fanout: int, tol: float, narrow: bool
) -> None:
    since, until, stamps = data
    counter = Counter(stamps)
    in_range = [s for s in stamps if since <= s < until]
    first = min(in_range) if narrow and in_range else None
    last = max(in_range) if narrow and in_range else None
    windows = plan_windows(since, until, n, counter, fanout=fanout, tolerance=tol, first=first, last=last)
    assert_tiles(windows, since, until, n)
    for s in in_range:
        assert sum(w.lo <= s < w.hi for w in windows) == 1
    assert sum(counter.count(w.lo, w.hi) for w in windows) == len(in_range)
    if n > 1 and until > since:  # (a single window is not counted while planning)
        assert [w.records for w in windows] == [counter.count(w.lo, w.hi) for w in windows]
    assert counter.biggest_batch <= 32  # one round trip per level
    # Deterministic: the same data gives the same windows.
    assert plan_windows(since, until, n, Counter(stamps), fanout=fanout, tolerance=tol, first=first,
                        last=last) == windows


@settings(max_examples=200, deadline=None)
@given(data=datasets(), n=st.integers(2, 10))
def test_exact_split_is_balanced_up_to_one_second(data: tuple[int, int, list[int]], n: int) -> None:
    since, until, stamps = data
    counter = Counter(stamps)
    in_range = [s for s in stamps if since <= s < until]
    windows = plan_windows(since, until, n, counter, tolerance=0.0)
    total = len(in_range)
    biggest_second = max((in_range.count(s) for s in set(in_range)), default=0)
    cum = 0
    for k, w in enumerate(windows[:-1], start=1):
        cum += counter.count(w.lo, w.hi)
        target = round(k * total / n)
        assert target <= cum + 1 or total == 0  # a boundary is never before its quantile...
        assert cum - target <= biggest_second  # ...and overshoots by at most one second's records


def test_skewed_table_is_split_by_counts_not_time() -> None:
    # Ten years of data, 90 % of it in the last month.
    rng = random.Random(7)
    start, end = to_epoch("2014-01-01 00:00:00"), to_epoch("2024-01-01 00:00:00")
    month = end - 30 * 86400
    stamps = [rng.randrange(start, month) for _ in range(1_000)] + [rng.randrange(month, end) for _ in range(9_000)]
    counter = Counter(stamps)
    windows = plan_windows(start, end, 8, counter, first=min(stamps), last=max(stamps))
    counts = [counter.count(w.lo, w.hi) for w in windows]
    assert sum(counts) == 10_000
    assert max(counts) <= 1250 * 1.05 and min(counts) >= 1250 * 0.95
    equal = [counter.count(w.lo, w.hi) for w in equal_time_windows(start, end, 8)]
    assert max(equal) > 8_000  # what an equal-time split would have done
    assert counter.batches <= 8  # one parallel batch per refinement level


def test_query_budget_for_a_large_uniform_table() -> None:
    rng = random.Random(1)
    stamps = [rng.randrange(0, 86400 * 365) for _ in range(200_000)]
    counter = Counter(stamps)
    plan_windows(0, 86400 * 365, 8, counter, total=len(stamps))
    assert counter.queries <= 200


def test_all_records_in_one_second_go_to_one_window() -> None:
    stamps = [100] * 50
    windows = plan_windows(0, 1000, 4, Counter(stamps))
    assert_tiles(windows, 0, 1000, 4)
    assert sum(w.lo <= 100 < w.hi for w in windows) == 1


def test_counts_that_move_between_queries_still_tile() -> None:
    rng = random.Random(3)

    def noisy(intervals: Sequence[tuple[int, int]]) -> list[int]:
        return [rng.randrange(0, 500) for _ in intervals]

    windows = plan_windows(0, 100_000, 6, noisy, total=1_000)
    assert_tiles(windows, 0, 100_000, 6)


def test_empty_range_and_no_records() -> None:
    assert_tiles(plan_windows(50, 50, 3, Counter([])), 50, 50, 3)
    windows = plan_windows(0, 90, 3, Counter([]))
    assert [(w.lo, w.hi) for w in windows] == [(0, 30), (30, 60), (60, 90)]
    assert plan_windows(0, 90, 1, Counter([5])) == [Window(0, 1, 0, 90)]


def test_count_many_must_answer_every_interval() -> None:
    with pytest.raises(ValueError, match="answered"):
        plan_windows(0, 1000, 4, lambda q: [10] if len(q) == 1 else [], total=None)


def test_windows_from_boundaries_clamps() -> None:
    ws = windows_from_boundaries(10, 20, [25, 5])
    assert [(w.lo, w.hi) for w in ws] == [(10, 20), (20, 20), (20, 20)]
    with pytest.raises(ValueError):
        windows_from_boundaries(20, 10, [])


def test_window_spec() -> None:
    assert parse_window_spec("2/8") == (2, 8)
    assert parse_window_spec(" 0 / 1 ") == (0, 1)
    for bad in ("8/8", "1/0", "a/b", "3", "-1/4"):
        with pytest.raises(ValueError):
            parse_window_spec(bad)


def test_range_id_round_trip_and_time_text() -> None:
    since, until = to_epoch("2024-01-01 00:00:00"), to_epoch("2024-02-01 12:30:00")
    rid = range_id(since, until)
    assert rid == "20240101T000000-20240201T123000"
    assert parse_range_id(rid) == (since, until)
    assert parse_range_id(rid + ".parquet") == (since, until)
    assert parse_range_id("nope") is None
    assert to_sn(since) == "2024-01-01 00:00:00"
    assert Window(1, 4, since, until).label == "1of4"
    assert Window(1, 4, since, until).hi_text == "2024-02-01 12:30:00"


@settings(max_examples=200, deadline=None)
@given(data=datasets(), n=st.integers(2, 12), narrow=st.booleans())
def test_the_total_is_counted_with_the_first_level_at_no_extra_round_trip(
    data: tuple[int, int, list[int]], n: int, narrow: bool
) -> None:
    since, until, stamps = data
    in_range = [s for s in stamps if since <= s < until]
    first = min(in_range) if narrow and in_range else None
    lo = since if first is None else first
    told, asked = Counter(stamps), Counter(stamps)
    given_total = plan_windows(since, until, n, told, first=first, total=told.count(lo, until))
    counted = plan_windows(since, until, n, asked, first=first)
    assert counted == given_total  # the same windows, the same record counts
    assert [w.records for w in counted] == [w.records for w in given_total]
    assert asked.batches <= max(1, told.batches)  # the total rode along with the first level
    assert asked.biggest_batch <= 32


def test_a_uniform_year_plans_in_three_round_trips_with_the_total_unknown() -> None:
    rng = random.Random(2)
    stamps = [rng.randrange(0, 86400 * 365) for _ in range(200_000)]
    counter = Counter(stamps)
    windows = plan_windows(0, 86400 * 365, 8, counter, first=min(stamps))
    assert counter.batches == 3 and sum(w.records or 0 for w in windows) == 200_000
