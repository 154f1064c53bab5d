"""Encoded-query builder: conditions in, one ``sysparm_query`` string out.

Why a builder rather than f-strings: a value that contains ``^`` would
otherwise end its condition and start a new one, so a record value such as
``x^NQactive=false`` could widen a query to the whole table. Here a value that
contains ``^`` is refused (QueryError) and every field name is checked, so data
can only ever be data.

Why refused rather than escaped: ServiceNow's documentation of encoded queries
describes ``^`` as the separator and documents no escape for it inside a value.
An earlier version doubled it (``^^``), which only sncli's own emulator was ever
shown to read as a literal caret; if the instance reads it otherwise, the
"escaped" value still splits the query. The values sncli builds queries from
never need a caret (cursor timestamps, sys_ids, user names); the one that comes
from data, the correlation value of ``ambiguous: lookup``, makes the write
ambiguous (dead-lettered) instead of being looked up. Configured base queries
are the operator's own text and are passed on as written.

ServiceNow's grammar, as used here: conditions joined by ``^`` (AND) or
``^OR`` (OR, binding tighter than AND: ``a^b^ORc`` is ``a AND (b OR c)``);
``^NQ`` starts a new query whose results are added (OR of whole clauses);
``ORDERBY``/``ORDERBYDESC`` terms apply to the whole result and are emitted last.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_FIELD = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")
_ORDER_PREFIXES = ("ORDERBYDESC", "ORDERBY", "GROUPBY")


class QueryError(ValueError):
    """A field name or value that cannot be expressed safely in an encoded query."""


def check_field(name: str) -> str:
    """A field name as ServiceNow spells them (lowercase, digits, ``_``, dot-walks); else QueryError."""
    if not isinstance(name, str) or not _FIELD.fullmatch(name):
        raise QueryError(f"invalid field name {name!r} (expected [a-z0-9_] names, dot-walked with '.')")
    return name


def escape_value(value: object) -> str:
    """A value as it may appear after an operator; carets and scripts are refused (see the module doc)."""
    if value is None:
        raise QueryError("a query value cannot be None (use is_empty / is_not_empty)")
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    if text.lstrip().lower().startswith("javascript:"):
        # ServiceNow evaluates such values as server-side script; data must never do that.
        raise QueryError("a query value may not start with 'javascript:'")
    if "^" in text:
        raise QueryError("a query value may not contain '^': ServiceNow documents no escape for it, "
                         "so it could end the condition and widen the query")
    return text


@dataclass(frozen=True, slots=True)
class _Term:
    connector: str  # "^" or "^OR" (ignored for the first term of a clause)
    text: str


class Query:
    """A mutable, chainable encoded-query builder; ``build()`` (or ``str()``) renders it."""

    def __init__(self) -> None:
        self._clauses: list[list[_Term]] = [[]]
        self._order: list[str] = []
        self._pending_or = False

    # ---------------------------------------------------------------- conditions

    def eq(self, field: str, value: object) -> Query:
        return self._cond(field, "=", value)

    def ne(self, field: str, value: object) -> Query:
        return self._cond(field, "!=", value)

    def gt(self, field: str, value: object) -> Query:
        return self._cond(field, ">", value)

    def ge(self, field: str, value: object) -> Query:
        return self._cond(field, ">=", value)

    def lt(self, field: str, value: object) -> Query:
        return self._cond(field, "<", value)

    def le(self, field: str, value: object) -> Query:
        return self._cond(field, "<=", value)

    def like(self, field: str, value: object) -> Query:
        return self._cond(field, "LIKE", value)

    def not_like(self, field: str, value: object) -> Query:
        return self._cond(field, "NOT LIKE", value)

    def starts_with(self, field: str, value: object) -> Query:
        return self._cond(field, "STARTSWITH", value)

    def ends_with(self, field: str, value: object) -> Query:
        return self._cond(field, "ENDSWITH", value)

    def in_(self, field: str, values: Iterable[object]) -> Query:
        return self._add(f"{check_field(field)}IN{_join_list(values)}")

    def not_in(self, field: str, values: Iterable[object]) -> Query:
        return self._add(f"{check_field(field)}NOT IN{_join_list(values)}")

    def is_empty(self, field: str) -> Query:
        return self._add(f"{check_field(field)}ISEMPTY")

    def is_not_empty(self, field: str) -> Query:
        return self._add(f"{check_field(field)}ISNOTEMPTY")

    def and_raw(self, encoded: str | None) -> Query:
        """AND a trusted encoded query (e.g. a configured base query) into the current clause.

        It must be a single clause: ``a^NQb`` ANDed into one clause would only
        restrict half of it. Use :func:`and_each_clause` for that. Its ORDERBY
        terms join this query's ordering.
        """
        if encoded is None or not encoded.strip():
            return self
        clauses, order = split_encoded(encoded)
        if len(clauses) > 1:
            raise QueryError("and_raw() cannot take a query with ^NQ; use and_each_clause()")
        if clauses:
            self._add(clauses[0])
        self._order.extend(order)
        return self

    # ---------------------------------------------------------------- structure

    def or_(self) -> Query:
        """Join the next condition with ``^OR`` to the previous one."""
        if not self._clauses[-1]:
            raise QueryError("or_() needs a condition before it")
        self._pending_or = True
        return self

    def nq(self, other: Query | None = None) -> Query:
        """Start a new ``^NQ`` clause; with ``other``, append other's clauses as new clauses."""
        if self._pending_or:
            raise QueryError("or_() must be followed by a condition")
        if not self._clauses[-1]:
            raise QueryError("nq() needs a condition before it")
        if other is None:
            self._clauses.append([])
            return self
        if other._order:
            raise QueryError("the query given to nq() may not have ORDERBY terms; order the outer query")
        for clause in other._clauses:
            if clause:
                self._clauses.append(list(clause))
        return self

    def order_by(self, field: str) -> Query:
        self._order.append(f"ORDERBY{check_field(field)}")
        return self

    def order_by_desc(self, field: str) -> Query:
        self._order.append(f"ORDERBYDESC{check_field(field)}")
        return self

    # ---------------------------------------------------------------- rendering

    def conditions(self) -> str:
        """The conditions only (no ORDERBY), clauses joined by ``^NQ``."""
        if self._pending_or:
            raise QueryError("or_() must be followed by a condition")
        rendered = [_render_clause(c) for c in self._clauses if c]
        return "^NQ".join(rendered)

    def build(self) -> str:
        parts = [p for p in (self.conditions(), "^".join(self._order)) if p]
        return "^".join(parts)

    def __str__(self) -> str:
        return self.build()

    def __repr__(self) -> str:
        return f"Query({self.build()!r})"

    # ---------------------------------------------------------------- internals

    def _cond(self, field: str, operator: str, value: object) -> Query:
        return self._add(f"{check_field(field)}{operator}{escape_value(value)}")

    def _add(self, text: str) -> Query:
        connector = "^OR" if self._pending_or else "^"
        self._pending_or = False
        self._clauses[-1].append(_Term(connector, text))
        return self


def _render_clause(terms: Sequence[_Term]) -> str:
    out = terms[0].text
    for term in terms[1:]:
        out += term.connector + term.text
    return out


def _join_list(values: Iterable[object]) -> str:
    items = [escape_value(v) for v in values]
    if not items:
        raise QueryError("IN / NOT IN needs at least one value")
    for item in items:
        if "," in item:
            # ServiceNow has no escape for a comma inside an IN list.
            raise QueryError(f"an IN value may not contain ',': {item!r}")
    return ",".join(items)


def _split_terms(encoded: str) -> list[str]:
    """Split on single ``^`` separators, keeping ``^^`` escapes (and their text) intact."""
    terms: list[str] = []
    current: list[str] = []
    i = 0
    n = len(encoded)
    while i < n:
        ch = encoded[i]
        if ch == "^":
            if i + 1 < n and encoded[i + 1] == "^":
                current.append("^^")
                i += 2
                continue
            terms.append("".join(current))
            current = []
            i += 1
            continue
        current.append(ch)
        i += 1
    terms.append("".join(current))
    return terms


def split_encoded(encoded: str) -> tuple[list[str], list[str]]:
    """A raw encoded query as (its ``^NQ`` clauses, its ORDERBY/GROUPBY terms).

    Each clause is returned as encoded text (escapes kept). The ``EQ`` terminator
    that ServiceNow's UI appends is dropped, so a query copied from a list view
    works as is.
    """
    clauses: list[str] = []
    order: list[str] = []
    current = ""
    for term in _split_terms(encoded.strip()):
        if not term or term == "EQ":
            continue
        if term.startswith(_ORDER_PREFIXES):
            order.append(term)
            continue
        if term.startswith("NQ"):
            if current:
                clauses.append(current)
            current = term[2:]
            continue
        if term.startswith("OR"):
            current = f"{current}^{term}" if current else term[2:]
            continue
        current = f"{current}^{term}" if current else term
    if current:
        clauses.append(current)
    return clauses, order


def and_each_clause(base: str | None, clauses: Iterable[str | Query]) -> str:
    """``(base) AND (c1 OR c2 ...)`` written as NQ clauses: each base clause ANDed into each clause.

    ``base ^ (c1 NQ c2)`` is not what ServiceNow means by ``base^c1^NQc2`` (that
    restricts only c1), so the AND is distributed: ``b^c1^NQb^c2``. A base with
    its own ``^NQ`` clauses distributes over them too. ORDERBY terms of the base
    are dropped: they do not change which records match, and the caller owns
    the ordering. The result carries no ORDERBY; append it.
    """
    base_clauses, _ = split_encoded(base) if base else ([], [])
    rendered: list[str] = []
    for clause in clauses:
        text = clause.conditions() if isinstance(clause, Query) else clause
        parts, order = split_encoded(text)
        if order:
            raise QueryError("clauses given to and_each_clause() may not carry ORDERBY terms")
        for part in parts:
            if not base_clauses:
                rendered.append(part)
            for b in base_clauses:
                rendered.append(f"{b}^{part}")
    return "^NQ".join(rendered)
