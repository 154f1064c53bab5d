"""Avro through a real Schema Registry and a real broker: round trip, evolution, bad input."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sncli.config import KafkaSettings
from sncli.kafka.admin import ensure_topics
from sncli.kafka.avro_schema import schema_from_dictionary
from sncli.kafka.errors import DecodeError, SchemaError
from sncli.kafka.producer import PageProducer
from sncli.kafka.serde import AvroValueDeserializer, AvroValueSerializer, decode_value, registry_client
from tests.fixtures.kafka import read_all

pytestmark = pytest.mark.integration

DICTIONARY = [
    {"name": "incident", "element": "number", "internal_type": "string", "max_length": "40"},
    {"name": "incident", "element": "priority", "internal_type": "integer", "max_length": "40"},
    {"name": "incident", "element": "active", "internal_type": "boolean", "max_length": "40"},
    {"name": "incident", "element": "sys_updated_on", "internal_type": "glide_date_time", "max_length": "40"},
]


def _record(i: int, **extra: str) -> dict[str, str]:
    return {
        "sys_id": f"{i:032x}",
        "number": f"INC{i:07d}",
        "priority": str(i % 5 + 1),
        "active": "true" if i % 2 else "false",
        "sys_updated_on": f"2024-01-01 00:00:{i % 60:02d}",
        **extra,
    }


def _plain_deserializer(registry_url: str) -> Any:
    """confluent_kafka's own AvroDeserializer, as any downstream consumer would use it."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer

    return AvroDeserializer(SchemaRegistryClient({"url": registry_url}))


def test_avro_round_trip_and_compatible_evolution(kafka_bootstrap: str, registry_url: str, unique_topic: str) -> None:
    from confluent_kafka.serialization import MessageField, SerializationContext

    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    ensure_topics(kafka, {unique_topic: 1})
    serializer = AvroValueSerializer(registry_url, unique_topic, schema_from_dictionary("incident", DICTIONARY))
    producer = PageProducer(kafka)

    first_page = [_record(i) for i in range(50)]
    for record, value in zip(first_page, serializer.encode_page(first_page), strict=True):
        producer.send(unique_topic, record["sys_id"].encode(), value, [], None)
    assert producer.flush() == 50

    # ServiceNow grew a column: the schema evolves, the old records stay readable.
    second_page = [_record(i, u_category="network") for i in range(50, 60)]
    for record, value in zip(second_page, serializer.encode_page(second_page), strict=True):
        producer.send(unique_topic, record["sys_id"].encode(), value, [], None)
    assert producer.flush() == 10

    client = registry_client(registry_url)
    subject = f"{unique_topic}-value"
    assert sorted(client.get_versions(subject)) == [1, 2]
    latest = client.get_latest_version(subject)
    assert "u_category" in latest.schema.schema_str

    records = read_all(kafka_bootstrap, unique_topic, expected=60)
    assert len(records) == 60
    ctx = SerializationContext(unique_topic, MessageField.VALUE)
    plain = _plain_deserializer(registry_url)
    decoded = [plain(r.value, ctx) for r in records]
    assert decoded[0] == {**first_page[0], "priority": 1, "active": False}
    assert "u_category" not in decoded[0]  # written with version 1
    assert decoded[59]["u_category"] == "network"
    assert decoded[59]["priority"] == 5 and decoded[59]["active"] is True

    ours = AvroValueDeserializer(registry_url)
    assert decode_value(records[59].value, avro_deserializer=ours) == {
        **second_page[-1],
        "priority": 5,
        "active": True,
    }


def test_evolved_schema_passes_the_registry_backward_compatibility_check(registry_url: str, unique_topic: str) -> None:
    from confluent_kafka.schema_registry import Schema

    client = registry_client(registry_url)
    subject = f"{unique_topic}-value"
    client.set_compatibility(subject, "BACKWARD")
    serializer = AvroValueSerializer(client, unique_topic, schema_from_dictionary("incident", DICTIONARY))
    serializer.register()
    serializer.cover([_record(1, u_new="x")])
    assert client.test_compatibility(subject, Schema(orjson.dumps(serializer.schema).decode(), "AVRO"))
    serializer.register()
    assert sorted(client.get_versions(subject)) == [1, 2]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema_id=st.integers(min_value=0, max_value=2**31 - 1), payload=st.binary(max_size=40))
def test_random_wire_format_bytes_only_raise_decode_error(registry_url: str, schema_id: int, payload: bytes) -> None:
    raw = b"\x00" + schema_id.to_bytes(4, "big") + payload
    try:
        value = decode_value(raw, avro_deserializer=AvroValueDeserializer(registry_url))
    except DecodeError:
        return
    assert isinstance(value, dict)


def test_unknown_schema_id_is_a_decode_error(registry_url: str) -> None:
    with pytest.raises(DecodeError, match="unknown to the registry"):
        decode_value(b"\x00\x7f\xff\xff\xf0\x02", avro_deserializer=AvroValueDeserializer(registry_url))


def test_unreachable_registry_fails_the_run_instead_of_dead_lettering() -> None:
    down = "http://127.0.0.1:9"  # nothing listens on the discard port
    with pytest.raises(SchemaError, match="schema registry"):
        decode_value(b"\x00\x00\x00\x00\x01\x02", avro_deserializer=AvroValueDeserializer(down))
    serializer = AvroValueSerializer(down, "t", schema_from_dictionary("incident", DICTIONARY))
    with pytest.raises(SchemaError, match="schema registry"):
        serializer.encode(_record(1))


def test_an_incompatible_schema_is_refused_as_a_schema_error(registry_url: str, unique_topic: str) -> None:
    client = registry_client(registry_url)
    client.set_compatibility(f"{unique_topic}-value", "BACKWARD")
    schema = schema_from_dictionary("incident", DICTIONARY)
    serializer = AvroValueSerializer(client, unique_topic, schema)
    serializer.encode(_record(1))
    # A required field without default cannot read old data: the registry must refuse it.
    broken = {**schema, "fields": [*schema["fields"], {"name": "u_required", "type": "string"}]}
    serializer.evolve(broken)
    with pytest.raises(SchemaError, match="HTTP 409"):
        serializer.encode({**_record(2), "u_required": "x"})
