"""ServiceNow encoded queries for the emulator: parse once, evaluate against string records.

Grammar (as ServiceNow reads it): conditions joined by ``^`` (AND) or ``^OR``
(OR, binding tighter than AND: ``a^b^ORc`` is ``a AND (b OR c)``); ``^NQ``
starts a new query whose results are added (an OR of whole AND-groups);
``ORDERBY<f>``/``ORDERBYDESC<f>`` order the whole result wherever they appear;
``^^`` is a literal caret inside a value; ``^EQ`` ends the query.

Two ServiceNow behaviours matter to sncli and are emulated on purpose:

- A condition on a field the table does not have is silently dropped (not
  "matches nothing"), so ``doctor`` can only detect a bad field by counting.
  Malformed conditions and unknown operators are dropped the same way.
- Comparisons follow the column type: integer/decimal columns compare as
  numbers, GUID/date-time/reference columns compare as strings (the
  ``YYYY-MM-DD HH:MM:SS`` format sorts lexicographically), and plain string
  columns compare as numbers only when both sides look numeric.

The module is pure: no I/O, no locks; the store decides which records to feed it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

Fields = Mapping[str, str]
Matcher = Callable[[Fields], bool]

NUMERIC_TYPES = frozenset({"integer", "decimal", "float", "longint", "currency", "price", "numeric"})
STRING_TYPES = frozenset(
    {"GUID", "glide_date_time", "glide_date", "glide_time", "due_date", "reference", "sys_class_name", "boolean"}
)

# Longest operators first: the regex alternation takes the first that matches.
OPERATORS = (
    "ISNOTEMPTY",
    "ISEMPTY",
    "EMPTYSTRING",
    "ANYTHING",
    "NOT LIKE",
    "NOT IN",
    "NSAMEAS",
    "SAMEAS",
    "STARTSWITH",
    "ENDSWITH",
    "BETWEEN",
    "LIKE",
    "IN",
    ">=",
    "<=",
    "!=",
    "=",
    ">",
    "<",
)
_CONDITION = re.compile(
    r"^([A-Za-z0-9_.]+?)(" + "|".join(re.escape(op) for op in OPERATORS) + r")(.*)$",
    re.DOTALL,
)
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_NO_VALUE_OPS = frozenset({"ISEMPTY", "ISNOTEMPTY", "EMPTYSTRING", "ANYTHING"})


@dataclass(frozen=True, slots=True)
class Condition:
    field: str
    op: str
    value: str


@dataclass(frozen=True, slots=True)
class OrderBy:
    field: str
    descending: bool = False


# One AND-term is a tuple of alternatives joined by ^OR; a group is a tuple of AND-terms.
Term = tuple[Condition, ...]
Group = tuple[Term, ...]


@dataclass(frozen=True, slots=True)
class EncodedQuery:
    groups: tuple[Group, ...]
    order: tuple[OrderBy, ...]
    invalid: tuple[str, ...] = ()  # segments that could not be parsed (ignored, as ServiceNow does)


def split_segments(text: str) -> list[str]:
    """Split on single carets; ``^^`` is a literal caret inside the current segment."""
    if "^^" not in text:
        return text.split("^")
    out: list[str] = []
    buf: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "^":
            if i + 1 < n and text[i + 1] == "^":
                buf.append("^")
                i += 2
                continue
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    out.append("".join(buf))
    return out


_DATE_GENERATE = re.compile(r"""^javascript:gs\.dateGenerate\(\s*['"]([^'"]+)['"]\s*(?:,\s*['"]([^'"]+)['"]\s*)?\)$""")


def date_generate(value: str) -> str:
    """``javascript:gs.dateGenerate('2026-01-01','00:00:00')`` (or one 'date time' argument) -> the date-time text.

    The only script ServiceNow clients commonly put in queries (pysnow's BETWEEN
    builds it); the emulator evaluates it in UTC, the integration user's zone.
    Any other value is returned unchanged.
    """
    if not value.startswith("javascript:"):
        return value
    match = _DATE_GENERATE.match(value)
    if match is None:
        return value
    date, time = match.group(1), match.group(2)
    if time is None:
        return date
    time = {"start": "00:00:00", "end": "23:59:59"}.get(time, time)
    return f"{date} {time}"


def parse_condition(segment: str) -> Condition | None:
    match = _CONDITION.match(segment)
    if match is None:
        return None
    field, op, value = match.group(1), match.group(2), match.group(3)
    if op in _NO_VALUE_OPS:
        value = ""
    elif op == "BETWEEN":
        low, sep, high = value.partition("@")
        value = f"{date_generate(low)}{sep}{date_generate(high)}"
    else:
        value = date_generate(value)
    return Condition(field, op, value)


@lru_cache(maxsize=512)
def parse(text: str | None) -> EncodedQuery:
    """Parse an encoded query; never raises (bad pieces are recorded in ``invalid`` and ignored)."""
    if not text:
        return EncodedQuery((), ())
    groups: list[list[list[Condition]]] = [[]]
    order: list[OrderBy] = []
    invalid: list[str] = []
    for raw in split_segments(text):
        segment = raw
        if not segment:
            continue
        if segment.startswith("ORDERBYDESC"):
            if segment[11:]:
                order.append(OrderBy(segment[11:], True))
            continue
        if segment.startswith("ORDERBY"):
            if segment[7:]:
                order.append(OrderBy(segment[7:], False))
            continue
        if segment.startswith("GROUPBY") or segment == "EQ":
            continue
        is_or = False
        if segment.startswith("NQ"):
            groups.append([])
            segment = segment[2:]
            if not segment:
                continue
        elif segment.startswith("OR"):
            is_or = True
            segment = segment[2:]
        cond = parse_condition(segment)
        if cond is None:
            invalid.append(raw)
            continue
        current = groups[-1]
        if is_or and current:
            current[-1].append(cond)
        else:
            current.append([cond])
    frozen = tuple(tuple(tuple(term) for term in group) for group in groups if group)
    return EncodedQuery(frozen, tuple(order), tuple(invalid))


# ----------------------------------------------------------------------------- values


def as_number(text: str) -> Decimal | None:
    if not _NUMBER.match(text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the regex admits only valid numbers
        return None


def comparison_kind(column_type: str | None) -> str:
    """'number', 'string' or 'auto' (numbers when both sides look numeric)."""
    if column_type in NUMERIC_TYPES:
        return "number"
    if column_type in STRING_TYPES:
        return "string"
    return "auto"


def _cmp_factory(kind: str, constant: str) -> Callable[[str], int]:
    """A function returning sign(record_value - constant) under the column's comparison rules."""
    number = as_number(constant) if kind != "string" else None

    def by_string(value: str) -> int:
        return (value > constant) - (value < constant)

    if number is None:
        return by_string

    def by_number(value: str) -> int:
        other = as_number(value)
        if other is None:
            return by_string(value)
        return (other > number) - (other < number)

    return by_number


def compile_condition(cond: Condition, column_type: str | None, other_column_type: str | None = None) -> Matcher:
    """A predicate over a record for one condition (the field is known to exist)."""
    field, op, value = cond.field, cond.op, cond.value
    kind = comparison_kind(column_type)
    if op == "=":
        if kind == "number" and as_number(value) is not None:
            cmp_eq = _cmp_factory(kind, value)
            return lambda r: cmp_eq(r.get(field, "")) == 0 if r.get(field, "") else False
        return lambda r: r.get(field, "") == value
    if op == "!=":
        if kind == "number" and as_number(value) is not None:
            cmp_ne = _cmp_factory(kind, value)
            return lambda r: not r.get(field, "") or cmp_ne(r.get(field, "")) != 0
        return lambda r: r.get(field, "") != value
    if op in (">", ">=", "<", "<="):
        cmp = _cmp_factory(kind, value)
        accept = {">": (1,), ">=": (0, 1), "<": (-1,), "<=": (-1, 0)}[op]

        def ordered(r: Fields) -> bool:
            current = r.get(field, "")
            return bool(current) and cmp(current) in accept

        return ordered
    if op in ("LIKE", "NOT LIKE"):
        needle = value.lower()
        if op == "LIKE":
            return lambda r: needle in r.get(field, "").lower()
        return lambda r: needle not in r.get(field, "").lower()
    if op == "STARTSWITH":
        prefix = value.lower()
        return lambda r: r.get(field, "").lower().startswith(prefix)
    if op == "ENDSWITH":
        suffix = value.lower()
        return lambda r: r.get(field, "").lower().endswith(suffix)
    if op in ("IN", "NOT IN"):
        members = frozenset(value.split(","))
        if op == "IN":
            return lambda r: r.get(field, "") in members
        return lambda r: r.get(field, "") not in members
    if op in ("ISEMPTY", "EMPTYSTRING"):
        return lambda r: not r.get(field, "")
    if op == "ISNOTEMPTY":
        return lambda r: bool(r.get(field, ""))
    if op == "ANYTHING":
        return lambda r: True
    if op == "BETWEEN":
        low, _, high = value.partition("@")
        cmp_low, cmp_high = _cmp_factory(kind, low), _cmp_factory(kind, high)

        def between(r: Fields) -> bool:
            current = r.get(field, "")
            return bool(current) and cmp_low(current) >= 0 and cmp_high(current) <= 0

        return between
    if op in ("SAMEAS", "NSAMEAS"):
        other = value
        same = op == "SAMEAS"
        return lambda r: (r.get(field, "") == r.get(other, "")) is same
    raise ValueError(f"unsupported operator {op!r}")  # pragma: no cover - OPERATORS is closed


# ----------------------------------------------------------------------------- compiled queries


@dataclass(frozen=True, slots=True)
class CompiledGroup:
    terms: tuple[Term, ...]  # only conditions on known fields remain
    matcher: Matcher


@dataclass(frozen=True, slots=True)
class CompiledQuery:
    """A query bound to a table's columns: unknown fields dropped, predicates built.

    ``groups`` empty means "every record" (no condition survived, or none given).
    """

    groups: tuple[CompiledGroup, ...]
    order: tuple[OrderBy, ...]
    ignored: tuple[str, ...]  # human-readable conditions that were dropped

    @property
    def match_all(self) -> bool:
        return not self.groups

    def matches(self, record: Fields) -> bool:
        if not self.groups:
            return True
        return any(group.matcher(record) for group in self.groups)


def _all_of(preds: Sequence[Matcher]) -> Matcher:
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        first, second = preds
        return lambda r: first(r) and second(r)
    return lambda r: all(p(r) for p in preds)


def _any_of(preds: Sequence[Matcher]) -> Matcher:
    if len(preds) == 1:
        return preds[0]
    return lambda r: any(p(r) for p in preds)


def compile_query(query: EncodedQuery, columns: Mapping[str, str]) -> CompiledQuery:
    """Bind ``query`` to a table whose columns (field -> internal_type) are ``columns``."""
    ignored: list[str] = list(query.invalid)
    groups: list[CompiledGroup] = []
    every_record = False
    for group in query.groups:
        kept_terms: list[Term] = []
        term_preds: list[Matcher] = []
        for term in group:
            kept: list[Condition] = []
            preds: list[Matcher] = []
            for cond in term:
                if cond.field not in columns or (cond.op in ("SAMEAS", "NSAMEAS") and cond.value not in columns):
                    ignored.append(f"{cond.field}{cond.op}{cond.value}")
                    continue
                kept.append(cond)
                preds.append(compile_condition(cond, columns[cond.field]))
            if kept:
                kept_terms.append(tuple(kept))
                term_preds.append(_any_of(preds))
        if not kept_terms:
            every_record = True  # an NQ group with no surviving condition admits every record
            continue
        groups.append(CompiledGroup(tuple(kept_terms), _all_of(term_preds)))
    order = tuple(o for o in query.order if o.field in columns)
    ignored.extend(f"ORDERBY{o.field}" for o in query.order if o.field not in columns)
    if every_record:
        groups = []
    return CompiledQuery(tuple(groups), order, tuple(ignored))


# ----------------------------------------------------------------------------- ordering


def sort_records(
    records: list[Any], order: Sequence[OrderBy], columns: Mapping[str, str], fields_of: Callable[[Any], Fields]
) -> list[Any]:
    """Stable multi-key sort of ``records`` (any objects; ``fields_of`` reads their fields).

    Empty values sort first ascending (last descending), as ServiceNow orders NULLs.
    Numeric columns (and string columns whose non-empty values are all numbers) sort
    as numbers; everything else as strings, consistent with the comparison rules.
    """
    result = list(records)
    for key in reversed(order):
        kind = comparison_kind(columns.get(key.field))
        name = key.field
        values = [fields_of(r).get(name, "") for r in result]
        numeric = kind != "string" and all(v == "" or as_number(v) is not None for v in values)
        if numeric:
            keyed: list[tuple[tuple[int, Any], Any]] = [
                (((0, Decimal(0)) if v == "" else (1, as_number(v))), r) for v, r in zip(values, result, strict=True)
            ]
        else:
            keyed = [(((0, "") if v == "" else (1, v)), r) for v, r in zip(values, result, strict=True)]
        keyed.sort(key=lambda pair: pair[0], reverse=key.descending)
        result = [r for _, r in keyed]
    return result
