"""sink drain of Avro values (Confluent wire format, Schema Registry): written like JSON; bad ids dead-lettered."""

from __future__ import annotations

import socket

import orjson
import pytest

from sncli.emulator.server import ServiceNowEmulator
from sncli.kafka.avro_schema import schema_from_records
from sncli.kafka.serde import AvroValueSerializer
from sncli.sink.drain import run_drain
from sncli.sink.job import DrainOptions
from tests.integration.sink_support import (
    committed_offsets,
    config_dict,
    create_topic,
    json_value,
    produce,
    settings_of,
    sid,
    writes,
)

pytestmark = pytest.mark.integration


def test_avro_and_json_values_in_one_topic_are_written_and_an_unknown_schema_id_is_dead_lettered(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, registry_url: str, unique_topic: str
) -> None:
    emulator.state.insert("incident", {"sys_id": sid(1), "state": "1", "short_description": "old"})
    rows = [
        {"sys_id": sid(1), "state": "2", "short_description": "avro update", "sys_mod_count": "5"},
        {"sys_id": "", "state": "1", "short_description": "avro insert", "sys_mod_count": "0"},
    ]
    serializer = AvroValueSerializer(registry_url, unique_topic, schema_from_records("incident", rows))
    create_topic(kafka_bootstrap, unique_topic, 1)
    produce(kafka_bootstrap, unique_topic, [
        (sid(1).encode(), serializer.encode(rows[0]), None),
        (None, serializer.encode(rows[1]), None),
        (None, json_value({"short_description": "json insert"}), None),
        (b"bad", b"\x00" + (987_654).to_bytes(4, "big") + b"\x02\x06abc", None),
    ])
    data = config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}], workers=1)
    data["kafka"]["schema_registry"] = {"url": registry_url}
    settings = settings_of(data)
    emulator.state.clear_journal()

    summary = run_drain(settings, DrainOptions())

    assert summary.exit_code == 3, summary.error
    assert summary.written == {"patch": 1, "post": 2} and summary.dlq == {"decode": 1}
    bodies = [(e.method, orjson.loads(e.body)) for e in writes(emulator.state.journal())]
    assert bodies[0] == ("PATCH", {"state": "2", "short_description": "avro update"})
    assert bodies[1] == ("POST", {"state": "1", "short_description": "avro insert"})
    assert bodies[2] == ("POST", {"short_description": "json insert"})
    assert committed_offsets(kafka_bootstrap, settings.sink.group_id, unique_topic, 1) == {0: 4}


def test_avro_value_without_a_registry_is_a_decode_error(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, registry_url: str, unique_topic: str
) -> None:
    rows = [{"state": "1"}]
    serializer = AvroValueSerializer(registry_url, unique_topic, schema_from_records("incident", rows))
    create_topic(kafka_bootstrap, unique_topic, 1)
    produce(kafka_bootstrap, unique_topic, [(None, serializer.encode(rows[0]), None)])
    settings = settings_of(config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}]))
    summary = run_drain(settings, DrainOptions())
    assert summary.exit_code == 3 and summary.dlq == {"decode": 1}


def test_a_registry_that_is_down_fails_the_run_instead_of_dead_lettering_good_records(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, registry_url: str, unique_topic: str
) -> None:
    rows = [{"state": "1"}]
    serializer = AvroValueSerializer(registry_url, unique_topic, schema_from_records("incident", rows))
    create_topic(kafka_bootstrap, unique_topic, 1)
    produce(kafka_bootstrap, unique_topic, [(None, json_value({"state": "0"}), None),
                                            (None, serializer.encode(rows[0]), None)])
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    data = config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}], workers=1)
    data["kafka"]["schema_registry"] = {"url": dead}
    settings = settings_of(data)
    summary = run_drain(settings, DrainOptions())
    assert summary.exit_code == 1 and summary.dlq == {}
    assert "schema registry" in (summary.error or "").lower()
    # Nothing is committed past the Avro record: the next run (registry back) reads it again.
    assert committed_offsets(kafka_bootstrap, settings.sink.group_id, unique_topic, 1)[0] <= 1
    data["kafka"]["schema_registry"] = {"url": registry_url}
    rerun = run_drain(settings_of(data), DrainOptions())
    assert rerun.exit_code == 0, rerun.error
    assert committed_offsets(kafka_bootstrap, settings.sink.group_id, unique_topic, 1) == {0: 2}
    assert sorted({r["state"] for r in emulator.state.records("incident")}) == ["0", "1"]
