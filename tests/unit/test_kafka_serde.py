"""Value decoding never raises anything but DecodeError for bad input; JSON and Avro encodings.

Avro tests here use confluent_kafka's in-memory registry client (a fake of the
registry, not of Kafka); the real registry round trip is in
tests/integration/test_kafka_avro.py.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sncli.kafka.avro_schema import schema_from_dictionary, schema_from_records
from sncli.kafka.errors import DecodeError
from sncli.kafka.serde import (
    AvroValueDeserializer,
    AvroValueSerializer,
    decode_json,
    decode_value,
    encode_json,
)


@pytest.fixture
def registry() -> Any:
    from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient

    return MockSchemaRegistryClient({"url": "mock://"})


def test_json_round_trip() -> None:
    record = {"sys_id": "a" * 32, "short_description": "Ünïcode ✓", "n": "1"}
    raw = encode_json(record)
    assert isinstance(raw, bytes)
    assert decode_value(raw) == record


def test_tombstone_is_none() -> None:
    assert decode_value(None) is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[1,2]", "JSON an array"),
        (b'"text"', "JSON a string"),
        (b"42", "JSON a number"),
        (b"true", "JSON a boolean"),
        (b"null", "JSON null"),
        (b"{not json", "not valid JSON"),
        (b'{"a": "\xff"}', "not valid JSON"),  # invalid UTF-8
        (b"", "empty"),
        (b"\x00\x00\x00\x00\x01abc", "no schema registry"),
    ],
)
def test_bad_values_raise_decode_error_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_value(raw)
    assert reason in info.value.reason


def test_decode_accepts_bytearray_and_memoryview() -> None:
    assert decode_value(bytearray(b'{"a":1}')) == {"a": 1}
    assert decode_value(memoryview(b'{"a":1}')) == {"a": 1}
    assert decode_json(b' {"a":1} ') == {"a": 1}


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_decode_error_only(raw: bytes) -> None:
    try:
        value = decode_value(raw)
    except DecodeError:
        return
    assert isinstance(value, dict)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_any_json_value_decodes_to_itself_or_raises_decode_error(value: Any) -> None:
    raw = orjson.dumps(value)
    if isinstance(value, dict):
        assert decode_value(raw) == orjson.loads(raw)
    else:
        with pytest.raises(DecodeError):
            decode_value(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema_id=st.integers(min_value=0, max_value=2**32 - 1), payload=st.binary(max_size=60))
def test_random_avro_framed_bytes_raise_decode_error_only(registry: Any, schema_id: int, payload: bytes) -> None:
    serializer = AvroValueSerializer(registry, "fuzz", schema_from_records("incident", [{"number": "x"}]))
    serializer.encode({"sys_id": "s", "number": "1"})  # one known schema id (1) in the registry
    deserializer = AvroValueDeserializer(registry)
    raw = b"\x00" + schema_id.to_bytes(4, "big") + payload
    try:
        value = decode_value(raw, avro_deserializer=deserializer)
    except DecodeError:
        return
    assert isinstance(value, dict)


def test_avro_round_trip_and_evolution(registry: Any) -> None:
    rows = [
        {"element": "number", "internal_type": "string"},
        {"element": "priority", "internal_type": "integer"},
        {"element": "sys_updated_on", "internal_type": "glide_date_time"},
    ]
    serializer = AvroValueSerializer(registry, "sn.incident", schema_from_dictionary("incident", rows, timestamps=True))
    deserializer = AvroValueDeserializer(registry)
    record = {"sys_id": "a" * 32, "number": "INC1", "priority": "2", "sys_updated_on": "2024-05-06 07:08:09"}
    raw = serializer.encode(record)
    assert raw[0] == 0
    assert decode_value(raw, avro_deserializer=deserializer) == {**record, "priority": 2}

    page = [record, {**record, "u_new": "added"}]
    encoded = serializer.encode_page(page)
    assert [f["name"] for f in serializer.schema["fields"]][-1] == "u_new"
    assert sorted(registry.get_versions("sn.incident-value")) == [1, 2]
    assert decode_value(encoded[1], avro_deserializer=deserializer)["u_new"] == "added"
    assert decode_value(encoded[0], avro_deserializer=deserializer)["u_new"] is None
    # Old data is still readable.
    assert decode_value(raw, avro_deserializer=deserializer)["number"] == "INC1"


def test_avro_renamed_columns_come_back_under_their_servicenow_names(registry: Any) -> None:
    serializer = AvroValueSerializer(registry, "t", schema_from_records("x", [{"u-odd": "1"}]))
    raw = serializer.encode({"sys_id": "s", "u-odd": "v"})
    assert decode_value(raw, avro_deserializer=AvroValueDeserializer(registry)) == {"sys_id": "s", "u-odd": "v"}


def test_unknown_schema_id_is_a_record_error(registry: Any) -> None:
    with pytest.raises(DecodeError, match="schema id 77"):
        decode_value(b"\x00\x00\x00\x00\x4d\x02", avro_deserializer=AvroValueDeserializer(registry))
