"""Encoded-query builder: rendering, escaping (no value can widen a query), field checks, clause splitting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sncli.servicenow.query import Query, QueryError, _split_terms, and_each_clause, escape_value, split_encoded


def test_operators_render_in_servicenow_syntax() -> None:
    q = (
        Query()
        .eq("active", True)
        .ne("state", 7)
        .gt("priority", 1)
        .ge("impact", 2)
        .lt("urgency", 3)
        .le("sys_mod_count", 4)
        .like("short_description", "disk")
        .not_like("description", "test")
        .starts_with("number", "INC")
        .ends_with("caller_id.email", "@example.com")
        .in_("category", ["network", "hardware"])
        .not_in("state", [6, 7])
        .is_empty("assigned_to")
        .is_not_empty("caller_id")
    )
    assert q.build() == (
        "active=true^state!=7^priority>1^impact>=2^urgency<3^sys_mod_count<=4^short_descriptionLIKEdisk"
        "^descriptionNOT LIKEtest^numberSTARTSWITHINC^caller_id.emailENDSWITH@example.com"
        "^categoryINnetwork,hardware^stateNOT IN6,7^assigned_toISEMPTY^caller_idISNOTEMPTY"
    )


def test_or_nq_and_ordering() -> None:
    q = (
        Query()
        .eq("sys_updated_on", "2024-01-01 00:00:00")
        .gt("sys_id", "abc")
        .nq()
        .gt("sys_updated_on", "2024-01-01 00:00:00")
        .le("sys_updated_on", "2024-01-02 00:00:00")
        .order_by("sys_updated_on")
        .order_by("sys_id")
    )
    assert q.build() == (
        "sys_updated_on=2024-01-01 00:00:00^sys_id>abc^NQsys_updated_on>2024-01-01 00:00:00"
        "^sys_updated_on<=2024-01-02 00:00:00^ORDERBYsys_updated_on^ORDERBYsys_id"
    )
    assert Query().eq("a", 1).or_().eq("b", 2).eq("c", 3).order_by_desc("d").build() == "a=1^ORb=2^c=3^ORDERBYDESCd"
    assert str(Query().order_by("a")) == "ORDERBYa"
    assert Query().build() == ""


def test_nq_with_another_query_appends_its_clauses() -> None:
    other = Query().eq("b", 2).nq().eq("c", 3)
    assert Query().eq("a", 1).nq(other).build() == "a=1^NQb=2^NQc=3"
    with pytest.raises(QueryError):
        Query().eq("a", 1).nq(Query().eq("b", 1).order_by("b"))


@pytest.mark.parametrize(
    "build",
    [
        lambda: Query().or_(),
        lambda: Query().nq(),
        lambda: Query().eq("a", 1).or_().build(),
        lambda: Query().eq("a", 1).or_().nq(),
    ],
)
def test_misplaced_or_and_nq_are_refused(build: object) -> None:
    with pytest.raises(QueryError):
        build()  # type: ignore[operator]


@pytest.mark.parametrize("value", ["x^NQactive=false", "x^ORactive=true", "^", "a^^b", "x^ORDERBYsys_id", "x^EQ"])
def test_a_caret_in_a_value_is_refused_since_servicenow_documents_no_escape(value: str) -> None:
    # Doubling it (^^) was read as a literal caret only by sncli's own emulator.
    for build in (lambda: Query().eq("short_description", value), lambda: Query().like("d", value),
                  lambda: Query().in_("d", [value, "c"])):
        with pytest.raises(QueryError, match="may not contain '\\^'"):
            build()


def test_field_names_are_validated() -> None:
    for bad in ["", "Name", "a=b", "a^b", "a b", "a..b", ".a", "a.", "a;b", "ORDERBYx"]:
        with pytest.raises(QueryError):
            Query().eq(bad, 1)
    for bad in ["A", "x^y"]:
        with pytest.raises(QueryError):
            Query().order_by(bad)
    assert Query().eq("u_custom.field_2", 1).build() == "u_custom.field_2=1"


def test_values_that_cannot_be_expressed_safely_are_refused() -> None:
    with pytest.raises(QueryError):
        Query().eq("a", None)
    with pytest.raises(QueryError):
        Query().eq("a", "javascript:gs.getUserID()")
    with pytest.raises(QueryError):
        Query().eq("a", "  JavaScript:x")
    with pytest.raises(QueryError):
        Query().in_("a", [])
    with pytest.raises(QueryError):
        Query().in_("a", ["x,y"])


def test_and_raw_and_its_limits() -> None:
    q = Query().and_raw("active=true^ORpriority=1^ORDERBYnumber").gt("sys_updated_on", "2024-01-01 00:00:00")
    assert q.build() == "active=true^ORpriority=1^sys_updated_on>2024-01-01 00:00:00^ORDERBYnumber"
    assert Query().and_raw(None).and_raw("  ").build() == ""
    with pytest.raises(QueryError):
        Query().and_raw("a=1^NQb=2")


def test_split_encoded_understands_or_nq_orderby_eq_and_escapes() -> None:
    clauses, order = split_encoded("a=1^ORb=2^c=x^^NQy^NQd=4^ORDERBYDESCe^EQ")
    assert clauses == ["a=1^ORb=2^c=x^^NQy", "d=4"]
    assert order == ["ORDERBYDESCe"]
    assert split_encoded("") == ([], [])


def test_and_each_clause_distributes_the_base_over_every_clause() -> None:
    cursor = ["ts=2024-01-01 00:00:00^sys_id>abc", "ts>2024-01-01 00:00:00^ts<=2024-01-02 00:00:00"]
    assert and_each_clause("active=true", cursor) == (
        "active=true^ts=2024-01-01 00:00:00^sys_id>abc^NQactive=true^ts>2024-01-01 00:00:00^ts<=2024-01-02 00:00:00"
    )
    # No base: the clauses as they are.
    assert and_each_clause(None, cursor) == "^NQ".join(cursor)
    # A base with its own NQ clauses and ORDERBY: distributed, ordering dropped.
    assert and_each_clause("a=1^NQb=2^ORDERBYnumber", ["x=1", Query().eq("y", 2)]) == (
        "a=1^x=1^NQb=2^x=1^NQa=1^y=2^NQb=2^y=2"
    )
    with pytest.raises(QueryError):
        and_each_clause("a=1", ["x=1^ORDERBYx"])


@given(st.text(max_size=40).filter(lambda s: not s.lstrip().lower().startswith("javascript:") and "^" not in s))
def test_any_value_stays_inside_one_condition(value: str) -> None:
    built = Query().eq("a", value).eq("b", "1").build()
    # Exactly two terms in one clause and no ordering, whatever the value contains.
    assert _split_terms(built) == [f"a={escape_value(value)}", "b=1"]
    clauses, order = split_encoded(built)
    assert clauses == [built]
    assert order == []
