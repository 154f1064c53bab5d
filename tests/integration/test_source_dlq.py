"""A source record Kafka refuses, or that cannot be encoded, goes to the DLQ and its table moves on (exit 3).

Before: every cycle failed the same page and the table never moved again. The
refusals here are real: librdkafka's own size limit (``message.max.bytes`` in
``kafka.client``), a broker validating the topic (a private Tansu with a
schema: the whole batch is refused, as on Kafka), an Avro schema that cannot
hold a value. And a DLQ the broker refuses stops the table with its cursor
below the refused record (exit 1).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from sncli.config import Settings, parse_settings
from sncli.emulator.server import ServiceNowEmulator
from sncli.errors import ExitCode
from sncli.kafka.admin import topic_configs
from sncli.source.cycle import run_poll
from tests.fixtures.kafka import KafkaRecord, PrivateTansu, describe_partitions, read_all
from tests.integration.test_source_support import config_dict, stored_cursor

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW - timedelta(hours=1)
LONG_TEXT = "word " * 6000  # 30 000 bytes


def _settings(emulator: ServiceNowEmulator, bootstrap: str, offsets: Path, topic: str, dlq: str,
              **kwargs: Any) -> Settings:
    data = config_dict(emulator.url, bootstrap, offsets, [{"name": "incident", "topic": topic}], **kwargs)
    data["source"]["dlq_topic"] = dlq
    return parse_settings(data, environ={})


def _seed(emulator: ServiceNowEmulator, count: int, odd: dict[str, object]) -> tuple[str, list[str]]:
    """``count`` records over 60 s with one odd record in the middle; returns (its sys_id, every sys_id)."""
    ids = emulator.state.generate("incident", count, at=START, spread_seconds=60, field_count=10,
                                  record_bytes=200, seed=7)
    bad = emulator.state.insert("incident", odd, at=START + timedelta(seconds=30))["sys_id"]
    return bad, [*ids, bad]


def _header(record: KafkaRecord, name: str) -> str | None:
    raw = record.header(name)
    return None if raw is None else raw.decode()


def _check_dlq_record(record: KafkaRecord, *, sys_id: str, topic: str, error_class: str, says: str) -> None:
    assert record.key == sys_id.encode()
    assert _header(record, "sn.sys_id") == sys_id and _header(record, "sn.table") == "incident"
    assert _header(record, "sncli.error.class") == error_class
    assert says in (_header(record, "sncli.error.message") or "")
    assert _header(record, "sncli.error.table") == "incident"
    assert _header(record, "sncli.error.topic") == topic
    assert (_header(record, "sncli.error.partition"), _header(record, "sncli.error.offset")) == ("-1", "-1")
    assert _header(record, "sncli.error.attempts") == "1" and _header(record, "sncli.error.timestamp")


def test_a_record_larger_than_the_producer_allows_is_dead_lettered_and_the_table_moves_on(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    bad, every = _seed(emulator, 120, {"short_description": "huge", "description": LONG_TEXT})
    run = uuid.uuid4().hex[:8]
    topic, dlq = f"big-{run}", f"dlq-{run}"
    offsets = tmp_path / "o.json"
    settings = _settings(emulator, kafka_bootstrap, offsets, topic, dlq, page_size=50,
                         kafka_client={"message.max.bytes": 20_000})

    summary = run_poll(settings)

    outcome = summary.tables["incident"]
    assert summary.exit_code == int(ExitCode.PARTIAL), summary.to_json()
    assert outcome.error is None and outcome.dlq == {"refused": 1} and outcome.produced == 120
    assert summary.to_json()["tables"]["incident"]["dlq"] == {"refused": 1}
    records = read_all(kafka_bootstrap, topic, timeout=30, expected=120)
    assert sorted(r.key for r in records) == sorted(s.encode() for s in every if s != bad)
    dead = read_all(kafka_bootstrap, dlq, timeout=30, expected=1)
    assert len(dead) == 1
    _check_dlq_record(dead[0], sys_id=bad, topic=topic, error_class="refused", says="too large")
    assert dead[0].value is None  # a value too large for Kafka cannot be in the DLQ either
    dlq_configs = topic_configs(settings.kafka, [dlq])[dlq]  # created by sncli: keeps every record
    assert isinstance(dlq_configs, dict)
    assert (dlq_configs["cleanup.policy"], dlq_configs["retention.ms"]) == ("delete", "-1")
    newest = max((r["sys_updated_on"], r["sys_id"]) for r in emulator.state.records("incident"))
    assert stored_cursor(offsets, "incident") == newest  # moved past the refused record

    again = run_poll(settings)  # nothing left: the refused record is not retried
    assert again.exit_code == 0 and again.tables["incident"].records == 0


TOPIC_SCHEMA = orjson.dumps({"type": "object", "properties": {"value": {"type": "object", "properties": {
    "short_description": {"type": "string", "maxLength": 100}}}}}).decode()
REFUSE_ALL = orjson.dumps({"type": "object", "properties": {
    "value": {"type": "object", "required": ["never-present"]}}}).decode()


def test_a_record_the_broker_refuses_is_found_in_its_batch_and_dead_lettered(
    emulator: ServiceNowEmulator, private_tansu: Callable[..., PrivateTansu], tmp_path: Path
) -> None:
    # Tansu refuses the whole batch holding the invalid record, as Kafka does: the others must still arrive.
    broker = private_tansu(schemas={"checked": TOPIC_SCHEMA})
    bad, every = _seed(emulator, 60, {"short_description": "x" * 500})
    offsets = tmp_path / "o.json"
    settings = _settings(emulator, broker.bootstrap, offsets, "checked", "dead", page_size=100)

    summary = run_poll(settings)

    outcome = summary.tables["incident"]
    assert summary.exit_code == int(ExitCode.PARTIAL), summary.to_json()
    assert outcome.error is None and outcome.dlq == {"refused": 1}
    records = read_all(broker.bootstrap, "checked", timeout=30, expected=60)
    assert {r.key for r in records} == {s.encode() for s in every if s != bad}
    dead = read_all(broker.bootstrap, "dead", timeout=30, expected=1)
    assert len(dead) == 1
    _check_dlq_record(dead[0], sys_id=bad, topic="checked", error_class="refused", says="validate record")
    assert orjson.loads(dead[0].value or b"{}")["short_description"] == "x" * 500  # the value as it was refused
    newest = max((r["sys_updated_on"], r["sys_id"]) for r in emulator.state.records("incident"))
    assert stored_cursor(offsets, "incident") == newest


def test_a_dlq_that_refuses_the_record_stops_the_table_below_it(
    emulator: ServiceNowEmulator, private_tansu: Callable[..., PrivateTansu], tmp_path: Path
) -> None:
    broker = private_tansu(schemas={"checked": TOPIC_SCHEMA, "refusing": REFUSE_ALL})
    bad, _every = _seed(emulator, 60, {"short_description": "x" * 500})
    bad_key = next((r["sys_updated_on"], r["sys_id"]) for r in emulator.state.records("incident") if r["sys_id"] == bad)
    offsets = tmp_path / "o.json"

    failed = run_poll(_settings(emulator, broker.bootstrap, offsets, "checked", "refusing", page_size=20))

    assert failed.exit_code == int(ExitCode.FAILED), failed.to_json()
    assert "could not dead-letter" in (failed.tables["incident"].error or "")
    cursor = stored_cursor(offsets, "incident")
    assert cursor is None or cursor < bad_key  # nothing moved past the record that is nowhere

    fixed = run_poll(_settings(emulator, broker.bootstrap, offsets, "checked", "accepting", page_size=20))
    assert fixed.exit_code == int(ExitCode.PARTIAL) and fixed.tables["incident"].dlq == {"refused": 1}
    assert [r.key for r in read_all(broker.bootstrap, "accepting", timeout=30, expected=1)] == [bad.encode()]


def test_a_record_its_avro_schema_cannot_hold_is_dead_lettered_as_json(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, registry_url: str, tmp_path: Path
) -> None:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    topic, dlq = f"avro-{uuid.uuid4().hex[:8]}", f"dlq-{uuid.uuid4().hex[:8]}"
    # A schema registered before sncli (by another producer): priority is a long, with no string branch.
    SchemaRegistryClient({"url": registry_url}).register_schema(f"{topic}-value", Schema(orjson.dumps({
        "type": "record", "name": "incident", "namespace": "servicenow",
        "fields": [{"name": "sys_id", "type": ["null", "string"], "default": None},
                   {"name": "priority", "type": ["null", "long"], "default": None}],
    }).decode(), "AVRO"))
    bad, every = _seed(emulator, 40, {"short_description": "odd", "priority": "urgent"})
    offsets = tmp_path / "o.json"
    settings = _settings(emulator, kafka_bootstrap, offsets, topic, dlq, page_size=25, registry=registry_url,
                         fmt="avro")

    summary = run_poll(settings)

    outcome = summary.tables["incident"]
    assert summary.exit_code == int(ExitCode.PARTIAL), summary.to_json()
    assert outcome.error is None and outcome.dlq == {"encode": 1} and outcome.produced == 40
    records = read_all(kafka_bootstrap, topic, timeout=30, expected=40)
    assert sorted(r.key for r in records) == sorted(s.encode() for s in every if s != bad)
    dead = read_all(kafka_bootstrap, dlq, timeout=30, expected=1)
    assert len(dead) == 1
    _check_dlq_record(dead[0], sys_id=bad, topic=topic, error_class="encode", says="encoding a record")
    value = orjson.loads(dead[0].value or b"{}")  # the record as JSON: it has no Avro form
    assert value["sys_id"] == bad and value["priority"] == "urgent"


def test_a_backfill_dead_letters_the_record_and_finishes_its_windows(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    from sncli.source.backfill import BackfillRequest, run_backfill

    bad, every = _seed(emulator, 80, {"short_description": "huge", "description": LONG_TEXT})
    run = uuid.uuid4().hex[:8]
    topic, dlq = f"bf-{run}", f"dlq-{run}"
    settings = _settings(emulator, kafka_bootstrap, tmp_path / "o.json", topic, dlq, page_size=30,
                         kafka_client={"message.max.bytes": 20_000})

    summary = run_backfill(settings, BackfillRequest(table="incident", parallel=2))

    assert summary.exit_code == int(ExitCode.PARTIAL), summary.to_json()
    assert summary.tables["incident"].dlq == {"refused": 1} and summary.extra["range_done"] is True
    records = read_all(kafka_bootstrap, topic, timeout=30, expected=80)
    missing = {s.encode() for s in every if s != bad} - {r.key for r in records}
    if missing:  # seen once under the full suite (13 records, one partition's share of a page): say where
        print("missing", len(missing), "; windows:", summary.extra.get("windows"))
        print(describe_partitions(records))
        again = read_all(kafka_bootstrap, topic, timeout=30, expected=80)
        print("a second read finds", len(missing & {r.key for r in again}), "of them")
    assert sorted(r.key for r in records) == sorted(s.encode() for s in every if s != bad)
    assert [r.key for r in read_all(kafka_bootstrap, dlq, timeout=30, expected=1)] == [bad.encode()]
