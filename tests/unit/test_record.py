"""A page -> Kafka messages: keys, values, headers, timestamps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from sncli.config import FieldsKey, SysIdKey
from sncli.source.record import (
    RecordShape,
    TimestampCache,
    build_page,
    instance_name,
    iso_millis,
)

A, B = "a" * 32, "b" * 32
EXTRACTED = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
SHAPE = RecordShape(table="incident", instance="dev1.service-now.com", key=SysIdKey(type="sys_id"))


def _page() -> list[dict[str, str]]:
    return [
        {"sys_id": A, "sys_updated_on": "2024-01-01 00:00:00", "number": "INC1"},
        {"sys_id": B, "sys_updated_on": "2024-01-01 00:00:01", "number": "INC2"},
    ]


def test_build_page_keys_values_headers_timestamps() -> None:
    msgs = build_page(_page(), SHAPE, extracted_at=EXTRACTED, cache=TimestampCache())
    assert len(msgs) == 2
    assert msgs.keys == [A.encode(), B.encode()]
    assert [orjson.loads(v) for v in msgs.values] == _page()
    assert msgs.timestamps == [1704067200000, 1704067201000]
    assert msgs.headers[0] == [
        ("sn.table", b"incident"),
        ("sn.instance", b"dev1.service-now.com"),
        ("sn.sys_id", A.encode()),
        ("sn.extracted_at", b"2024-05-01T12:00:00.123Z"),
        ("sn.operation", b"upsert"),
    ]
    assert dict(msgs.headers[1])["sn.sys_id"] == B.encode()


def test_kafka_timestamp_is_sys_updated_on_even_when_the_cursor_field_differs() -> None:
    shape = RecordShape(table="incident", instance="x", key=SysIdKey(type="sys_id"), ts_field="sys_created_on")
    page = [{"sys_id": A, "sys_updated_on": "2024-01-01 00:00:02", "sys_created_on": "2023-01-01 00:00:00"}]
    assert build_page(page, shape, extracted_at=EXTRACTED, cache=TimestampCache()).timestamps == [1704067202000]


def test_kafka_timestamp_falls_back_to_the_cursor_field_when_sys_updated_on_is_not_fetched() -> None:
    shape = RecordShape(table="incident", instance="x", key=SysIdKey(type="sys_id"), ts_field="sys_created_on")
    page = [{"sys_id": A, "sys_created_on": "2024-01-01 00:00:00"}]
    assert build_page(page, shape, extracted_at=EXTRACTED, cache=TimestampCache()).timestamps == [1704067200000]


def test_unparseable_timestamp_lets_the_producer_stamp_it() -> None:
    page = [{"sys_id": A, "sys_updated_on": ""}, {"sys_id": B, "sys_updated_on": "01/02/2024"}]
    assert build_page(page, SHAPE, extracted_at=EXTRACTED, cache=TimestampCache()).timestamps == [0, 0]


def test_one_odd_timestamp_in_a_page_leaves_the_others_exact() -> None:
    values = ["2024-01-01 00:00:02", "", "2024-01-01 00:00:00+01:00", {"value": "2024-01-01 00:00:03"}, None,
              "2024-01-01 00:00:02"]
    assert TimestampCache().millis_many(values) == [1704067202000, 0, 1704063600000, 1704067203000, 0,
                                                    1704067202000]
    assert TimestampCache().millis_many(["2024-01-01 00:00:02"] * 3) == [1704067202000] * 3


def test_fields_key_strategy_is_applied() -> None:
    shape = RecordShape(table="incident", instance="x", key=FieldsKey(type="fields", fields=["number"]))
    msgs = build_page(_page(), shape, extracted_at=EXTRACTED, cache=TimestampCache())
    assert all(len(k) == 64 for k in msgs.keys)
    assert msgs.keys[0] != msgs.keys[1]


def test_custom_encoder_is_used_for_values() -> None:
    msgs = build_page(_page(), SHAPE, extracted_at=EXTRACTED, cache=TimestampCache(),
                      encode=lambda r: r["number"].encode())
    assert msgs.values == [b"INC1", b"INC2"]


def test_empty_page() -> None:
    msgs = build_page([], SHAPE, extracted_at=EXTRACTED, cache=TimestampCache())
    assert len(msgs) == 0 and msgs.headers == [] and msgs.timestamps == []


def test_timestamp_cache_parses_each_second_once_and_stays_bounded() -> None:
    cache = TimestampCache(limit=2)
    assert cache.millis("1970-01-01 00:00:01") == 1000
    assert cache.millis("1970-01-01 00:00:01") == 1000
    assert cache.millis({"value": "1970-01-01 00:00:02"}) == 2000
    assert cache.millis("1970-01-01 00:00:03") == 3000  # over the limit: cleared, still right
    assert len(cache._cache) <= 2
    assert cache.millis(None) == 0


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://dev1.service-now.com", "dev1.service-now.com"),
        ("http://127.0.0.1:18080", "127.0.0.1:18080"),
        ("https://user:secret@dev1.service-now.com/", "dev1.service-now.com"),
    ],
)
def test_instance_name_never_carries_credentials(url: str, name: str) -> None:
    assert instance_name(url) == name


def test_iso_millis_naive_is_utc() -> None:
    assert iso_millis(datetime(2024, 1, 1, 0, 0, 0, 5000)) == "2024-01-01T00:00:00.005Z"


def test_page_encoder_is_used_for_values() -> None:
    msgs = build_page(_page(), SHAPE, extracted_at=EXTRACTED, cache=TimestampCache(),
                      encode_page=lambda rs: [r["number"].encode() + b"!" for r in rs])
    assert msgs.values == [b"INC1!", b"INC2!"]


def test_millis_many_of_a_bulk_update_page() -> None:
    values = ["1970-01-01 00:00:01"] * 500 + ["1970-01-01 00:00:02", None, "", "1970-01-01 00:00:01"]
    assert TimestampCache().millis_many(values) == [1000] * 500 + [2000, 0, 0, 1000]


def test_millis_many_handles_display_value_all_objects_and_stays_bounded() -> None:
    cache = TimestampCache(limit=3)
    wrapped = [{"value": f"1970-01-01 00:00:{s:02d}", "display_value": "x"} for s in range(10)] + [{"value": None}]
    assert cache.millis_many(wrapped) == [s * 1000 for s in range(10)] + [0]
    assert len(cache._cache) <= 3
    seconds = [f"1970-01-01 00:00:{s:02d}" for s in range(10)]
    assert cache.millis_many(seconds) == [s * 1000 for s in range(10)]


def test_display_value_all_records_get_plain_keys_and_sys_id_headers() -> None:
    page: list[dict[str, Any]] = [
        {"sys_id": {"value": A, "display_value": A}, "sys_updated_on": {"value": "2024-01-01 00:00:00"}},
        {"sys_id": B, "sys_updated_on": "2024-01-01 00:00:01"},
        {"number": "no sys_id"},
    ]
    msgs = build_page(page, SHAPE, extracted_at=EXTRACTED, cache=TimestampCache())
    assert msgs.keys == [A.encode(), B.encode(), b""]
    assert [dict(h)["sn.sys_id"] for h in msgs.headers] == [A.encode(), B.encode(), b""]
    assert msgs.timestamps == [1704067200000, 1704067201000, 0]


def test_fields_key_pages_still_carry_the_sys_id_header() -> None:
    shape = RecordShape(table="incident", instance="x", key=FieldsKey(type="fields", fields=["number"]))
    msgs = build_page(_page(), shape, extracted_at=EXTRACTED, cache=TimestampCache())
    assert [dict(h)["sn.sys_id"] for h in msgs.headers] == [A.encode(), B.encode()]
    assert msgs.keys[0] != A.encode()
