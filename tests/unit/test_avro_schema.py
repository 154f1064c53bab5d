"""Avro schemas from sys_dictionary / records, value conversion, and schema evolution (pure)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sncli.kafka.avro_schema import (
    RecordConverter,
    avro_name,
    covered_columns,
    from_avro_value,
    merge_schemas,
    schema_from_dictionary,
    schema_from_records,
    sn_names,
    to_avro_record,
    with_columns,
)

DICTIONARY = [
    {"name": "incident", "element": "", "internal_type": "collection", "max_length": "40"},
    {"name": "incident", "element": "number", "internal_type": "string", "max_length": "40"},
    {"name": "incident", "element": "priority", "internal_type": "integer", "max_length": "40"},
    {"name": "incident", "element": "active", "internal_type": "boolean", "max_length": "40"},
    {"name": "incident", "element": "cost", "internal_type": "decimal", "max_length": "15"},
    {"name": "incident", "element": "price", "internal_type": "currency", "max_length": "20"},
    {"name": "incident", "element": "sys_updated_on", "internal_type": "glide_date_time", "max_length": "40"},
    {"name": "incident", "element": "opened_on", "internal_type": "glide_date", "max_length": "40"},
    {"name": "incident", "element": "caller_id", "internal_type": "reference", "max_length": "32"},
    {"name": "incident", "element": "state", "internal_type": {"value": "integer", "link": "x"}, "max_length": "40"},
    {"name": "task", "element": "priority", "internal_type": "string", "max_length": "40"},  # parent: first wins
]


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


def _roundtrip(schema: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    parsed = fastavro.parse_schema(schema)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, value)
    buf.seek(0)
    result: dict[str, Any] = fastavro.schemaless_reader(buf, parsed, parsed)
    return result


def test_dictionary_types_map_to_nullable_avro_types_with_string_fallback() -> None:
    schema = schema_from_dictionary("incident", DICTIONARY)
    fastavro.parse_schema(schema)  # a valid Avro schema
    assert schema["type"] == "record" and schema["name"] == "incident" and schema["namespace"] == "servicenow"
    assert schema["fields"][0]["name"] == "sys_id"  # always present, always first
    assert _field(schema, "number")["type"] == ["null", "string"]
    assert _field(schema, "priority")["type"] == ["null", "long", "string"]
    assert _field(schema, "state")["type"] == ["null", "long", "string"]  # reference-object column value
    assert _field(schema, "active")["type"] == ["null", "boolean", "string"]
    assert _field(schema, "cost")["type"] == ["null", "double", "string"]
    assert _field(schema, "price")["type"] == ["null", "string"]
    assert _field(schema, "sys_updated_on")["type"] == ["null", "string"]
    assert _field(schema, "caller_id")["type"] == ["null", "string"]
    assert all(f["default"] is None and f["type"][0] == "null" for f in schema["fields"])
    assert "" not in covered_columns(schema)  # the collection row is not a column


def test_timestamps_flag_uses_timestamp_millis_and_typed_false_is_all_strings() -> None:
    ts = schema_from_dictionary("incident", DICTIONARY, timestamps=True)
    assert _field(ts, "sys_updated_on")["type"][1] == {"type": "long", "logicalType": "timestamp-millis"}
    assert _field(ts, "opened_on")["type"] == ["null", "string"]
    plain = schema_from_dictionary("incident", DICTIONARY, typed=False, timestamps=True)
    assert all(f["type"] == ["null", "string"] for f in plain["fields"])


def test_same_dictionary_in_any_order_gives_the_same_schema() -> None:
    rows = [r for r in DICTIONARY if r["name"] == "incident"]
    assert schema_from_dictionary("incident", rows) == schema_from_dictionary("incident", list(reversed(rows)))


def test_schema_from_records_is_all_strings_over_the_union_of_keys() -> None:
    schema = schema_from_records("incident", [{"a": "1"}, {"b": "2", "sys_id": "x"}])
    fastavro.parse_schema(schema)
    assert [f["name"] for f in schema["fields"]] == ["sys_id", "a", "b"]
    assert all(f["type"] == ["null", "string"] for f in schema["fields"])
    assert [f["name"] for f in schema_from_records("incident", [])["fields"]] == ["sys_id"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("u_field", "u_field"), ("u-field.x", "u_field_x"), ("1st", "_1st"), ("", "_"), ("é", "_")],
)
def test_avro_name_sanitises(raw: str, expected: str) -> None:
    assert avro_name(raw) == expected


def test_renamed_and_colliding_columns_keep_their_servicenow_name() -> None:
    schema = schema_from_records("x_app.table", [{"u-a": "1", "u_a": "2", "9lives": "3"}])
    fastavro.parse_schema(schema)
    assert schema["name"] == "x_app_table"
    names = sn_names(schema)
    assert set(names.values()) == {"sys_id", "u-a", "u_a", "9lives"}
    assert len(set(names)) == 4  # no two Avro fields share a name
    converted = to_avro_record(schema, {"u-a": "1", "u_a": "2", "9lives": "3", "sys_id": "s"})
    assert {names[k]: v for k, v in converted.items()} == {"u-a": "1", "u_a": "2", "9lives": "3", "sys_id": "s"}


def test_conversion_types_values_and_keeps_unparseable_ones_as_strings() -> None:
    schema = schema_from_dictionary("incident", DICTIONARY, timestamps=True)
    record = {
        "sys_id": "a" * 32,
        "number": "INC0001",
        "priority": "3",
        "state": "not-a-number",
        "active": "true",
        "cost": "12.50",
        "price": "USD;10",
        "sys_updated_on": "2024-02-29 23:59:59",
        "opened_on": "",
        "caller_id": {"value": "b" * 32, "link": "https://x"},
    }
    out = to_avro_record(schema, record)
    assert out["priority"] == 3
    assert out["state"] == "not-a-number"  # kept, not lost, not a crash
    assert out["active"] is True
    assert out["cost"] == 12.5
    assert out["price"] == "USD;10"
    assert out["sys_updated_on"] == int(datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC).timestamp()) * 1000
    assert out["opened_on"] == ""  # string field: the empty string is kept
    assert out["caller_id"] == '{"value":"' + "b" * 32 + '","link":"https://x"}'
    back = _roundtrip(schema, out)
    assert back["priority"] == 3 and back["state"] == "not-a-number"
    assert from_avro_value(back["sys_updated_on"]) == "2024-02-29 23:59:59"


@pytest.mark.parametrize(
    ("field", "raw", "expected"),
    [
        ("priority", "", None),
        ("priority", "-7", -7),
        ("priority", "99999999999999999999", "99999999999999999999"),  # beyond a long: kept as text
        ("priority", "1.5", "1.5"),
        ("priority", 4, 4),
        ("priority", True, "true"),
        ("active", "false", False),
        ("active", "", None),
        ("active", "1", "1"),
        ("cost", "nan", "nan"),
        ("cost", "1e400", "1e400"),
        ("cost", "", None),
        ("cost", 2, 2.0),
        ("sys_updated_on", "2024-13-01 00:00:00", "2024-13-01 00:00:00"),
        ("sys_updated_on", "yesterday", "yesterday"),
        ("sys_updated_on", "", None),
        ("number", None, None),
        ("number", 5, "5"),
        ("number", ["a"], '["a"]'),
    ],
)
def test_edge_values_never_crash_and_never_vanish(field: str, raw: Any, expected: Any) -> None:
    schema = schema_from_dictionary("incident", DICTIONARY, timestamps=True)
    out = to_avro_record(schema, {field: raw})
    assert out[field] == expected
    _roundtrip(schema, out)


def test_missing_fields_are_null_and_extra_columns_need_evolution() -> None:
    schema = schema_from_dictionary("incident", DICTIONARY)
    convert = RecordConverter(schema)
    assert convert({"sys_id": "s"})["number"] is None
    assert convert.missing_columns({"sys_id": "s", "u_new": "x"}) == {"u_new"}
    evolved = with_columns(schema, ["u_new", "number"])
    assert [f["name"] for f in evolved["fields"]] == [f["name"] for f in schema["fields"]] + ["u_new"]
    assert RecordConverter(evolved)({"u_new": "x"})["u_new"] == "x"


def test_merge_keeps_old_fields_and_types_and_appends_new_ones() -> None:
    old = schema_from_records("incident", [{"number": "1", "priority": "2"}])
    new = schema_from_dictionary("incident", DICTIONARY)
    merged = merge_schemas(old, new)
    fastavro.parse_schema(merged)
    old_names = [f["name"] for f in old["fields"]]
    assert [f["name"] for f in merged["fields"]][: len(old_names)] == old_names
    assert _field(merged, "priority")["type"] == ["null", "string"]  # old type kept: BACKWARD compatible
    assert _field(merged, "active")["type"] == ["null", "boolean", "string"]
    assert covered_columns(merged) == covered_columns(old) | covered_columns(new)
    assert merge_schemas(merged, old) == merged  # nothing new: unchanged
    assert merge_schemas(old, old) == old


def test_merged_schema_reads_data_written_with_the_old_one() -> None:
    old = schema_from_records("incident", [{"number": "1"}])
    new = merge_schemas(old, schema_from_records("incident", [{"u_new": "x"}]))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(old), {"sys_id": "s", "number": "1"})
    buf.seek(0)
    read = fastavro.schemaless_reader(buf, fastavro.parse_schema(old), fastavro.parse_schema(new))
    assert read == {"sys_id": "s", "number": "1", "u_new": None}


_values = st.one_of(
    st.none(),
    st.text(max_size=20),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["", "true", "false", "12", "-3", "1.25", "2024-01-01 00:00:00", "9" * 30]),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([r["element"] for r in DICTIONARY if r["element"]]), _values))
def test_any_record_converts_to_a_value_the_schema_accepts(record: dict[str, Any]) -> None:
    schema = schema_from_dictionary("incident", DICTIONARY, timestamps=True)
    out = to_avro_record(schema, record)
    back = _roundtrip(schema, out)
    for key, value in record.items():
        if value is not None and value != "":
            assert back[key] is not None, (key, value)  # a present value is never lost
