"""make_plan: which questions planning asks ServiceNow, and that its windows tile the range."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from typing import Any

from sncli.source.backfill_plan import make_plan


class FakeCounter:
    """Answers the planner's questions from a sorted list of record timestamps, recording them."""

    def __init__(self, stamps: list[int]) -> None:
        self.stamps = sorted(stamps)
        self.calls: list[tuple[str, Any]] = []

    def _count(self, lo: int, hi: int) -> int:
        return bisect.bisect_left(self.stamps, hi) - bisect.bisect_left(self.stamps, lo)

    def count(self, lo: int, hi: int) -> int:
        self.calls.append(("count", (lo, hi)))
        return self._count(lo, hi)

    def count_many(self, intervals: Sequence[tuple[int, int]]) -> list[int]:
        self.calls.append(("count_many", len(intervals)))
        return [self._count(lo, hi) for lo, hi in intervals]

    def edges(self, lo: int, hi: int) -> tuple[int | None, int | None]:
        self.calls.append(("edges", (lo, hi)))
        inside = self.stamps[bisect.bisect_left(self.stamps, lo):bisect.bisect_left(self.stamps, hi)]
        return (inside[0], inside[-1]) if inside else (None, None)


def levels(counter: FakeCounter) -> int:
    return sum(name == "count_many" for name, _ in counter.calls)


def test_planning_asks_both_edges_at_once_and_tiles_the_range() -> None:
    rng = random.Random(4)
    since, until = 1_600_000_000, 1_800_000_000
    counter = FakeCounter([1_735_689_600 + rng.randrange(30 * 86400) for _ in range(20_000)])
    plan = make_plan(counter, since, until, 8)  # type: ignore[arg-type]
    assert [c for c in counter.calls if c[0] == "edges"] == [("edges", (since, until))]
    assert plan[0].lo == since and plan[-1].hi == until
    assert all(a.hi == b.lo for a, b in itertools.pairwise(plan))
    sizes = [w.records or 0 for w in plan]
    assert sum(sizes) == 20_000 and max(sizes) - min(sizes) <= 20_000 // 8 * 0.05


def test_a_last_record_long_before_until_saves_refinement_levels() -> None:
    rng = random.Random(6)
    stamps = [1_735_689_600 + rng.randrange(30 * 86400) for _ in range(20_000)]  # 30 days, 2 years before until
    since, until = 1_600_000_000, 1_800_000_000
    with_last, without = FakeCounter(stamps), FakeCounter(stamps)
    a = make_plan(with_last, since, until, 8, first=min(stamps), last=max(stamps), edges_known=True)  # type: ignore[arg-type]
    b = make_plan(without, since, until, 8, first=min(stamps), last=None, edges_known=True)  # type: ignore[arg-type]
    assert levels(with_last) < levels(without)
    for plan in (a, b):
        sizes = [w.records or 0 for w in plan]
        assert plan[0].lo == since and plan[-1].hi == until and sum(sizes) == 20_000
        assert max(sizes) - min(sizes) <= 20_000 // 8 * 0.05


def test_a_last_record_at_or_after_until_is_not_used() -> None:
    stamps = list(range(1000, 2000))
    counter = FakeCounter(stamps)
    plan = make_plan(counter, 1000, 1500, 4, first=1000, last=1999, edges_known=True)  # type: ignore[arg-type]
    assert sum(w.records or 0 for w in plan) == 500 and plan[-1].hi == 1500


def test_an_empty_range_plans_equal_time_windows() -> None:
    counter = FakeCounter([])
    plan = make_plan(counter, 0, 800, 4)  # type: ignore[arg-type]
    assert [(w.lo, w.hi, w.records) for w in plan] == [(0, 200, 0), (200, 400, 0), (400, 600, 0), (600, 800, 0)]


def test_edges_already_known_save_their_query() -> None:
    rng = random.Random(5)
    stamps = [1_735_689_600 + rng.randrange(30 * 86400) for _ in range(5_000)]
    told, asked = FakeCounter(stamps), FakeCounter(stamps)
    since, until = 1_600_000_000, 1_800_000_000
    known = make_plan(told, since, until, 4, first=min(stamps), last=max(stamps),  # type: ignore[arg-type]
                      edges_known=True)
    probed = make_plan(asked, since, until, 4)  # type: ignore[arg-type]
    assert known == probed
    assert not any(name == "edges" for name, _ in told.calls) and any(name == "edges" for name, _ in asked.calls)
    # The range's count rides along with the first refinement level: no count query of its own.
    assert not any(name == "count" for name, _ in told.calls + asked.calls)


def test_a_known_empty_range_asks_nothing() -> None:
    counter = FakeCounter([5, 6, 7])
    plan = make_plan(counter, 100, 900, 4, first=None, edges_known=True)  # type: ignore[arg-type]
    assert counter.calls == [] and [w.records for w in plan] == [0, 0, 0, 0]
    plan = make_plan(counter, 100, 900, 4, first=950, last=990, edges_known=True)  # type: ignore[arg-type]  # after the range
    assert counter.calls == [] and plan[0].lo == 100 and plan[-1].hi == 900
