"""The time windows ``verify`` compares, and how they are cut (pure: no I/O).

The compared range runs from ``since`` (a second, included) up to a keyset
:class:`Bound`: the stored poll cursor ``(T, S)`` takes in every record before
second ``T`` and the records of ``T`` with ``sys_id <= S`` (what the poll has
delivered); ``--until T`` is ``(T, "")``, everything before ``T``, like a
backfill's ``[since, until)``.

A :class:`Span` is one window of that range: ``lo <= ts < hi`` in epoch
seconds, plus, for the window that ends at the bound, the records of second
``hi`` with ``sys_id <= tail``. Its ServiceNow side is an encoded query
(:func:`span_query`, the table's base query ANDed into each clause); its Kafka
side is the same test on the latest message of each key (:meth:`Span.admits`).

Cutting (:func:`cut`): the first windows and every split follow the Kafka
side's own distribution (quantiles of the alive records' timestamps, known
before any ServiceNow request), so each window holds about as many records as
its siblings; where Kafka has too few distinct seconds to cut at, the window is
cut into equal parts of time. A window of one second without a tail cannot be
cut (ServiceNow timestamps have second resolution): it is diffed by sys_id.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from sncli.servicenow.query import Query, and_each_clause, check_field
from sncli.source.windows import to_sn


@dataclass(frozen=True, slots=True)
class Bound:
    """The end of the compared range in keyset terms: before second ``ts``, and ``(ts, sys_id <= tail)``."""

    ts: int
    tail: str = ""

    def admits(self, ts: int, sys_id: str) -> bool:
        return ts < self.ts or (ts == self.ts and self.tail != "" and sys_id <= self.tail)


@dataclass(frozen=True, slots=True)
class Span:
    """``lo <= ts < hi``, and ``ts == hi`` with ``sys_id <= tail`` when ``tail`` is not empty."""

    lo: int
    hi: int
    tail: str = ""

    def __post_init__(self) -> None:
        if self.hi < self.lo:
            raise ValueError(f"a span ends before it starts: {self.lo} > {self.hi}")

    def admits(self, ts: int, sys_id: str) -> bool:
        if self.lo <= ts < self.hi:
            return True
        return self.tail != "" and ts == self.hi and sys_id <= self.tail

    @property
    def cuttable(self) -> bool:
        """More than one second, or one second and a tail: there is somewhere to cut."""
        return self.hi - self.lo > 1 or (self.tail != "" and self.hi > self.lo)

    @property
    def label(self) -> str:
        end = f"{to_sn(self.hi)} (sys_id <= {self.tail})]" if self.tail else f"{to_sn(self.hi)})"
        return f"[{to_sn(self.lo)}, {end}"


def whole(since: int, bound: Bound) -> Span:
    """The whole compared range as one span (empty when ``since`` is past the bound)."""
    if since > bound.ts or (since == bound.ts and not bound.tail):
        return Span(bound.ts, bound.ts)
    return Span(since, bound.ts, bound.tail)


def span_query(span: Span, *, ts_field: str, base_query: str | None) -> str:
    """The encoded query of the records in ``span`` (no ordering): for counting and listing."""
    check_field(ts_field)
    clauses: list[str | Query] = []
    if span.lo < span.hi:
        clauses.append(Query().ge(ts_field, to_sn(span.lo)).lt(ts_field, to_sn(span.hi)))
    if span.tail:
        clauses.append(Query().eq(ts_field, to_sn(span.hi)).le("sys_id", span.tail))
    if not clauses:  # an empty span: a query that matches nothing, never the whole table
        clauses.append(Query().ge(ts_field, to_sn(span.hi)).lt(ts_field, to_sn(span.hi)))
    return and_each_clause(base_query, clauses)


def cut(span: Span, times: Sequence[int], parts: int) -> list[Span]:
    """``span`` cut into at most ``parts`` spans that tile it exactly, in order.

    ``times``: sorted timestamps (epoch seconds) of the Kafka side; the cuts are
    their quantiles inside ``span`` when they give enough distinct seconds, else
    equal parts of time. A span that cannot be cut comes back alone.
    """
    if parts < 2 or not span.cuttable:
        return [span]
    if span.hi - span.lo <= 1:  # one second and its tail: the second, then the tail alone
        return [Span(span.lo, span.hi), Span(span.hi, span.hi, span.tail)]
    inner = _quantile_cuts(span, times, parts)
    if len(inner) < parts - 1:
        inner = sorted(set(inner) | set(_even_cuts(span, parts - len(inner))))
    edges = [span.lo, *inner, span.hi]
    out = [Span(a, b) for a, b in pairwise(edges) if a < b]
    last = out[-1]
    out[-1] = Span(last.lo, last.hi, span.tail)
    return out


def _quantile_cuts(span: Span, times: Sequence[int], parts: int) -> list[int]:
    """Distinct seconds strictly inside ``(lo, hi)`` at the k/parts quantiles of ``times`` within the span."""
    start, stop = bisect_left(times, span.lo), bisect_left(times, span.hi)
    inside = stop - start
    if inside == 0:
        return []
    cuts: set[int] = set()
    for k in range(1, parts):
        value = times[start + (inside * k) // parts]
        if span.lo < value < span.hi:
            cuts.add(value)
    return sorted(cuts)


def _even_cuts(span: Span, parts: int) -> list[int]:
    width = span.hi - span.lo
    return sorted({span.lo + (width * k) // parts for k in range(1, parts)} - {span.lo, span.hi})


def span_page_query(span: Span, after: tuple[int, str] | None, *, ts_field: str, base_query: str | None) -> str:
    """The next page of ``span`` in keyset order, after the record ``after`` = (timestamp, sys_id) of the
    last page's last record (None: from the start); the table's base query ANDed into each clause."""
    check_field(ts_field)
    order = f"^ORDERBY{ts_field}^ORDERBYsys_id"
    if after is None:
        return span_query(span, ts_field=ts_field, base_query=base_query) + order
    ts, sys_id = after
    same = Query().eq(ts_field, to_sn(ts)).gt("sys_id", sys_id)
    if span.tail and ts == span.hi:
        same.le("sys_id", span.tail)
    clauses: list[str | Query] = [same]
    if ts < span.hi:
        clauses.append(Query().gt(ts_field, to_sn(ts)).lt(ts_field, to_sn(span.hi)))
        if span.tail:
            clauses.append(Query().eq(ts_field, to_sn(span.hi)).le("sys_id", span.tail))
    return and_each_clause(base_query, clauses) + order


def past_bound_query(bound: Bound, after: tuple[int, str] | None, *, ts_field: str, base_query: str | None) -> str:
    """The next page of the records *past* ``bound`` (changed after it), in keyset order, after the record
    ``after`` = (timestamp, sys_id) of the last page's last record (None: from the bound).

    Past the bound: ``ts > T``, and ``ts == T`` with ``sys_id > tail`` (with no tail, all of second ``T``).
    """
    check_field(ts_field)
    order = f"^ORDERBY{ts_field}^ORDERBYsys_id"
    if after is None and bound.tail:
        after = (bound.ts, bound.tail)  # the bound's own record is the last one before the past
    if after is None:
        clauses = [Query().ge(ts_field, to_sn(bound.ts))]
    else:
        ts, sys_id = after
        clauses = [Query().eq(ts_field, to_sn(ts)).gt("sys_id", sys_id), Query().gt(ts_field, to_sn(ts))]
    return and_each_clause(base_query, clauses) + order
