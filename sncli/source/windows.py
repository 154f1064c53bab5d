"""Splitting a backfill range ``[since, until)`` into N disjoint windows of similar record counts.

Pure: the only outside knowledge is a ``count_many`` callback answering "how many
records in each of these ``[lo, hi)`` intervals" (ServiceNow's ``X-Total-Count``
of a ``limit=1`` query, asked in parallel by the caller). Times are whole epoch
seconds, because ServiceNow timestamps have second resolution: a window cannot
split one second, so the records of one bulk update always land in one window.

Why by counts and not equal time: tables grow, so the last equal-time window of
a 10-year range can hold most of the records and the parallel backfill would
run at the speed of one window.

How: the windows' N-1 inner boundaries are the k/N quantiles of the record
timestamps. They are found together by refining, level by level, only the
intervals that contain a quantile: each such interval is cut into up to
``fanout`` parts and counted, with at most ``per_round`` count queries per
level, so a level is one parallel batch and costs one round trip (the API's
latency is what the plan's time is made of). Refinement stops at one second or when
the interval holds at most ``tolerance`` x (total / N) records, which bounds a
window's imbalance while keeping the query count small.

Guarantees (tested exhaustively): the windows tile ``[since, until)`` exactly
(no gap, no overlap, in order); the plan is a function of the range, N and the
answers to the count queries, so the same data gives the same windows (N pods of
an Indexed Job computing it independently agree).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sncli.source.cursor import SN_FORMAT

CountMany = Callable[[Sequence[tuple[int, int]]], list[int]]

_WINDOW_SPEC = re.compile(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*")


@dataclass(frozen=True, slots=True)
class Window:
    """Window ``index`` of ``count``: records with ``lo <= ts < hi`` (epoch seconds)."""

    index: int
    count: int
    lo: int
    hi: int
    records: int | None = field(default=None, compare=False)  # as counted while planning, if known

    @property
    def lo_text(self) -> str:
        return to_sn(self.lo)

    @property
    def hi_text(self) -> str:
        return to_sn(self.hi)

    @property
    def label(self) -> str:
        return f"{self.index}of{self.count}"


def to_epoch(value: str) -> int:
    """'YYYY-MM-DD HH:MM:SS' (UTC) -> epoch seconds."""
    return int(datetime.strptime(value, SN_FORMAT).replace(tzinfo=UTC).timestamp())


def to_sn(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime(SN_FORMAT)


def compact(epoch: int) -> str:
    """A timestamp as it appears in a range id: 20240501T120000."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y%m%dT%H%M%S")


def from_compact(text: str) -> int:
    return int(datetime.strptime(text, "%Y%m%dT%H%M%S").replace(tzinfo=UTC).timestamp())


def range_id(since: int, until: int) -> str:
    """The readable id of a backfill range, e.g. ``20240101T000000-20240201T000000``."""
    return f"{compact(since)}-{compact(until)}"


def parse_range_id(value: str) -> tuple[int, int] | None:
    """``(since, until)`` of a range id made by :func:`range_id`; None for anything else."""
    match = re.fullmatch(r"([0-9]{8}T[0-9]{6})-([0-9]{8}T[0-9]{6})(?:\..*)?", value)
    if not match:
        return None
    return from_compact(match.group(1)), from_compact(match.group(2))


def parse_window_spec(spec: str) -> tuple[int, int]:
    """``"i/N"`` (0-based i) -> ``(i, N)``; ValueError with the reason otherwise."""
    match = _WINDOW_SPEC.fullmatch(spec)
    if not match:
        raise ValueError(f"--window must be 'i/N' (0-based), got {spec!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise ValueError(f"--window {spec}: i must be in 0..N-1 and N >= 1")
    return index, count


def windows_from_boundaries(since: int, until: int, inner: Sequence[int]) -> list[Window]:
    """Windows ``[b_i, b_i+1)`` for ``since, *inner, until`` (inner clamped and made non-decreasing)."""
    if until < since:
        raise ValueError("until must not be before since")
    points = [since]
    for b in inner:
        points.append(min(max(b, points[-1]), until))
    points.append(until)
    n = len(points) - 1
    return [Window(i, n, points[i], points[i + 1]) for i in range(n)]


def equal_time_windows(since: int, until: int, n: int) -> list[Window]:
    """The fallback split (no records to balance): N windows of equal duration."""
    span = until - since
    return windows_from_boundaries(since, until, [since + span * k // n for k in range(1, n)])


def plan_windows(
    since: int,
    until: int,
    n: int,
    count_many: CountMany,
    *,
    first: int | None = None,
    last: int | None = None,
    total: int | None = None,
    fanout: int = 32,
    per_round: int = 32,
    tolerance: float = 0.02,
) -> list[Window]:
    """N windows tiling ``[since, until)`` with about ``total / N`` records each.

    ``first``/``last``: the timestamps of the first and last record in the range,
    when known (two cheap queries); refinement then starts from the data's span
    instead of the whole range, which saves levels for a range like 1970..now.
    ``total``: the count of the records in the range when already known; when
    not, it is counted in the first level's batch (the first level's cuts do not
    depend on it), so it costs no round trip of its own. The windows are the
    same either way.
    Each window's ``records`` is its count as seen while planning.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    if fanout < 2:
        raise ValueError("fanout must be >= 2")
    if until <= since or n == 1:
        return equal_time_windows(since, max(since, until), n)
    lo = since if first is None else min(max(first, since), until)
    hi = until if last is None else min(max(last + 1, lo), until)
    per_round = max(1, per_round)
    known: dict[int, int] = {}
    if total is None:
        total, known = _count_with_first_level(lo, hi, count_many, fanout, per_round)
    if total <= 0 or hi <= lo:
        return [_with_records(w, 0) for w in equal_time_windows(since, until, n)]
    tol = max(0, int(total / n * tolerance))
    inner, cum = _quantile_boundaries(lo, hi, n, total, count_many, fanout, per_round, tol, known)
    windows = windows_from_boundaries(since, until, inner)
    marks = [0, *(cum[b] for b in inner), total]
    return [_with_records(w, marks[i + 1] - marks[i]) for i, w in enumerate(windows)]


def _with_records(window: Window, records: int) -> Window:
    return Window(window.index, window.count, window.lo, window.hi, records)


def _level_cuts(a: int, b: int, parts: int) -> list[int]:
    parts = min(parts, b - a)
    return sorted({a + (b - a) * j // parts for j in range(1, parts)})


def _count_with_first_level(
    lo: int, hi: int, count_many: CountMany, fanout: int, per_round: int
) -> tuple[int, dict[int, int]]:
    """``count[lo, hi)`` and the first refinement level's ``count[lo, p)``, in one batch.

    The first level splits the one interval ``[lo, hi)`` whatever its count, so its
    cuts are known before the total: asking for both together saves a round trip.
    The cuts are those :func:`_quantile_boundaries` would choose (one interval to
    split), minus one when the total has to fit in the batch too.
    """
    if hi <= lo:
        return 0, {}
    cuts = _level_cuts(lo, hi, max(2, min(fanout, 1 + per_round, per_round)))
    queries = [(lo, p) for p in cuts] + [(lo, hi)]
    counts = count_many(queries)
    if len(counts) != len(queries):
        raise ValueError(f"count_many answered {len(counts)} counts for {len(queries)} intervals")
    total = counts[-1]
    known: dict[int, int] = {}
    running = 0
    for p, c in zip(cuts, counts, strict=False):  # monotone, within [0, total], as a live table may move
        running = min(max(c, running), total)
        known[p] = running
    return total, known


def _quantile_boundaries(
    lo: int,
    hi: int,
    n: int,
    total: int,
    count_many: CountMany,
    fanout: int,
    per_round: int,
    tol: int,
    known: dict[int, int] | None = None,
) -> tuple[list[int], dict[int, int]]:
    """For k in 1..n-1: the smallest second t with count[lo, t) >= k*total/n (within ``tol``); and cum.

    ``known``: counts ``count[lo, p)`` already asked (the first level, see
    :func:`_count_with_first_level`).
    """
    targets = [(2 * k * total + n) // (2 * n) for k in range(1, n)]  # round(k*total/n)
    cum: dict[int, int] = {lo: 0, hi: total}  # cum[t] = count of [lo, t)
    cum.update(known or {})
    found: dict[int, int] = {}
    while len(found) < len(targets):
        points = sorted(cum)
        values = [cum[p] for p in points]
        to_split: set[tuple[int, int]] = set()
        for k, target in enumerate(targets):
            if k in found:
                continue
            if target <= 0:
                found[k] = lo
                continue
            idx = bisect_left(values, target)  # first known point with cum >= target
            b = points[idx]
            a = points[idx - 1]
            if b - a <= 1:
                found[k] = b
            elif values[idx] - values[idx - 1] <= tol:
                found[k] = a if target - values[idx - 1] <= values[idx] - target else b
            else:
                to_split.add((a, b))
        if not to_split:
            break
        queries: list[tuple[int, int]] = []
        spans: list[tuple[int, int, int]] = []  # (a, b, number of queries for this interval)
        # Spread this level's query budget over the intervals being refined (at least halve each).
        level_fanout = max(2, min(fanout, 1 + per_round // len(to_split)))
        for a, b in sorted(to_split):
            cuts = _level_cuts(a, b, level_fanout)
            queries.extend((a, p) for p in cuts)
            spans.append((a, b, len(cuts)))
        counts = count_many(queries)
        if len(counts) != len(queries):
            raise ValueError(f"count_many answered {len(counts)} counts for {len(queries)} intervals")
        pos = 0
        for a, b, m in spans:
            # Counts of a live table can move between queries: keep cum monotone whatever they say.
            running = cum[a]
            for (_, p), c in zip(queries[pos : pos + m], counts[pos : pos + m], strict=True):
                running = min(max(cum[a] + c, running), cum[b])
                cum[p] = running
            pos += m
    return [found[k] for k in range(len(targets))], cum
