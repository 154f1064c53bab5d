"""The emulator's encoded-query parser and evaluator, operator by operator."""

from __future__ import annotations

import pytest

from sncli.emulator.query import (
    Condition,
    OrderBy,
    compile_query,
    parse,
    sort_records,
    split_segments,
)

COLUMNS = {
    "sys_id": "GUID",
    "sys_updated_on": "glide_date_time",
    "number": "string",
    "short_description": "string",
    "priority": "integer",
    "u_cost": "decimal",
    "u_code": "string",
    "active": "boolean",
    "caller_id": "reference",
    "u_other": "string",
}


def rec(**fields: str) -> dict[str, str]:
    return dict(fields)


def matches(query: str, record: dict[str, str], columns: dict[str, str] | None = None) -> bool:
    return compile_query(parse(query), columns or COLUMNS).matches(record)


def select(query: str, records: list[dict[str, str]]) -> list[str]:
    compiled = compile_query(parse(query), COLUMNS)
    return [r["number"] for r in records if compiled.matches(r)]


# ----------------------------------------------------------------------------- splitting and parsing


def test_split_plain_and_escaped_carets() -> None:
    assert split_segments("a=1^b=2") == ["a=1", "b=2"]
    assert split_segments("a=x^^y^b=2") == ["a=x^y", "b=2"]
    assert split_segments("a=x^^^b=2") == ["a=x^", "b=2"]
    assert split_segments("a=^^^^") == ["a=^^"]
    assert split_segments("") == [""]


def test_parse_and_or_binding_tighter_than_and() -> None:
    q = parse("a=1^b=2^ORc=3")
    assert q.groups == (((Condition("a", "=", "1"),), (Condition("b", "=", "2"), Condition("c", "=", "3"))),)


def test_parse_nq_groups_and_order_anywhere() -> None:
    q = parse("ORDERBYnumber^a=1^NQb=2^c=3^ORDERBYDESCpriority")
    assert len(q.groups) == 2
    assert q.groups[1] == ((Condition("b", "=", "2"),), (Condition("c", "=", "3"),))
    assert q.order == (OrderBy("number", False), OrderBy("priority", True))


def test_parse_keyset_query_sncli_sends() -> None:
    text = (
        "active=true^sys_updated_on=2026-01-01 00:00:00^sys_id>abc^NQactive=true^sys_updated_on>2026-01-01 00:00:00"
        "^sys_updated_on<=2026-01-02 00:00:00^ORDERBYsys_updated_on^ORDERBYsys_id"
    )
    q = parse(text)
    assert [len(g) for g in q.groups] == [3, 3]
    assert q.groups[0][2] == (Condition("sys_id", ">", "abc"),)
    assert q.groups[1][2] == (Condition("sys_updated_on", "<=", "2026-01-02 00:00:00"),)
    assert q.order == (OrderBy("sys_updated_on"), OrderBy("sys_id"))


@pytest.mark.parametrize(
    ("segment", "expected"),
    [
        ("priority=1", Condition("priority", "=", "1")),
        ("priority!=1", Condition("priority", "!=", "1")),
        ("priority>1", Condition("priority", ">", "1")),
        ("priority>=1", Condition("priority", ">=", "1")),
        ("priority<1", Condition("priority", "<", "1")),
        ("priority<=1", Condition("priority", "<=", "1")),
        ("numberLIKEINC", Condition("number", "LIKE", "INC")),
        ("numberNOT LIKEINC", Condition("number", "NOT LIKE", "INC")),
        ("numberSTARTSWITHINC", Condition("number", "STARTSWITH", "INC")),
        ("numberENDSWITH7", Condition("number", "ENDSWITH", "7")),
        ("priorityIN1,2", Condition("priority", "IN", "1,2")),
        ("priorityNOT IN1,2", Condition("priority", "NOT IN", "1,2")),
        ("numberISEMPTY", Condition("number", "ISEMPTY", "")),
        ("numberISNOTEMPTY", Condition("number", "ISNOTEMPTY", "")),
        ("priorityBETWEEN1@3", Condition("priority", "BETWEEN", "1@3")),
        ("numberSAMEASu_code", Condition("number", "SAMEAS", "u_code")),
        ("a=b=c", Condition("a", "=", "b=c")),
        ("inbox=1", Condition("inbox", "=", "1")),
        ("caller_id.name=x", Condition("caller_id.name", "=", "x")),
    ],
)
def test_parse_each_operator(segment: str, expected: Condition) -> None:
    assert parse(segment).groups == (((expected,),),)


def test_date_generate_values_are_evaluated() -> None:
    q = parse("sys_updated_on>javascript:gs.dateGenerate('2026-01-02','12:00:00')")
    assert q.groups[0][0][0].value == "2026-01-02 12:00:00"
    q = parse("sys_updated_on<=javascript:gs.dateGenerate('2026-01-02','end')")
    assert q.groups[0][0][0].value == "2026-01-02 23:59:59"
    q = parse(
        'sys_updated_onBETWEENjavascript:gs.dateGenerate("2026-01-01 00:00:01")'
        '@javascript:gs.dateGenerate("2026-01-01 00:00:02")'
    )
    assert q.groups[0][0][0].value == "2026-01-01 00:00:01@2026-01-01 00:00:02"
    q = parse("short_description=javascript:gs.getUserID()")
    assert q.groups[0][0][0].value == "javascript:gs.getUserID()"  # other scripts stay opaque text


def test_parse_records_invalid_segments_and_skips_markers() -> None:
    q = parse("garbage^priority=1^EQ^GROUPBYpriority^opened_atONToday@javascript:gs.beginningOfToday()")
    assert q.groups == (((Condition("priority", "=", "1"),),),)
    assert q.invalid == ("garbage", "opened_atONToday@javascript:gs.beginningOfToday()")


def test_parse_empty_and_blank_segments() -> None:
    assert parse("").groups == ()
    assert parse(None).groups == ()
    assert parse("^^").groups == ()  # a lone literal caret is not a condition
    assert parse("priority=1^^").groups == (((Condition("priority", "=", "1^"),),),)
    assert parse("priority=1^").groups == (((Condition("priority", "=", "1"),),),)


def test_leading_or_becomes_and_term() -> None:
    assert parse("ORpriority=1").groups == (((Condition("priority", "=", "1"),),),)


# ----------------------------------------------------------------------------- evaluation


RECORDS = [
    rec(number="INC1", priority="1", u_cost="9.5", short_description="Printer jam", active="true", u_code="9"),
    rec(number="INC2", priority="10", u_cost="10", short_description="VPN down", active="false", u_code="10"),
    rec(number="INC3", priority="2", u_cost="", short_description="", active="true", u_code="abc"),
    rec(number="INC4", priority="", short_description="printer ^ toner", active="true", u_code="b"),
]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("priority=1", ["INC1"]),
        ("priority=1.0", ["INC1"]),  # integer columns compare as numbers
        ("priority!=1", ["INC2", "INC3", "INC4"]),  # != keeps empty values
        ("priority>2", ["INC2"]),  # 10 > 2 numerically, empty never compares
        ("priority>=2", ["INC2", "INC3"]),
        ("priority<2", ["INC1"]),
        ("priority<=2", ["INC1", "INC3"]),
        ("u_cost>9.75", ["INC2"]),
        ("u_code>9", ["INC2", "INC3", "INC4"]),  # string column: 10 > 9 as numbers, abc/b > 9 as text
        ("u_code<9", []),
        ("u_code<b", ["INC1", "INC2", "INC3"]),
        ("short_descriptionLIKEprinter", ["INC1", "INC4"]),  # case-insensitive, as on the instance
        ("short_descriptionNOT LIKEprinter", ["INC2", "INC3"]),
        ("short_descriptionSTARTSWITHvpn", ["INC2"]),
        ("short_descriptionENDSWITHJAM", ["INC1"]),
        ("priorityIN1,2", ["INC1", "INC3"]),
        ("priorityNOT IN1,2", ["INC2", "INC4"]),
        ("short_descriptionISEMPTY", ["INC3"]),
        ("short_descriptionISNOTEMPTY", ["INC1", "INC2", "INC4"]),
        ("u_costISEMPTY", ["INC3", "INC4"]),  # a missing field is empty
        ("priorityBETWEEN1@2", ["INC1", "INC3"]),
        ("numberANYTHING", ["INC1", "INC2", "INC3", "INC4"]),
        ("numberSAMEASnumber", ["INC1", "INC2", "INC3", "INC4"]),
        ("numberNSAMEASu_code", ["INC1", "INC2", "INC3", "INC4"]),
        ("active=true", ["INC1", "INC3", "INC4"]),
        ("short_descriptionLIKE^^", ["INC4"]),  # escaped caret is data
        ("short_description=printer ^^ toner", ["INC4"]),
    ],
)
def test_operators(query: str, expected: list[str]) -> None:
    assert select(query, RECORDS) == expected


def test_and_or_nq_combinations() -> None:
    assert select("active=true^priority=1^ORpriority=2", RECORDS) == ["INC1", "INC3"]
    assert select("priority=1^ORpriority=10^active=false", RECORDS) == ["INC2"]
    assert select("priority=1^NQpriority=10", RECORDS) == ["INC1", "INC2"]
    assert select("priority=1^active=false^NQpriority=2^active=true", RECORDS) == ["INC3"]
    assert select("", RECORDS) == ["INC1", "INC2", "INC3", "INC4"]


def test_string_typed_values_compare_as_text_for_guid_and_datetime() -> None:
    columns = {"sys_id": "GUID", "sys_updated_on": "glide_date_time"}
    # Both sides look numeric, but GUID columns never compare as numbers: "10" < "9" as text.
    assert matches("sys_id<9", {"sys_id": "10"}, columns)
    assert not matches("sys_id>9", {"sys_id": "10"}, columns)
    assert matches("sys_updated_on>2026-01-01 00:00:00", {"sys_updated_on": "2026-01-01 00:00:01"}, columns)
    assert not matches("sys_updated_on>2026-01-01 00:00:00", {"sys_updated_on": "2026-01-01 00:00:00"}, columns)
    assert matches("sys_updated_on>=2026-01-01 00:00:00", {"sys_updated_on": "2026-01-01 00:00:00"}, columns)


# ----------------------------------------------------------------------------- unknown fields


def test_condition_on_unknown_field_is_dropped_not_false() -> None:
    assert select("nosuchfield=42", RECORDS) == ["INC1", "INC2", "INC3", "INC4"]
    assert select("priority=1^nosuchfield=42", RECORDS) == ["INC1"]
    compiled = compile_query(parse("priority=1^nosuchfield=42"), COLUMNS)
    assert compiled.ignored == ("nosuchfield=42",)


def test_unknown_field_in_or_alternative_keeps_the_known_one() -> None:
    assert select("priority=1^ORnosuchfield=42", RECORDS) == ["INC1"]


def test_nq_group_with_only_unknown_fields_admits_everything() -> None:
    assert select("priority=1^NQnosuchfield=42", RECORDS) == ["INC1", "INC2", "INC3", "INC4"]


def test_sameas_unknown_other_field_is_dropped() -> None:
    assert select("numberSAMEASnosuch^priority=1", RECORDS) == ["INC1"]


def test_invalid_condition_is_dropped() -> None:
    assert select("priority=1^garbage", RECORDS) == ["INC1"]


# ----------------------------------------------------------------------------- ordering


def test_orderby_unknown_field_is_ignored() -> None:
    compiled = compile_query(parse("ORDERBYnosuch^ORDERBYpriority"), COLUMNS)
    assert compiled.order == (OrderBy("priority"),)
    assert "ORDERBYnosuch" in compiled.ignored


def numbers(records: list[dict[str, str]]) -> list[str]:
    return [r["number"] for r in records]


def test_sort_numeric_column_empty_first() -> None:
    out = sort_records(RECORDS, [OrderBy("priority")], COLUMNS, lambda r: r)
    assert numbers(out) == ["INC4", "INC1", "INC3", "INC2"]
    out = sort_records(RECORDS, [OrderBy("priority", True)], COLUMNS, lambda r: r)
    assert numbers(out) == ["INC2", "INC3", "INC1", "INC4"]


def test_sort_string_column_all_numeric_sorts_as_numbers_else_text() -> None:
    numeric = [rec(number="a", u_code="10"), rec(number="b", u_code="9")]
    assert numbers(sort_records(numeric, [OrderBy("u_code")], COLUMNS, lambda r: r)) == ["b", "a"]
    mixed = [*numeric, rec(number="c", u_code="abc")]
    assert numbers(sort_records(mixed, [OrderBy("u_code")], COLUMNS, lambda r: r)) == ["a", "b", "c"]


def test_sort_multiple_keys_and_stability() -> None:
    rows = [
        rec(number="1", active="true", priority="2"),
        rec(number="2", active="false", priority="1"),
        rec(number="3", active="true", priority="1"),
        rec(number="4", active="false", priority="1"),
    ]
    out = sort_records(rows, [OrderBy("active", True), OrderBy("priority")], COLUMNS, lambda r: r)
    assert numbers(out) == ["3", "1", "2", "4"]
