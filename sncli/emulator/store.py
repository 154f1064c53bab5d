"""Tables of string records, indexed for the keyset queries sncli sends.

Why an index: the source pages a table with
``ts=T^sys_id>S^NQts>T^ts<=HI^ORDERBYts^ORDERBYsys_id``; scanning 200 000
records per page would make the emulator, not the client, the thing a
benchmark measures. Each table keeps a sorted list of ``(sys_updated_on,
sys_id)`` keys; every NQ group of a query is turned into a range of that list
by bisection (conditions on ``sys_updated_on``, and on ``sys_id`` when the
group pins one second), and only records inside those ranges are looked at.
A group made only of such range conditions needs no per-record evaluation at
all, so its page and its count come straight from the ranges.

Each record keeps its serialized JSON (rebuilt on every write), so a
full-field page is the concatenation of ready bytes.

Nothing here locks: :class:`sncli.emulator.state.EmulatorState` serializes access.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import orjson

from sncli.emulator.query import CompiledGroup, CompiledQuery, Matcher, OrderBy, compile_query, parse, sort_records

TS = "sys_updated_on"
ID = "sys_id"
_MAX = "\U0010ffff"  # sorts after every sys_id
_RANGE_OPS = frozenset({"=", ">", ">=", "<", "<="})
_RESULT_CACHE_SIZE = 8
_COMPILED_CACHE_SIZE = 64

Key = tuple[str, str]


def compact_dumps(value: object) -> bytes:
    """JSON bytes in an exactly-sized buffer, for bytes kept for the record's lifetime.

    orjson hands back its whole working buffer (about 16 KiB for a 1 KiB record);
    keeping that per record made 200 000 records cost 3 GiB instead of 0.5.
    """
    return bytes(memoryview(orjson.dumps(value)))


class Record:
    """One stored record: immutable string fields plus their JSON, built once per write."""

    __slots__ = ("_links", "fields", "json", "key")

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields
        self.json = compact_dumps(fields)
        self.key: Key = (fields[TS], fields[ID])
        self._links: tuple[str, bytes] | None = None

    def json_with_links(self, base_url: str, references: Mapping[str, str]) -> bytes:
        """The record with reference fields as ``{"link", "value"}`` (ServiceNow's default shape), cached."""
        cached = self._links
        if cached is not None and cached[0] == base_url:
            return cached[1]
        body = compact_dumps(with_links(self.fields, base_url, references))
        self._links = (base_url, body)
        return body


def with_links(fields: Mapping[str, str], base_url: str, references: Mapping[str, str]) -> dict[str, object]:
    out: dict[str, object] = dict(fields)
    for name, target in references.items():
        value = fields.get(name, "")
        if name in out and value:
            out[name] = {"link": f"{base_url}/api/now/table/{target}/{value}", "value": value}
    return out


@dataclass(frozen=True, slots=True)
class _Range:
    lo: int
    hi: int
    pure: bool  # every condition of the group is implied by the range
    matcher: Matcher | None


class Table:
    def __init__(self, name: str) -> None:
        self.name = name
        self.records: dict[str, Record] = {}
        self.index: list[Key] = []
        self.rows: list[Record] = []  # rows[i] is the record of index[i]: pages are slices, not lookups
        self.columns: dict[str, str] = {}  # element -> internal_type
        self.references: dict[str, str] = {}  # reference element -> target table
        self.version = 0
        self._compiled: OrderedDict[tuple[str, int], CompiledQuery] = OrderedDict()
        self._results: OrderedDict[str, tuple[int, list[Record]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.records)

    # ------------------------------------------------------------------ writes

    def add(self, record: Record) -> None:
        self.records[record.key[1]] = record
        self._insert(record)
        self.version += 1

    def add_many(self, records: Sequence[Record]) -> None:
        if not records:
            return
        ordered = sorted(records, key=lambda r: r.key)
        for record in ordered:
            self.records[record.key[1]] = record
        appendable = not self.index or ordered[0].key >= self.index[-1]
        self.index.extend(r.key for r in ordered)
        self.rows.extend(ordered)
        if not appendable:
            self.rows.sort(key=lambda r: r.key)
            self.index = [r.key for r in self.rows]
        self.version += 1

    def replace(self, old: Record, new: Record) -> None:
        self._unindex(old.key)
        self.records[new.key[1]] = new
        self._insert(new)
        self.version += 1

    def remove(self, sys_id: str) -> Record | None:
        record = self.records.pop(sys_id, None)
        if record is not None:
            self._unindex(record.key)
            self.version += 1
        return record

    def clear(self) -> None:
        self.records.clear()
        self.index.clear()
        self.rows.clear()
        self.version += 1

    def _insert(self, record: Record) -> None:
        pos = bisect_right(self.index, record.key)
        self.index.insert(pos, record.key)
        self.rows.insert(pos, record)

    def _unindex(self, key: Key) -> None:
        pos = bisect_left(self.index, key)
        if pos < len(self.index) and self.index[pos] == key:
            del self.index[pos]
            del self.rows[pos]

    def add_column(self, element: str, internal_type: str, reference: str | None = None) -> None:
        self.columns[element] = internal_type
        if reference:
            self.references[element] = reference
        self.version += 1

    # ------------------------------------------------------------------ reads

    def ordered(self) -> Iterator[Record]:
        yield from self.rows

    def compile(self, query_text: str) -> CompiledQuery:
        cache_key = (query_text, len(self.columns))
        compiled = self._compiled.get(cache_key)
        if compiled is None:
            compiled = compile_query(parse(query_text), self.columns)
            self._compiled[cache_key] = compiled
            if len(self._compiled) > _COMPILED_CACHE_SIZE:
                self._compiled.popitem(last=False)
        return compiled

    def select(self, query_text: str, *, limit: int, offset: int, want_count: bool) -> tuple[list[Record], int | None]:
        """One page of the records matching ``query_text`` in its order, and the total if asked."""
        compiled = self.compile(query_text)
        ranges = self._ranges(compiled)
        in_index_order = index_ordered(compiled.order)
        if in_index_order and all(r.pure for r in ranges):
            merged = merge_ranges([(r.lo, r.hi) for r in ranges])
            total = sum(hi - lo for lo, hi in merged)
            page = [r for start, stop in take_slices(merged, offset, limit) for r in self.rows[start:stop]]
            return page, total
        if reverse_index_ordered(compiled.order) and all(r.pure for r in ranges):
            # Descending by the index (a "last record" probe): read the index backwards, as a
            # database reads its index either way, instead of sorting every match.
            merged = merge_ranges([(r.lo, r.hi) for r in ranges])
            backwards = [(len(self.rows) - hi, len(self.rows) - lo) for lo, hi in reversed(merged)]
            rows = self.rows
            page = [rows[len(rows) - 1 - pos] for pos in take_positions(backwards, offset, limit)]
            return page, sum(hi - lo for lo, hi in merged)
        if in_index_order and offset == 0 and not want_count:
            page = []
            if limit > 0:
                for record in self._scan(ranges):
                    page.append(record)
                    if len(page) >= limit:
                        break
            return page, None
        full = self._full_result(query_text, compiled, ranges, in_index_order)
        return full[offset : offset + limit], len(full)

    def _full_result(
        self, query_text: str, compiled: CompiledQuery, ranges: list[_Range], in_index_order: bool
    ) -> list[Record]:
        cached = self._results.get(query_text)
        if cached is not None and cached[0] == self.version:
            self._results.move_to_end(query_text)
            return cached[1]
        full = list(self._scan(ranges))
        if not in_index_order:
            full.sort(key=_sys_id_of)  # the base order of ties and of a query without ORDERBY
            full = sort_records(full, compiled.order, self.columns, lambda r: r.fields)
        self._results[query_text] = (self.version, full)
        if len(self._results) > _RESULT_CACHE_SIZE:
            self._results.popitem(last=False)
        return full

    def _scan(self, ranges: list[_Range]) -> Iterator[Record]:
        """Matching records in index order, looking only inside the ranges."""
        rows = self.rows
        for lo, hi in merge_ranges([(r.lo, r.hi) for r in ranges]):
            covering = [r for r in ranges if r.lo < hi and r.hi > lo]
            for pos in range(lo, hi):
                record = rows[pos]
                for r in covering:
                    if r.lo <= pos < r.hi and (r.pure or (r.matcher is not None and r.matcher(record.fields))):
                        yield record
                        break

    def _ranges(self, compiled: CompiledQuery) -> list[_Range]:
        if compiled.match_all:
            return [_Range(0, len(self.index), True, None)]
        out = []
        for group in compiled.groups:
            lo, hi, pure = group_range(self.index, group)
            if lo < hi:
                out.append(_Range(lo, hi, pure, None if pure else group.matcher))
        return out


def _sys_id_of(record: Record) -> str:
    return record.key[1]


def index_ordered(order: Sequence[OrderBy]) -> bool:
    """True when the requested order is (a refinement-free prefix of) the index order.

    Not when no order is asked: ServiceNow promises no order then (the database's, which
    changes with plans and caches). The emulator answers such a list in sys_id order,
    as a scan of the primary key would, and never in ``sys_updated_on`` order, so a
    client that forgets its ORDERBY is not rescued by a convenient default. Ties of an
    ORDERBY on other fields fall back to sys_id order the same way.
    """
    if not order:
        return False
    if order[0] != OrderBy(TS, False):
        return False
    return len(order) == 1 or order[1] == OrderBy(ID, False)


def reverse_index_ordered(order: Sequence[OrderBy]) -> bool:
    """True when the requested order is the index order reversed: descending timestamp, then descending sys_id.

    Not descending timestamp alone: ties then keep ascending sys_id order (a stable sort).
    """
    return list(order) == [OrderBy(TS, True), OrderBy(ID, True)]


def group_range(index: Sequence[Key], group: CompiledGroup) -> tuple[int, int, bool]:
    """The index positions [lo, hi) that can hold matches of ``group``, and whether all do."""
    lo, hi = 0, len(index)
    consumed = 0
    pinned: str | None = None
    for term in group.terms:
        if len(term) != 1 or term[0].field != TS or term[0].op not in _RANGE_OPS:
            continue
        op, value = term[0].op, term[0].value
        if op == "=":
            lo = max(lo, bisect_left(index, (value, "")))
            hi = min(hi, bisect_right(index, (value, _MAX)))
            if pinned is None:
                pinned = value
        elif op == ">":
            lo = max(lo, bisect_right(index, (value, _MAX)))
        elif op == ">=":
            lo = max(lo, bisect_left(index, (value, "")))
        elif op == "<":
            hi = min(hi, bisect_left(index, (value, "")))
        else:
            hi = min(hi, bisect_right(index, (value, _MAX)))
        consumed += 1
    if pinned is not None:
        for term in group.terms:
            if len(term) != 1 or term[0].field != ID or term[0].op not in _RANGE_OPS:
                continue
            op, key = term[0].op, (pinned, term[0].value)
            if op in ("=", ">=", ">"):
                lo = max(lo, bisect_right(index, key) if op == ">" else bisect_left(index, key))
            if op in ("=", "<=", "<"):
                hi = min(hi, bisect_left(index, key) if op == "<" else bisect_right(index, key))
            consumed += 1
    return lo, hi, consumed == len(group.terms)


def merge_ranges(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(r for r in ranges if r[0] < r[1]):
        if merged and lo <= merged[-1][1]:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def take_slices(merged: Sequence[tuple[int, int]], offset: int, limit: int) -> Iterator[tuple[int, int]]:
    """The [start, stop) slices holding items offset .. offset+limit-1 of the concatenated disjoint ranges."""
    remaining = limit
    for lo, hi in merged:
        if remaining <= 0:
            return
        size = hi - lo
        if offset >= size:
            offset -= size
            continue
        start = lo + offset
        offset = 0
        stop = min(hi, start + remaining)
        yield start, stop
        remaining -= stop - start


def take_positions(merged: Sequence[tuple[int, int]], offset: int, limit: int) -> Iterator[int]:
    """Positions number offset .. offset+limit-1 of the concatenated disjoint ranges."""
    for start, stop in take_slices(merged, offset, limit):
        yield from range(start, stop)
