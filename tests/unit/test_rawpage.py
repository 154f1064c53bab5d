"""RawPage: each record's JSON as received, plus the decoded fields the source reads."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sncli.config import FieldsKey, SysIdKey
from sncli.source.cursor import Cursor, CursorOrderError, advance
from sncli.source.keys import keys_of
from sncli.source.rawpage import RawPage, column, raw_page_decoder
from sncli.source.record import RecordShape, TimestampCache, build_page, decoded_fields

TS = "sys_updated_on"
EXTRACTED = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
SHAPE = RecordShape(table="incident", instance="x", key=SysIdKey(type="sys_id"))


def _decode(records: list[dict[str, Any]], body: bytes | None = None, fields: list[str] | None = None) -> RawPage:
    decoder = raw_page_decoder(fields or decoded_fields(SHAPE))
    assert decoder is not None
    return decoder(body if body is not None else orjson.dumps({"result": records}))


def _rec(i: int, ts: str = "2024-01-01 00:00:00", **extra: Any) -> dict[str, Any]:
    return {"sys_id": f"{i:032x}", TS: ts, "number": f"INC{i}", **extra}


def test_values_are_the_records_bytes_as_received() -> None:
    # Spacing and escapes as the server wrote them: the value is that record's own text.
    body = (b'{"result": [ {"sys_id": "' + b"a" * 32 + b'", "short_description": "caf\\u00e9 \\"quoted\\"", '
            b'"sys_updated_on": "2024-01-01 00:00:00"} ,{"sys_id":"' + b"b" * 32 + b'","sys_updated_on":"2024-01-01 '
            b'00:00:01"}], "extra": 1}')
    page = _decode([], body)
    assert len(page) == 2
    assert bytes(page.values[0]).startswith(b'{"sys_id": "') and b"caf\\u00e9" in bytes(page.values[0])
    assert orjson.loads(bytes(page.values[0])) == {"sys_id": "a" * 32, "short_description": 'café "quoted"',
                                            TS: "2024-01-01 00:00:00"}
    assert page.column("sys_id") == ["a" * 32, "b" * 32]
    assert page.column(TS) == ["2024-01-01 00:00:00", "2024-01-01 00:00:01"]


def test_missing_fields_are_none_and_only_decoded_fields_exist() -> None:
    page = _decode([{"sys_id": "a" * 32}, {"number": "x"}])
    assert page.column(TS) == [None, None] and page.column("sys_id") == ["a" * 32, None]
    assert page[0] == {"sys_id": "a" * 32} and page[1] == {}
    with pytest.raises(KeyError):
        page.column("number")


def test_display_value_all_fields_decode_as_objects() -> None:
    wrapped = {"sys_id": {"value": "a" * 32, "display_value": "a" * 32},
               TS: {"value": "2024-01-01 00:00:00", "display_value": "01/01/2024 00:00:00"}}
    page = _decode([wrapped])
    assert page.column(TS) == [wrapped[TS]]
    assert advance(Cursor.at_start("2023-01-01 00:00:00"), page, TS) == Cursor("2024-01-01 00:00:00", "a" * 32)
    msgs = build_page(page, SHAPE, extracted_at=EXTRACTED, cache=TimestampCache())
    assert msgs.keys == [b"a" * 32] and msgs.timestamps == [1704067200000]


@pytest.mark.parametrize("body", [b"not json", b'{"result": {"sys_id": "x"}}', b'{"records": []}',
                                  b'{"result": [1, 2]}', b'{"result": [{"sys_id": "x"}'])
def test_a_body_that_is_not_a_page_is_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError, match="not a Table API page"):
        _decode([], body)


def test_sequence_behaviour() -> None:
    page = _decode([_rec(1), _rec(2), _rec(3)])
    assert page[-1] == {"sys_id": f"{3:032x}", TS: "2024-01-01 00:00:00"}
    assert [r["sys_id"] for r in page] == [f"{i:032x}" for i in (1, 2, 3)]
    assert page[1:] == [page[1], page[2]]
    assert bool(page) and not _decode([])
    with pytest.raises(IndexError):
        page[3]
    assert column(page, "sys_id") == page.column("sys_id")
    assert column([{"sys_id": "x"}, {}], "sys_id") == ["x", None]


def test_without_msgspec_there_is_no_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "msgspec", None)  # import msgspec -> ImportError
    assert raw_page_decoder(["sys_id"]) is None


def test_field_names_need_not_be_identifiers() -> None:
    page = _decode([{"sys_id": "a" * 32, "1st-field": "v", "class": "c"}], fields=["sys_id", "1st-field", "class"])
    assert page.column("1st-field") == ["v"] and page.column("class") == ["c"]


def test_build_page_of_a_raw_page_refuses_an_encoder() -> None:
    with pytest.raises(TypeError):
        build_page(_decode([_rec(1)]), SHAPE, extracted_at=EXTRACTED, cache=TimestampCache(),
                   encode_page=lambda rs: [b"x" for _ in rs])


# ------------------------------------------------------------------ a RawPage and the dicts agree

_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
_SECOND = st.sampled_from(["2024-01-01 00:00:00", "2024-01-01 00:00:01", "2024-02-29 23:59:59", "", "junk"])


@st.composite
def _records(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(0, 8))
    out = []
    for i in range(n):
        record: dict[str, Any] = {"sys_id": f"{i:032x}", TS: draw(_SECOND)}
        for name in draw(st.lists(st.sampled_from(["number", "company", "location", "u_x"]), max_size=3)):
            record[name] = draw(_TEXT)
        if draw(st.integers(0, 9)) == 0:
            del record["sys_id"]
        out.append(record)
    return out


@settings(max_examples=200, deadline=None)
@given(records=_records(), by_fields=st.booleans())
def test_a_raw_page_builds_the_same_messages_as_the_decoded_records(
    records: list[dict[str, Any]], by_fields: bool
) -> None:
    key = FieldsKey(type="fields", fields=["company", "location"]) if by_fields else SysIdKey(type="sys_id")
    shape = RecordShape(table="incident", instance="x", key=key)
    page = _decode(records, fields=decoded_fields(shape))
    raw = build_page(page, shape, extracted_at=EXTRACTED, cache=TimestampCache())
    decoded = build_page(records, shape, extracted_at=EXTRACTED, cache=TimestampCache())
    assert raw.keys == decoded.keys == keys_of(records, key) == keys_of(page, key)
    assert raw.headers == decoded.headers and raw.timestamps == decoded.timestamps
    assert [orjson.loads(bytes(v)) for v in raw.values] == records


@settings(max_examples=200, deadline=None)
@given(records=_records())
def test_advance_over_a_raw_page_matches_the_decoded_records(records: list[dict[str, Any]]) -> None:
    records.sort(key=lambda r: (r[TS], r.get("sys_id", "")))
    page = _decode(records)
    start = Cursor.at_start("2023-01-01 00:00:00")
    try:
        expected: Cursor | type[Exception] = advance(start, records, TS)
    except (CursorOrderError, ValueError) as exc:
        expected = type(exc)
    if isinstance(expected, Cursor):
        assert advance(start, page, TS) == expected
    else:
        with pytest.raises(expected):
            advance(start, page, TS)
