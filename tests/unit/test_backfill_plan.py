"""make_plan: which questions planning asks ServiceNow, and that its windows tile the range."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from typing import Any

from sncli.source.backfill import make_plan


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

    def edge(self, lo: int, hi: int, *, last: bool) -> int | None:
        self.calls.append(("edge", last))
        inside = self.stamps[bisect.bisect_left(self.stamps, lo):bisect.bisect_left(self.stamps, hi)]
        if not inside:
            return None
        return inside[-1] if last else inside[0]


def test_planning_never_sorts_the_range_descending_and_tiles_it() -> None:
    rng = random.Random(4)
    since, until = 1_600_000_000, 1_800_000_000
    counter = FakeCounter([1_735_689_600 + rng.randrange(30 * 86400) for _ in range(20_000)])
    plan = make_plan(counter, since, until, 8)  # type: ignore[arg-type]
    assert ("edge", True) not in counter.calls and ("edge", False) in counter.calls
    assert plan[0].lo == since and plan[-1].hi == until
    assert all(a.hi == b.lo for a, b in itertools.pairwise(plan))
    sizes = [w.records or 0 for w in plan]
    assert sum(sizes) == 20_000 and max(sizes) - min(sizes) <= 20_000 // 8 * 0.05


def test_an_empty_range_plans_equal_time_windows() -> None:
    counter = FakeCounter([])
    plan = make_plan(counter, 0, 800, 4)  # type: ignore[arg-type]
    assert [(w.lo, w.hi, w.records) for w in plan] == [(0, 200, 0), (200, 400, 0), (400, 600, 0), (600, 800, 0)]


def test_a_first_record_already_known_saves_its_query() -> None:
    rng = random.Random(5)
    stamps = [1_735_689_600 + rng.randrange(30 * 86400) for _ in range(5_000)]
    told, asked = FakeCounter(stamps), FakeCounter(stamps)
    since, until = 1_600_000_000, 1_800_000_000
    known = make_plan(told, since, until, 4, first=min(stamps), first_known=True)  # type: ignore[arg-type]
    probed = make_plan(asked, since, until, 4)  # type: ignore[arg-type]
    assert known == probed
    assert not any(name == "edge" for name, _ in told.calls) and ("edge", False) in asked.calls
    # The range's count rides along with the first refinement level: no count query of its own.
    assert not any(name == "count" for name, _ in told.calls + asked.calls)


def test_a_known_empty_range_asks_nothing() -> None:
    counter = FakeCounter([5, 6, 7])
    plan = make_plan(counter, 100, 900, 4, first=None, first_known=True)  # type: ignore[arg-type]
    assert counter.calls == [] and [w.records for w in plan] == [0, 0, 0, 0]
    plan = make_plan(counter, 100, 900, 4, first=950, first_known=True)  # type: ignore[arg-type]  # first record after the range
    assert counter.calls == [] and plan[0].lo == 100 and plan[-1].hi == 900
