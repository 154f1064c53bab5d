"""The Schema Registry emulator, driven by confluent_kafka's own registry client and Avro serdes."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from sncli.emulator.schema_registry import (
    MEDIA_TYPE,
    SchemaRegistryEmulator,
    avro_read_problems,
    compatibility_problems,
    parse_avro,
)

pytestmark = pytest.mark.integration

TOPIC = "servicenow.incident"
SUBJECT = f"{TOPIC}-value"
CTX = SerializationContext(TOPIC, MessageField.VALUE)


def record(*fields: dict[str, Any], name: str = "incident") -> str:
    return json.dumps({"type": "record", "name": name, "namespace": "sncli", "fields": list(fields)})


V1 = record({"name": "sys_id", "type": "string"}, {"name": "priority", "type": "int"})
V2_NULLABLE = record(
    {"name": "sys_id", "type": "string"},
    {"name": "priority", "type": "int"},
    {"name": "short_description", "type": ["null", "string"], "default": None},
)
V3_REQUIRED = record(
    {"name": "sys_id", "type": "string"},
    {"name": "priority", "type": "int"},
    {"name": "short_description", "type": ["null", "string"], "default": None},
    {"name": "state", "type": "string"},
)


@pytest.fixture
def registry() -> Iterator[SchemaRegistryEmulator]:
    emu = SchemaRegistryEmulator().start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def client(registry: SchemaRegistryEmulator) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": registry.url})


def fresh_client(registry: SchemaRegistryEmulator) -> SchemaRegistryClient:
    """A client with an empty cache, so every answer comes from the server."""
    return SchemaRegistryClient({"url": registry.url})


def test_avro_round_trip_through_the_registry(registry: SchemaRegistryEmulator, client: SchemaRegistryClient) -> None:
    value = {"sys_id": "a" * 32, "priority": 3}
    data = AvroSerializer(client, V1)(value, CTX)
    assert data is not None
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert magic == 0
    assert schema_id == client.get_latest_version(SUBJECT).schema_id

    decoded = AvroDeserializer(fresh_client(registry))(data, CTX)
    assert decoded == value


def test_reader_schema_fills_a_new_nullable_field_with_its_default(
    registry: SchemaRegistryEmulator, client: SchemaRegistryClient
) -> None:
    old_data = AvroSerializer(client, V1)({"sys_id": "x", "priority": 1}, CTX)
    assert client.register_schema(SUBJECT, Schema(V2_NULLABLE, "AVRO")) != client.get_version(SUBJECT, 1).schema_id

    decoded = AvroDeserializer(fresh_client(registry), V2_NULLABLE)(old_data, CTX)
    assert decoded == {"sys_id": "x", "priority": 1, "short_description": None}


def test_adding_a_nullable_field_with_default_is_accepted(client: SchemaRegistryClient) -> None:
    first = client.register_schema(SUBJECT, Schema(V1, "AVRO"))
    second = client.register_schema(SUBJECT, Schema(V2_NULLABLE, "AVRO"))
    assert second != first
    assert client.get_versions(SUBJECT) == [1, 2]
    latest = client.get_latest_version(SUBJECT)
    assert (latest.version, latest.schema_id) == (2, second)


def test_adding_a_required_field_is_refused_with_409(
    registry: SchemaRegistryEmulator, client: SchemaRegistryClient
) -> None:
    client.register_schema(SUBJECT, Schema(V1, "AVRO"))
    client.register_schema(SUBJECT, Schema(V2_NULLABLE, "AVRO"))
    with pytest.raises(SchemaRegistryError) as err:
        client.register_schema(SUBJECT, Schema(V3_REQUIRED, "AVRO"))
    assert err.value.http_status_code == 409
    assert err.value.error_code == 409
    assert "state" in err.value.error_message
    assert fresh_client(registry).get_versions(SUBJECT) == [1, 2]


def test_same_schema_keeps_its_id(registry: SchemaRegistryEmulator, client: SchemaRegistryClient) -> None:
    first = client.register_schema(SUBJECT, Schema(V1, "AVRO"))
    # Another client (no cache), the same schema with other whitespace: same id, no new version.
    pretty = json.dumps(json.loads(V1), indent=2)
    again = fresh_client(registry).register_schema(SUBJECT, Schema(pretty, "AVRO"))
    assert again == first
    assert client.get_versions(SUBJECT) == [1]
    # The same schema under another subject shares the id too, as in the real registry.
    assert fresh_client(registry).register_schema("other-value", Schema(V1, "AVRO")) == first


def test_lookup_and_schema_by_id(registry: SchemaRegistryEmulator, client: SchemaRegistryClient) -> None:
    schema_id = client.register_schema(SUBJECT, Schema(V1, "AVRO"))
    other = fresh_client(registry)
    found = other.lookup_schema(SUBJECT, Schema(V1, "AVRO"))
    assert (found.schema_id, found.version, found.subject) == (schema_id, 1, SUBJECT)
    fetched = other.get_schema(schema_id, subject_name=SUBJECT)
    assert json.loads(fetched.schema_str or "") == json.loads(V1)
    with pytest.raises(SchemaRegistryError) as err:
        other.lookup_schema(SUBJECT, Schema(V2_NULLABLE, "AVRO"))
    assert (err.value.http_status_code, err.value.error_code) == (404, 40403)


def test_not_found_and_invalid_errors_carry_the_real_codes(client: SchemaRegistryClient) -> None:
    cases: list[tuple[Any, int, int]] = [
        (lambda: client.get_schema(4242), 404, 40403),
        (lambda: client.get_latest_version("missing-value"), 404, 40401),
        (lambda: client.get_versions("missing-value"), 404, 40401),
        (lambda: client.register_schema(SUBJECT, Schema('{"type": "record", "name": "x"}', "AVRO")), 422, 42201),
        (lambda: client.register_schema(SUBJECT, Schema("{not json", "AVRO")), 422, 42201),
    ]
    for call, status, code in cases:
        with pytest.raises(SchemaRegistryError) as err:
            call()
        assert (err.value.http_status_code, err.value.error_code) == (status, code)
    client.register_schema(SUBJECT, Schema(V1, "AVRO"))
    with pytest.raises(SchemaRegistryError) as err:
        client.get_version(SUBJECT, 7)
    assert (err.value.http_status_code, err.value.error_code) == (404, 40402)


def test_compatibility_config_defaults_to_backward_and_can_be_relaxed(client: SchemaRegistryClient) -> None:
    assert client.get_compatibility() == "BACKWARD"
    client.register_schema(SUBJECT, Schema(V1, "AVRO"))
    with pytest.raises(SchemaRegistryError) as err:
        client.get_compatibility(SUBJECT)
    assert err.value.error_code == 40408  # no subject-level setting, as in the real registry
    answer: object = client.set_compatibility(SUBJECT, "NONE")  # the body as sent by the registry
    assert answer == {"compatibility": "NONE"}
    assert client.get_compatibility(SUBJECT) == "NONE"
    assert client.get_compatibility() == "BACKWARD"
    breaking = record({"name": "sys_id", "type": "string"}, {"name": "state", "type": "string"})
    assert client.register_schema(SUBJECT, Schema(breaking, "AVRO")) > 0
    with pytest.raises(SchemaRegistryError) as err:
        client.set_compatibility(SUBJECT, "SOMETIMES")
    assert err.value.error_code == 42203


def test_compatibility_endpoint_answers_without_registering(client: SchemaRegistryClient) -> None:
    client.register_schema(SUBJECT, Schema(V1, "AVRO"))
    assert client.test_compatibility(SUBJECT, Schema(V2_NULLABLE, "AVRO")) is True
    assert client.test_compatibility(SUBJECT, Schema(V3_REQUIRED, "AVRO"), version=1) is False
    assert client.test_compatibility_all_versions(SUBJECT, Schema(V3_REQUIRED, "AVRO")) is False
    assert client.get_versions(SUBJECT) == [1]


def test_soft_and_permanent_delete(registry: SchemaRegistryEmulator, client: SchemaRegistryClient) -> None:
    schema_id = client.register_schema(SUBJECT, Schema(V1, "AVRO"))
    with pytest.raises(SchemaRegistryError) as err:
        client.delete_subject(SUBJECT, permanent=True)
    assert err.value.error_code == 40405  # must be soft-deleted first
    assert client.delete_subject(SUBJECT) == [1]
    other = fresh_client(registry)
    assert SUBJECT not in other.get_subjects()
    assert SUBJECT in other.get_subjects(deleted=True)
    with pytest.raises(SchemaRegistryError) as err:
        other.get_latest_version(SUBJECT)
    assert err.value.error_code == 40401
    assert other.get_schema(schema_id) is not None  # ids stay resolvable for old messages
    assert client.delete_subject(SUBJECT, permanent=True) == [1]
    assert SUBJECT not in other.get_subjects(deleted=True)


def test_http_details_match_the_real_registry(registry: SchemaRegistryEmulator) -> None:
    resp = requests.post(
        f"{registry.url}/subjects/{SUBJECT}/versions",
        data=json.dumps({"schema": V1}),
        headers={"Content-Type": MEDIA_TYPE},
        timeout=5,
    )
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == MEDIA_TYPE
    assert resp.json() == {"id": 1}
    raw = requests.get(f"{registry.url}/subjects/{SUBJECT}/versions/latest/schema", timeout=5)
    assert raw.json() == json.loads(V1)
    missing = requests.get(f"{registry.url}/nothing/here", timeout=5)
    assert missing.status_code == 404 and missing.json()["error_code"] == 404
    bad_version = requests.get(f"{registry.url}/subjects/{SUBJECT}/versions/0", timeout=5)
    assert (bad_version.status_code, bad_version.json()["error_code"]) == (422, 42202)
    slashed = requests.post(f"{registry.url}/subjects/a%2Fb-value/versions", data=json.dumps({"schema": V1}), timeout=5)
    assert slashed.status_code == 200
    assert requests.get(f"{registry.url}/subjects", timeout=5).json() == ["a/b-value", SUBJECT]


@pytest.mark.parametrize(
    ("writer", "reader", "compatible"),
    [
        ("int", "long", True),
        ("int", "double", True),
        ("long", "int", False),
        ("string", "bytes", True),
        ("string", ["null", "string"], True),  # union widening
        (["null", "string"], "string", False),  # a null written cannot be read
        (["null", "string"], ["null", "string", "long"], True),
        (["null", "int"], ["null", "long"], True),
        ({"type": "array", "items": "int"}, {"type": "array", "items": "long"}, True),
        ({"type": "map", "values": "string"}, {"type": "map", "values": "int"}, False),
        (
            {"type": "enum", "name": "E", "symbols": ["A", "B"]},
            {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]},
            True,
        ),
        (
            {"type": "enum", "name": "E", "symbols": ["A", "B"]},
            {"type": "enum", "name": "E", "symbols": ["A"]},
            False,
        ),
        (
            {"type": "enum", "name": "E", "symbols": ["A", "B"]},
            {"type": "enum", "name": "E", "symbols": ["A"], "default": "A"},
            True,
        ),
        ({"type": "fixed", "name": "F", "size": 4}, {"type": "fixed", "name": "F", "size": 8}, False),
    ],
)
def test_avro_resolution_rules(writer: Any, reader: Any, compatible: bool) -> None:
    problems = avro_read_problems(parse_avro(json.dumps(reader)), parse_avro(json.dumps(writer)))
    assert (problems == []) is compatible, problems


def test_record_rules_removed_fields_renames_and_recursion() -> None:
    writer = parse_avro(
        record(
            {"name": "sys_id", "type": "string"},
            {"name": "old_name", "type": "string"},
            {"name": "gone", "type": "int"},
            {"name": "next", "type": ["null", "sncli.incident"], "default": None},
        )
    )
    reader = parse_avro(
        record(
            {"name": "sys_id", "type": "string"},
            {"name": "new_name", "type": "string", "aliases": ["old_name"]},
            {"name": "next", "type": ["null", "sncli.incident"], "default": None},
        )
    )
    assert avro_read_problems(reader, writer) == []
    renamed_record = parse_avro(record({"name": "sys_id", "type": "string"}, name="problem"))
    assert avro_read_problems(renamed_record, writer) != []


def test_transitive_levels_check_every_earlier_version() -> None:
    v1 = parse_avro(record({"name": "a", "type": "string"}))
    v2 = parse_avro(record({"name": "a", "type": "string"}, {"name": "b", "type": "int", "default": 0}))
    # v3 drops b's default: it can read v2 data but not v1 data.
    v3 = parse_avro(record({"name": "a", "type": "string"}, {"name": "b", "type": "int"}))
    assert compatibility_problems("BACKWARD", v3, [v1, v2]) == []
    assert compatibility_problems("BACKWARD_TRANSITIVE", v3, [v1, v2]) != []
    assert compatibility_problems("FORWARD", v2, [v1]) == []
    assert compatibility_problems("FULL", v3, [v2]) == []
    assert compatibility_problems("NONE", v3, [v1]) == []


def test_served_by_the_local_services_script(registry_url: str) -> None:
    """The registry that scripts/services.sh runs (python -m sncli.emulator.schema_registry)."""
    client = SchemaRegistryClient({"url": registry_url})
    subject = f"h2-selftest-{id(client)}-value"
    data = AvroSerializer(client, V1, conf={"auto.register.schemas": True})(
        {"sys_id": "s", "priority": 2}, SerializationContext(subject.removesuffix("-value"), MessageField.VALUE)
    )
    decoded = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))(
        data, SerializationContext(subject.removesuffix("-value"), MessageField.VALUE)
    )
    assert decoded == {"sys_id": "s", "priority": 2}
    assert subject in client.get_subjects()
