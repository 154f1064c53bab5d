"""Avro values through the Schema Registry: typed from sys_dictionary, evolving, with an all-string fallback."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from sncli.emulator.server import ServiceNowEmulator
from sncli.source.cycle import run_poll
from tests.fixtures.kafka import read_all
from tests.integration.test_source_support import make_settings

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def _decode_all(registry_url: str, bootstrap: str, topic: str, expected: int) -> list[dict[str, Any]]:
    """What a plain consumer does: confluent's AvroDeserializer with a registry client."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
    ctx = SerializationContext(topic, MessageField.VALUE)
    out = []
    for rec in read_all(bootstrap, topic, timeout=60, expected=expected):
        assert rec.value is not None and rec.value[0] == 0  # Confluent wire format: magic byte
        value = deserializer(rec.value, ctx)
        assert isinstance(value, dict)
        out.append(value)
    return out


def _versions(registry_url: str, subject: str) -> list[dict[str, Any]]:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    client = SchemaRegistryClient({"url": registry_url})
    found = []
    for version in client.get_versions(subject):
        registered = client.get_version(subject, version)
        found.append(orjson.loads(registered.schema.schema_str))
    return found


def test_avro_round_trip_with_dictionary_types_and_schema_evolution(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, registry_url: str, tmp_path: Path
) -> None:
    topic = f"avro-{uuid.uuid4().hex[:8]}"
    emulator.state.generate("incident", 120, at=NOW - timedelta(hours=2), spread_seconds=60, field_count=20, seed=1)
    settings = make_settings(emulator.url, kafka_bootstrap, tmp_path / "o.json", [{"name": "incident", "topic": topic}],
                             page_size=50, registry=registry_url, fmt="avro")

    assert run_poll(settings).exit_code == 0

    values = _decode_all(registry_url, kafka_bootstrap, topic, 120)
    assert len(values) == 120
    source = {r["sys_id"]: r for r in emulator.state.records("incident")}
    for value in values:
        original = source[value["sys_id"]]
        assert value["number"] == original["number"]
        assert value["priority"] == int(original["priority"])  # integer column -> Avro long
        assert value["active"] == (original["active"] == "true")  # boolean column -> Avro boolean
        assert value["sys_updated_on"] == original["sys_updated_on"]
    versions = _versions(registry_url, f"{topic}-value")
    assert len(versions) == 1
    fields = {f["name"]: f["type"] for f in versions[0]["fields"]}
    assert "long" in fields["priority"] and "boolean" in fields["active"]

    # A new column appears in ServiceNow: the schema evolves (new version), nothing is dropped.
    added = emulator.state.insert("incident", {"short_description": "new", "u_new_field": "hello"},
                                  at=NOW - timedelta(minutes=30))
    assert run_poll(settings).exit_code == 0
    values = _decode_all(registry_url, kafka_bootstrap, topic, 121)
    newest = [v for v in values if v["sys_id"] == added["sys_id"]]
    assert len(newest) == 1 and newest[0]["u_new_field"] == "hello"
    versions = _versions(registry_url, f"{topic}-value")
    assert len(versions) == 2
    old_fields = [f["name"] for f in versions[0]["fields"]]
    assert [f["name"] for f in versions[1]["fields"]][: len(old_fields)] == old_fields  # appended, compatible
    assert all(v.get("u_new_field") is None for v in values if v["sys_id"] != added["sys_id"])
    # Another run with nothing new re-uses the latest schema: no version per run.
    emulator.state.insert("incident", {"short_description": "again"}, at=NOW - timedelta(minutes=20))
    assert run_poll(settings).exit_code == 0
    assert len(_versions(registry_url, f"{topic}-value")) == 2


def test_unreadable_dictionary_falls_back_to_all_string_fields(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, registry_url: str, tmp_path: Path
) -> None:
    topic = f"avro-{uuid.uuid4().hex[:8]}"
    emulator.state.generate("incident", 30, at=NOW - timedelta(hours=2), spread_seconds=60, field_count=15, seed=2)
    emulator.state.update_settings(denied_tables={"sys_dictionary"})
    settings = make_settings(emulator.url, kafka_bootstrap, tmp_path / "o.json", [{"name": "incident", "topic": topic}],
                             registry=registry_url, fmt="avro")
    assert run_poll(settings).exit_code == 0
    values = _decode_all(registry_url, kafka_bootstrap, topic, 30)
    source = {r["sys_id"]: r for r in emulator.state.records("incident")}
    assert all(v == source[v["sys_id"]] for v in values)  # every field, as the string ServiceNow sent
    (schema,) = _versions(registry_url, f"{topic}-value")
    assert all(f["type"] == ["null", "string"] for f in schema["fields"])
