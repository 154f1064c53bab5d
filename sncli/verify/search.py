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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sncli.verify.spans import Bound, Span

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


@dataclass
class SearchResult:
    visited: list[Visited] = field(default_factory=list)

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
) -> SearchResult:
    """Compare ``first`` and cut down every window whose counts differ (module doc)."""
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
            result.visited.append(Visited(span, depth, sn, kafka, verdict))
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
        self.pending.sort()
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
