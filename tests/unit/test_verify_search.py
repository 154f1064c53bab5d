"""Finding differences (sncli.verify.search, view, sn_side) against a model: every case, any data.

ServiceNow is the emulator's state read through the same queries the product
sends (counts, keyset listings, sys_id look-ups), without HTTP; Kafka is a
:class:`KafkaLatest` fed message by message. The expected answer is computed
by brute force from both sides' full contents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sncli.config import SourceTable
from sncli.emulator.state import EmulatorState
from sncli.servicenow.table import Page
from sncli.source.windows import to_sn
from sncli.verify.search import (
    Findings,
    SearchPolicy,
    Stale,
    compare,
    judge,
)
from sncli.verify.sn_side import ServiceNowSide
from sncli.verify.spans import Bound, Span
from sncli.verify.view import DELETED, KafkaLatest

T0 = 1_700_000_000
TABLE = SourceTable(name="incident", topic="t")


class FakeClient:
    """The two calls ServiceNowSide makes, answered by an EmulatorState.

    ``changes``: (call number, sys_id, new timestamp): the record is changed in
    ServiceNow just before that call is answered (a table changing while it is verified).
    """

    def __init__(self, state: EmulatorState, changes: list[tuple[int, str, int]] | None = None) -> None:
        self.state = state
        self.calls = 0
        self.changes = sorted(changes or [])

    def _call(self) -> None:
        self.calls += 1
        while self.changes and self.changes[0][0] <= self.calls:
            _, sys_id, ts = self.changes.pop(0)
            self.state.update("incident", sys_id, {"short_description": "changed"}, at=to_sn(ts))

    def count(self, table: str, query: str) -> int:
        self._call()
        return self.state.count_matching(table, query)

    def list_page(self, table: str, *, query: str, fields: list[str] | None, limit: int, **_: Any) -> Page:
        self._call()
        rows = self.state.select(table, query, limit=limit, offset=0, want_count=False).records
        return Page([{f: r.fields[f] for f in (fields or r.fields)} for r in rows], None, None)


def sid(n: int) -> str:
    return f"{n:032x}"


@dataclass
class World:
    sn: dict[str, int]  # sys_id -> timestamp
    kafka: dict[str, int]  # sys_id -> timestamp of the latest message, DELETED for a tombstone


def run(world: World, since: int, bound: Bound, policy: SearchPolicy,
        changes: list[tuple[int, str, int]] | None = None) -> tuple[Findings, int]:
    """Compare ``world``; each of ``changes`` moves a record in ServiceNow during the run (and in ``world.sn``)."""
    state = EmulatorState()
    state.bulk_insert("incident", [{"sys_id": s, "sys_updated_on": to_sn(t)} for s, t in world.sn.items()])
    latest = KafkaLatest()
    for s, t in world.kafka.items():
        latest.record(s.encode(), s.encode(), 0 if t == DELETED else t * 1000, t != DELETED)
    client = FakeClient(state, changes)
    side = ServiceNowSide(client, TABLE, page_size=3)  # type: ignore[arg-type]
    done = compare(latest, since, bound, side, policy)
    assert done.past_complete and done.settled
    for _, sys_id, ts in changes or []:
        if sys_id not in {s for _, s, _ in client.changes}:  # made before the run ended
            world.sn[sys_id] = ts
    return done.findings, client.calls


def expected(world: World, since: int, bound: Bound) -> Findings:
    def inside(s: str, t: int) -> bool:
        return t >= since and bound.admits(t, s)

    alive = {s: t for s, t in world.kafka.items() if t != DELETED}
    out = Findings()
    for s, t in world.sn.items():
        if inside(s, t):
            if s not in alive:
                out.missing.append(s)
            elif alive[s] != t:
                out.stale.append(Stale(s, alive[s], t))
    for s, t in alive.items():
        if not inside(s, t):
            continue
        if s not in world.sn:
            out.extra.append(s)
        elif not bound.admits(world.sn[s], s):
            out.pending.append(s)
        elif not inside(s, world.sn[s]) and world.sn[s] != t:
            out.stale.append(Stale(s, t, world.sn[s]))
    return out.sort()


worlds = st.integers(0, 40).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 30), min_size=n, max_size=n),  # ServiceNow timestamps
    st.lists(st.sampled_from(["same", "missing", "older", "newer", "tombstone"]), min_size=n, max_size=n),
    st.lists(st.integers(0, 30), max_size=6),  # extras in Kafka
    st.lists(st.integers(0, 30), max_size=3),  # tombstones of records gone from both sides
))


def build(data: tuple[list[int], list[str], list[int], list[int]]) -> World:
    times, fates, extras, gone = data
    world = World({}, {})
    for i, (t, fate) in enumerate(zip(times, fates, strict=True)):
        world.sn[sid(i)] = T0 + t
        if fate == "same":
            world.kafka[sid(i)] = T0 + t
        elif fate in ("older", "newer"):
            world.kafka[sid(i)] = T0 + t + (-3 if fate == "older" else 3)
        elif fate == "tombstone":
            world.kafka[sid(i)] = DELETED
    for j, t in enumerate(extras):
        world.kafka[sid(1000 + j)] = T0 + t
    for j, _t in enumerate(gone):
        world.kafka[sid(2000 + j)] = DELETED
    return world


@settings(max_examples=200, deadline=None)
@given(data=worlds, since=st.integers(-2, 10), end=st.integers(5, 35), tail=st.integers(-1, 45),
       windows=st.integers(1, 5), fanout=st.integers(2, 4), leaf=st.integers(1, 6))
def test_exact_mode_finds_exactly_what_brute_force_finds(
    data: tuple[list[int], list[str], list[int], list[int]], since: int, end: int, tail: int, windows: int,
    fanout: int, leaf: int,
) -> None:
    world = build(data)
    bound = Bound(T0 + end, sid(tail) if tail >= 0 else "")
    policy = SearchPolicy(first_windows=windows, fanout=fanout, leaf_records=leaf, exact=True)
    found, _ = run(world, T0 + since, bound, policy)
    assert found == expected(world, T0 + since, bound)


@settings(max_examples=200, deadline=None)
@given(data=worlds, end=st.integers(5, 35), windows=st.integers(1, 5), leaf=st.integers(1, 6))
def test_counting_mode_reports_nothing_false_and_finds_a_lone_missing_or_extra(
    data: tuple[list[int], list[str], list[int], list[int]], end: int, windows: int, leaf: int,
) -> None:
    world = build(data)
    bound = Bound(T0 + end)
    policy = SearchPolicy(first_windows=windows, fanout=2, leaf_records=leaf)
    found, _ = run(world, T0, bound, policy)
    truth = expected(world, T0, bound)
    assert set(found.missing) <= set(truth.missing)
    assert set(found.extra) <= set(truth.extra)
    assert {s.sys_id for s in found.stale} <= {s.sys_id for s in truth.stale}
    assert found.pending == truth.pending  # listed past the bound, whatever the windows' counts say
    # A lone difference cannot be cancelled by another in its window: it is always found, also beside records
    # changed after the bound (their older versions are taken out of Kafka's counts).
    if len(truth.missing) + len(truth.extra) == 1 and not truth.stale:
        assert (found.missing, found.extra) == (truth.missing, truth.extra)


@settings(max_examples=200, deadline=None)
@given(data=worlds, end=st.integers(5, 35), windows=st.integers(1, 5), leaf=st.integers(1, 6),
       moves=st.lists(st.tuples(st.integers(1, 12), st.integers(0, 39), st.integers(1, 20)), max_size=4))
def test_records_changed_while_it_counts_give_nothing_false(
    data: tuple[list[int], list[str], list[int], list[int]], end: int, windows: int, leaf: int,
    moves: list[tuple[int, int, int]],
) -> None:
    world = build(data)
    bound = Bound(T0 + end)
    # Records Kafka holds as ServiceNow does, changed (past the bound) before the given ServiceNow call.
    same = [s for s, t in world.sn.items() if world.kafka.get(s) == t]
    changes = [(call, same[i % len(same)], bound.ts + later) for call, i, later in moves] if same else []
    changes = list({c[1]: c for c in changes}.values())  # one change per record
    found, _ = run(world, T0, bound, SearchPolicy(first_windows=windows, fanout=2, leaf_records=leaf), changes)
    truth = expected(world, T0, bound)  # with the changes made during the run
    assert set(found.missing) <= set(truth.missing) and set(found.extra) <= set(truth.extra)
    assert {s.sys_id for s in found.stale} <= {s.sys_id for s in truth.stale}
    assert set(found.pending) <= set(truth.pending)
    if len(truth.missing) + len(truth.extra) == 1 and not truth.stale:
        assert (found.missing, found.extra) == (truth.missing, truth.extra)


lone_worlds = st.integers(2, 30).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 30), min_size=n, max_size=n),  # ServiceNow timestamps, all in Kafka alike...
    st.integers(0, n - 1),  # ...but this one: missing from Kafka, or the time of an extra in Kafka
    st.booleans(),  # missing (True) or extra
    st.lists(st.tuples(st.integers(1, 8), st.integers(0, n - 1), st.integers(1, 20)), min_size=1, max_size=4),
))


@settings(max_examples=300, deadline=None)
@given(data=lone_worlds, windows=st.integers(1, 4), leaf=st.integers(1, 6))
def test_records_changed_while_it_counts_hide_no_lone_missing_or_extra(
    data: tuple[list[int], int, bool, list[tuple[int, int, int]]], windows: int, leaf: int,
) -> None:
    times, odd, missing, moves = data
    world = World({sid(i): T0 + t for i, t in enumerate(times)}, {})
    world.kafka = dict(world.sn)
    if missing:
        del world.kafka[sid(odd)]
    else:
        world.kafka[sid(1000)] = T0 + times[odd]
    bound = Bound(T0 + 31)
    # Records Kafka holds as ServiceNow does, changed (past the bound) before one of the first ServiceNow calls.
    changes = list({sid(i): (call, sid(i), bound.ts + later) for call, i, later in moves
                    if not (missing and i == odd)}.values())
    found, _ = run(world, T0, bound, SearchPolicy(first_windows=windows, fanout=2, leaf_records=leaf), changes)
    truth = expected(world, T0, bound)
    assert (found.missing, found.extra, found.stale) == (truth.missing, truth.extra, [])
    assert set(found.pending) <= set(truth.pending)


def test_a_record_changed_after_the_first_look_past_the_bound_hides_no_missing_one() -> None:
    # r5 changes after the first look past the bound (call 1, nothing there) and before its window is counted
    # (call 2): ServiceNow counts the window without it, Kafka with it, and the counts agree though r3 is missing.
    world = World({sid(i): T0 + i for i in range(10)}, {})
    world.kafka = {s: t for s, t in world.sn.items() if s != sid(3)}
    found, _ = run(world, T0, Bound(T0 + 20), SearchPolicy(first_windows=1, leaf_records=100),
                   changes=[(2, sid(5), T0 + 30)])
    assert (found.missing, found.pending, found.extra, found.stale) == ([sid(3)], [sid(5)], [], [])


def test_in_sync_costs_one_count_per_first_window_and_nothing_else() -> None:
    world = World({sid(i): T0 + i // 10 for i in range(500)}, {})
    world.kafka = dict(world.sn)
    found, calls = run(world, T0, Bound(T0 + 100), SearchPolicy(first_windows=16))
    assert found == Findings()
    assert calls == 1 + 16 + 1  # past the bound (nothing), the first level, past the bound again (nothing)


def test_one_missing_record_among_many_is_found_with_few_requests() -> None:
    world = World({sid(i): T0 + i // 10 for i in range(5000)}, {})
    world.kafka = dict(world.sn)
    del world.kafka[sid(1234)]
    found, calls = run(world, T0, Bound(T0 + 1000), SearchPolicy(first_windows=16, fanout=4, leaf_records=50))
    assert found.missing == [sid(1234)] and not found.extra and not found.stale
    assert calls <= 2 + 16 + 4 * 4 + 4  # past the bound twice, the first level, a few cut levels, one listing


def test_a_record_changed_after_the_bound_does_not_hide_a_missing_one_in_its_window() -> None:
    # Kafka holds the older version of p in the window where r3 is missing; ServiceNow counts p past the bound.
    # Counted as they are, both sides say 10 in one window and r3 stayed hidden.
    world = World({sid(i): T0 + i for i in range(10)}, {})
    world.kafka = {s: t for s, t in world.sn.items() if s != sid(3)}
    world.sn[sid(99)] = T0 + 25
    world.kafka[sid(99)] = T0 + 3
    found, calls = run(world, T0, Bound(T0 + 20), SearchPolicy(first_windows=1, leaf_records=100))
    assert (found.missing, found.pending, found.extra, found.stale) == ([sid(3)], [sid(99)], [], [])
    # Past the bound (a page, the empty one), the window, past it again (its last second, the empty page),
    # the window's listing in pages of 3.
    assert calls == 2 + 1 + 2 + 5


def test_past_the_bound_is_listed_in_pages_up_to_a_limit() -> None:
    state = EmulatorState()
    state.bulk_insert("incident", [{"sys_id": sid(i), "sys_updated_on": to_sn(T0 + i // 2)} for i in range(20)])
    side = ServiceNowSide(FakeClient(state), TABLE, page_size=3)  # type: ignore[arg-type]
    # (T0+4, sid(8)) is the bound's record: the rest of its second and everything later is past it.
    past, complete = side.past_bound(Bound(T0 + 4, sid(8)))
    assert (sorted(past), complete) == ([sid(i) for i in range(9, 20)], True)
    assert side.requests == 5  # 11 records in pages of 3, then the empty page
    past, complete = side.past_bound(Bound(T0 + 4))  # no tail: all of second T0+4 is past
    assert (sorted(past), complete) == ([sid(i) for i in range(8, 20)], True)
    past, complete = side.past_bound(Bound(T0 + 4), limit=5)
    assert (sorted(past), complete) == ([sid(i) for i in range(8, 13)], False)
    past, complete = side.past_bound(Bound(T0 + 4), limit=12)  # exactly the limit: all of them
    assert (sorted(past), complete) == ([sid(i) for i in range(8, 20)], True)


def test_an_empty_range_lists_nothing_past_its_bound() -> None:
    world = World({sid(i): T0 + i for i in range(10)}, {})
    world.kafka = dict(world.sn)
    found, calls = run(world, T0 + 50, Bound(T0 + 5), SearchPolicy())  # --since after the bound
    assert (found, calls) == (Findings(), 1)  # the empty window's count, as before: no listing past the bound


def test_judge() -> None:
    policy = SearchPolicy(leaf_records=10)
    assert judge(Span(0, 100), 5, 5, policy) == "same"
    assert judge(Span(0, 100), 0, 0, SearchPolicy(exact=True)) == "same"
    assert judge(Span(0, 100), 5, 5, SearchPolicy(exact=True)) == "diff"
    assert judge(Span(0, 100), 11, 12, policy) == "cut"
    assert judge(Span(0, 100), 500, 0, policy) == "diff"  # one side empty: list it at once
    assert judge(Span(0, 1), 500, 499, policy) == "diff"  # one second cannot be cut
    with pytest.raises(ValueError):
        SearchPolicy(fanout=1)


def test_fields_keyed_latest_is_the_newest_timestamp_and_a_tombstone_wins_a_tie() -> None:
    latest = KafkaLatest(by_time=True)
    latest.record(b"a", b"k2", 5000, True)  # a newer version read first (another partition)
    latest.record(b"a", b"k1", 3000, True)
    latest.record(b"b", b"k1", 3000, True)
    latest.record(b"b", b"k1", 3000, False)
    latest.record(None, b"k9", 1000, True)
    index = latest.index()
    assert index.latest_of("a") == 5 and index.key_of("a") == b"k2"
    assert index.latest_of("b") is None
    assert (latest.messages, latest.unidentified, len(index)) == (5, 1, 1)


def test_sys_id_keyed_latest_is_the_last_read() -> None:
    latest = KafkaLatest()
    latest.record(b"a", b"a", 5000, True)
    latest.record(b"a", b"a", 3000, True)  # re-sent later with an older timestamp: still the latest
    assert latest.index().latest_of("a") == 3
    assert latest.index().key_of("a") == b"a"
