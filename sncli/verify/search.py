"""Where the two sides differ, and what each difference is (pure: the I/O comes in as callbacks).

:func:`search` compares windows level by level: a level's ServiceNow counts
are asked in one batch (``count_sn``, run in parallel by the caller), each
window's Kafka count comes from the index. A window whose counts agree is
taken as in sync; one that differs is cut again (:func:`sncli.verify.spans.cut`)
until it holds at most ``leaf_records`` records on ServiceNow, or one side is
empty, or it cannot be cut: then it is a *leaf*, diffed by sys_id.

What counts cannot see: a missing record and an extra one (or a stale one
whose two versions fall in one window) in the same window cancel out. Cutting
by the Kafka side's own quantiles keeps windows narrow where records are dense,
which makes such a coincidence rare, not impossible: ``--exact`` diffs every
window by sys_id instead (it costs a listing of the table).

:func:`diff_leaf` is the sys_id diff of one leaf; :func:`classify` turns the
leaves' one-sided records into ``missing``/``stale`` (looking the other side
up in the Kafka index, which holds every record) and the records Kafka alone
has that no leaf explains; :func:`resolve` sorts those, once ServiceNow was
asked about their sys_ids, into ``extra`` / ``stale`` / ``pending`` (changed in
ServiceNow after the bound: the next poll delivers them).

Records changed after the bound are listed first (:func:`compare`): their older
version in Kafka sits in a window where ServiceNow no longer counts them, so
left in, each one would offset a missing record of its window. They are taken
out of Kafka's counts and reported as ``pending``, and listed again after the
counts for the records changed meanwhile (:func:`compare`'s doc). A verify of
a busy table long after its poll still finds a lone missing record, unless
more than :data:`sncli.verify.sn_side.PAST_BOUND_MAX_ROWS` changed after the
bound, or changes kept coming for :data:`RECHECK_ROUNDS` rounds
(``past_complete`` or ``settled`` False).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from sncli.verify.spans import Bound, Span, cut, whole
from sncli.verify.view import KafkaIndex, KafkaLatest

Verdict = Literal["same", "cut", "diff"]


@dataclass(frozen=True, slots=True)
class SearchPolicy:
    """How the search spends requests (the README's verify section explains the defaults)."""

    first_windows: int = 64  # windows of the first level, cut at the Kafka side's quantiles
    fanout: int = 8  # parts a differing window is cut into
    leaf_records: int = 2000  # a differing window with at most this many ServiceNow records is diffed
    exact: bool = False  # diff every window by sys_id, whatever the counts say

    def __post_init__(self) -> None:
        if self.first_windows < 1 or self.fanout < 2 or self.leaf_records < 1:
            raise ValueError("first_windows >= 1, fanout >= 2 and leaf_records >= 1 are required")


@dataclass(frozen=True, slots=True)
class Visited:
    """One compared window: its counts on both sides and what was decided."""

    span: Span
    depth: int
    sn: int
    kafka: int
    verdict: Verdict
    epoch: int = 0  # looks past the bound begun before its counts were asked (see compare)


@dataclass
class SearchResult:
    visited: list[Visited] = field(default_factory=list)

    def replace(self, windows: Sequence[Visited], search_again: Callable[[list[Span]], SearchResult]) -> None:
        """Judge ``windows`` again: each one's entries give way to a new search of its span, at its depth."""
        for depth in sorted({w.depth for w in windows}):
            spans = [w.span for w in windows if w.depth == depth]
            dropped = {id(w) for w in windows if w.depth == depth}
            self.visited = [v for v in self.visited if id(v) not in dropped]
            again = search_again(spans)
            self.visited.extend(Visited(v.span, v.depth + depth, v.sn, v.kafka, v.verdict, v.epoch)
                                for v in again.visited)

    @property
    def leaves(self) -> list[Visited]:
        return [v for v in self.visited if v.verdict == "diff"]

    def top(self) -> list[Visited]:
        return [v for v in self.visited if v.depth == 0]


def search(
    first: Sequence[Span],
    kafka_count: Callable[[Span], int],
    count_sn: Callable[[Sequence[Span]], list[int]],
    cutter: Callable[[Span], list[Span]],
    policy: SearchPolicy,
    on_level: Callable[[int, int], None] | None = None,
    epoch: int = 0,
) -> SearchResult:
    """Compare ``first`` and cut down every window whose counts differ (module doc); each window
    visited is stamped with ``epoch``."""
    result = SearchResult()
    level, depth = list(first), 0
    while level:
        sn_counts = count_sn(level)
        if len(sn_counts) != len(level):
            raise ValueError("count_sn must answer one count per window")
        following: list[Span] = []
        for span, sn in zip(level, sn_counts, strict=True):
            kafka = kafka_count(span)
            verdict = judge(span, sn, kafka, policy)
            result.visited.append(Visited(span, depth, sn, kafka, verdict, epoch))
            if verdict == "cut":
                following.extend(cutter(span))
        if on_level is not None:
            on_level(depth, len(level))
        level, depth = following, depth + 1
    return result


def judge(span: Span, sn: int, kafka: int, policy: SearchPolicy) -> Verdict:
    if sn == 0 and kafka == 0:
        return "same"
    if sn == kafka and not policy.exact:
        return "same"
    if sn <= policy.leaf_records or sn == 0 or kafka == 0 or not span.cuttable:
        return "diff"
    return "cut"


@dataclass(frozen=True, slots=True)
class Stale:
    sys_id: str
    kafka_ts: int  # epoch seconds of Kafka's latest message
    sn_ts: int  # epoch seconds of ServiceNow's record


@dataclass
class OneSided:
    """What the leaves found on one side only: sys_id -> timestamp (epoch seconds)."""

    sn_only: dict[str, int] = field(default_factory=dict)
    kafka_only: dict[str, int] = field(default_factory=dict)


def diff_leaf(sn: Mapping[str, int], kafka: Iterable[tuple[str, int]], into: OneSided) -> None:
    """Add one leaf's differences to ``into``: ServiceNow's records Kafka lacks (or has at
    another time in this window), and Kafka's records ServiceNow does not list in it."""
    kafka_map = dict(kafka)
    for sys_id, ts in sn.items():
        if kafka_map.get(sys_id) != ts:
            into.sn_only[sys_id] = ts
    for sys_id, ts in kafka_map.items():
        if sys_id not in sn:
            into.kafka_only[sys_id] = ts


@dataclass
class Findings:
    missing: list[str] = field(default_factory=list)
    stale: list[Stale] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # changed in ServiceNow after the bound

    def sort(self) -> Findings:
        self.missing.sort()
        self.stale.sort(key=lambda s: s.sys_id)
        self.extra.sort()
        self.pending = sorted(set(self.pending))
        return self


def classify(sides: OneSided, kafka_latest: Callable[[str], int | None]) -> tuple[Findings, dict[str, int]]:
    """``missing`` and ``stale`` from ServiceNow's one-sided records; Kafka's that remain unexplained.

    ``kafka_latest``: the timestamp of a record's alive latest message, None when
    the topic has none or its latest is a tombstone.
    """
    found = Findings()
    for sys_id, sn_ts in sides.sn_only.items():
        kafka_ts = kafka_latest(sys_id)
        if kafka_ts is None:
            found.missing.append(sys_id)
        elif kafka_ts != sn_ts:
            found.stale.append(Stale(sys_id, kafka_ts, sn_ts))
    unexplained = {s: ts for s, ts in sides.kafka_only.items() if s not in sides.sn_only}
    return found, unexplained


def resolve(found: Findings, unexplained: Mapping[str, int], in_sn: Mapping[str, int], bound: Bound) -> Findings:
    """Sort Kafka's unexplained records by what ServiceNow holds for them (``in_sn``: the timestamp
    of each one it has, whatever its time)."""
    for sys_id, kafka_ts in unexplained.items():
        there = in_sn.get(sys_id)
        if there is None:
            found.extra.append(sys_id)
        elif not bound.admits(there, sys_id):
            found.pending.append(sys_id)
        elif there != kafka_ts:
            found.stale.append(Stale(sys_id, kafka_ts, there))
    return found.sort()


class ServiceNowQueries(Protocol):
    """What :func:`compare` asks ServiceNow (:class:`sncli.verify.sn_side.ServiceNowSide`)."""

    def past_bound(self, bound: Bound) -> tuple[dict[str, int], bool]: ...

    def count_many(self, spans: Sequence[Span]) -> list[int]: ...

    def listing_many(self, spans: Sequence[Span]) -> list[dict[str, int]]: ...

    def timestamps(self, sys_ids: Sequence[str]) -> dict[str, int]: ...


@dataclass
class Comparison:
    """What :func:`compare` found, and how."""

    index: KafkaIndex  # Kafka's alive records in the windows (without those changed after the bound)
    result: SearchResult
    findings: Findings
    past_complete: bool = True  # every record changed after the bound was listed (no more than the limit)
    settled: bool = True  # a last look past the bound found nothing new (see compare)


#: How many times :func:`compare` looks past the bound again for records changed while it counted.
RECHECK_ROUNDS = 5


def compare(
    latest: KafkaLatest,
    since: int,
    bound: Bound,
    sn: ServiceNowQueries,
    policy: SearchPolicy,
    on_phase: Callable[[str, int], None] | None = None,
) -> Comparison:
    """One table's comparison over ``[since, bound]``: past the bound, the window search, the leaves' diffs.

    A record ServiceNow changes while the windows are counted is not in the
    first listing past the bound, and its window may have been counted after
    the change (ServiceNow without it, Kafka with it). So once the windows are
    judged, the records past the bound are listed again (a *look*), and again,
    until a look asks for nothing more (at most :data:`RECHECK_ROUNDS`; else
    ``settled`` is False). Each look is compared with the one before:

    - a record it lists that the one before did not (*arrived*) changed after
      that look began: it leaves Kafka's side, and each window judged in sync
      that holds its Kafka version *and was counted after that look began* is
      searched again (an older count had it on both sides);
    - a record the one before listed that it does not (*gone*: deleted, or its
      time set back into the range) comes back into Kafka's side; it is looked
      up, and the windows judged in sync that hold its Kafka version or its
      ServiceNow one, counted after that look began, are searched again; it is
      then sorted like Kafka's unexplained records (extra, stale, or nothing).

    A round that searches nothing again ends the looks: no window was counted
    after the last look began, so nothing a later one could find skews a count.
    Windows searched again are counted anew, so only they are judged by the
    next look, and on a busy table the rounds die out instead of chasing every
    change. The records of the last look are ``pending``. A window diffed by
    sys_id needs nothing: its listing comes after every look.
    """
    phase = on_phase or (lambda what, n: None)
    compared = whole(since, bound)
    empty = compared.lo == compared.hi and not compared.tail
    past, complete = ({}, True) if empty else sn.past_bound(bound)
    index = latest.index(excluding=past)
    phase("counting windows", 0)

    def cutter(span: Span) -> list[Span]:
        return cut(span, index.times, policy.fanout)

    def levels(depth: int, n: int) -> None:
        phase(f"compared level {depth}", n)

    result = search(cut(compared, index.times, policy.first_windows), index.count, sn.count_many, cutter, policy,
                    on_level=levels, epoch=1)
    looks = _Looks(past, complete)
    if not empty:
        looks.again(bound, compared, sn, index, result, lambda epoch, spans: search(
            spans, index.count, sn.count_many, cutter, policy, epoch=epoch))
    sides = OneSided()
    leaves = result.leaves
    phase("diffing windows by sys_id", len(leaves))
    listings = iter(sn.listing_many([leaf.span for leaf in leaves if leaf.sn]))
    for leaf in leaves:
        diff_leaf(next(listings) if leaf.sn else {}, index.within(leaf.span), sides)
    found, unexplained = classify(sides, index.latest_of)
    for sys_id in changed_after(looks.gone, index.latest_of, compared):  # sorted by what ServiceNow holds now
        kafka_ts = index.latest_of(sys_id)
        if kafka_ts is not None and sys_id not in sides.sn_only:
            unexplained.setdefault(sys_id, kafka_ts)
    # A record changed after the last look and listed by a leaf since is reported as the leaf found it.
    found.pending.extend(s for s in changed_after(looks.past, index.latest_of, compared) if s not in sides.sn_only)
    in_sn = sn.timestamps(sorted(unexplained)) if unexplained else {}
    return Comparison(index, result, resolve(found, unexplained, in_sn, bound), looks.complete, looks.settled)


@dataclass
class _Looks:
    """The looks past the bound of one :func:`compare` (its doc): what the last one listed, and what left."""

    past: dict[str, int]  # sys_id -> timestamp: the records past the bound, as the last look listed them
    complete: bool  # the last look listed every one (no more than its limit)
    gone: set[str] = field(default_factory=set)  # listed by an earlier look, not by the last one
    settled: bool = True  # a round searched nothing again (or there was nothing to look at)

    def again(self, bound: Bound, compared: Span, sn: ServiceNowQueries, index: KafkaIndex, result: SearchResult,
              search_again: Callable[[int, list[Span]], SearchResult]) -> None:
        self.settled = False
        for look in range(1, RECHECK_ROUNDS + 1):
            if not self.complete:
                self.settled = True  # the listing stopped at its limit: the rest is left to the leaves' look-ups
                return
            # All over again from the bound: a change need not carry a later time than what was listed (a clock
            # step, an import), and a table with a few records past its bound answers in one request.
            listed, self.complete = sn.past_bound(bound)
            arrived = [s for s in listed if s not in self.past]
            gone = [s for s in self.past if s not in listed] if self.complete else []
            self.past = listed if self.complete else {**self.past, **listed}
            self.gone = (self.gone | set(gone)) - set(arrived)
            moved = changed_after(arrived, index.latest_of, compared)
            back = changed_after(gone, index.latest_of, compared)
            index.remove(moved)
            index.add(back)
            points = [(ts, s) for s in moved + back if (ts := index.latest_of(s)) is not None]
            points += [(ts, s) for s, ts in (sn.timestamps(gone) if gone else {}).items()]
            # A window counted before the previous look began saw every record here as that look found it.
            again = [v for v in result.visited
                     if v.verdict == "same" and v.epoch >= look and any(v.span.admits(t, s) for t, s in points)]
            if not again:
                self.settled = True
                return
            result.replace(again, functools.partial(search_again, look + 1))


def changed_after(past: Iterable[str], kafka_latest: Callable[[str], int | None], compared: Span) -> list[str]:
    """The records changed after the bound whose latest alive message lies in the compared range: pending."""
    out = []
    for sys_id in past:
        ts = kafka_latest(sys_id)
        if ts is not None and compared.admits(ts, sys_id):
            out.append(sys_id)
    return out
