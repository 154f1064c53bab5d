"""`source poll` with `deletes: audit` on the real broker and the emulator: deletes arrive as tombstones.

The emulator's clock is frozen and moved by hand, so every change has a known
second; the cycle's upper bound is that clock minus the 1 s safety lag.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from sncli.config import parse_settings
from sncli.emulator.server import ServiceNowEmulator
from sncli.errors import UsageError
from sncli.kafka.admin import topic_configs
from sncli.sink.drain import run_drain
from sncli.sink.job import DrainOptions
from sncli.source.backfill import BackfillRequest, run_backfill
from sncli.source.cycle import run_poll
from sncli.source.keys import fields_digest
from tests.fixtures.kafka import KafkaRecord, read_all
from tests.integration.test_source_support import config_dict, make_settings, stored_cursor

pytestmark = pytest.mark.integration

T0 = "2026-06-01 12:00:00"


def at(seconds: int) -> str:
    return f"2026-06-01 12:{seconds // 60:02d}:{seconds % 60:02d}"


def latest_per_key(records: list[KafkaRecord]) -> dict[bytes, KafkaRecord]:
    """What a compacted topic keeps: the last message of each key (records come in partition order)."""
    latest: dict[bytes, KafkaRecord] = {}
    for record in records:
        assert record.key is not None
        latest[record.key] = record
    return latest


def mirror(records: list[KafkaRecord]) -> dict[str, str]:
    """sys_id -> sys_updated_on of every key whose last message is a record (tombstones remove keys)."""
    alive = {}
    for record in latest_per_key(records).values():
        if record.value is not None:
            value: dict[str, Any] = orjson.loads(record.value)
            alive[value["sys_id"]] = value["sys_updated_on"]
    return alive


def table_state(emulator: ServiceNowEmulator, table: str = "incident") -> dict[str, str]:
    return {r["sys_id"]: r["sys_updated_on"] for r in emulator.state.records(table)}


def _settings(emulator: ServiceNowEmulator, bootstrap: str, topic: str, offsets: Path, **table: Any) -> Any:
    entry = {"name": "incident", "topic": topic, "deletes": "audit", **table}
    return make_settings(emulator.url, bootstrap, offsets, [entry], page_size=2)


def test_updated_never_polled_and_restored_records_end_as_servicenow_has_them(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    state = emulator.state
    state.clock.freeze(at(0))
    a, b, c, d, f = (state.insert("incident", {"number": f"INC{i}"}, at=at(1))["sys_id"] for i in range(5))
    state.clock.set(at(10))
    offsets = tmp_path / "offsets.json"
    settings = _settings(emulator, kafka_bootstrap, unique_topic, offsets)
    first = run_poll(settings)
    assert first.exit_code == 0, first.to_json()
    assert (first.tables["incident"].records, first.tables["incident"].deletes) == (5, 0)

    def change(second: int, action: Any) -> None:
        state.clock.set(at(second))
        action()

    change(20, lambda: state.update("incident", a, {"short_description": "updated"}))
    change(21, lambda: state.delete("incident", a))  # updated, then deleted: a tombstone
    change(22, lambda: state.insert("incident", {"number": "INC-E"}))
    e = state.records("incident")[-1]["sys_id"]
    change(23, lambda: state.delete("incident", e))  # created and deleted between two cycles
    change(24, lambda: state.delete("incident", b))
    change(25, lambda: state.insert("incident", {"sys_id": b, "number": "INC1"}))  # deleted, then restored
    change(26, lambda: state.update("incident", c, {"short_description": "plain update"}))
    change(27, lambda: (state.delete("incident", f), state.insert("incident", {"sys_id": f, "number": "INC4"})))
    state.clock.set(at(40))  # deleted and restored within one second: the record wins (it exists)

    second = run_poll(settings)

    t = second.tables["incident"]
    assert second.exit_code == 0, second.to_json()
    assert (t.records, t.deletes, t.stopped) == (3, 4, "caught_up")  # b, c, f; a, e, b, f
    got = read_all(kafka_bootstrap, unique_topic, timeout=30, expected=12)
    assert len(got) == 12
    assert mirror(got) == table_state(emulator)  # the last message per key is ServiceNow's state
    assert set(table_state(emulator)) == {b, c, d, f}
    # sncli created the topic compacted (kafka.topics.retention: mirror), so what compaction keeps
    # (the latest message per key, no key whose latest is a tombstone) is the table.
    configs = topic_configs(settings.kafka, [unique_topic])[unique_topic]
    assert isinstance(configs, dict) and configs["cleanup.policy"] == "compact"
    tombstones = [r for r in got if r.value is None]
    assert sorted(r.key for r in tombstones) == sorted(x.encode() for x in (a, e, b, f))
    dead = latest_per_key(got)[a.encode()]
    assert dead.value is None and dead.timestamp_ms is not None
    assert dead.header("sn.operation") == b"delete" and dead.header("sn.sys_id") == a.encode()
    assert dead.header("sn.table") == b"incident"
    assert dead.header("sn.instance") == f"127.0.0.1:{emulator.port}".encode()
    assert (dead.header("sn.extracted_at") or b"").endswith(b"Z")
    assert all(r.header("sn.operation") == b"upsert" for r in got if r.value is not None)
    audit = [r for r in state.records("sys_audit_delete") if r["tablename"] == "incident"]
    last = max((r["sys_created_on"], r["sys_id"]) for r in audit)
    assert stored_cursor(offsets, "deletes/incident") == last
    assert t.to_json()["deletes_cursor_after"] == {"timestamp": last[0], "sys_id": last[1]}

    third = run_poll(settings)  # nothing new: nothing sent again
    assert (third.tables["incident"].records, third.tables["incident"].deletes) == (0, 0)


def test_a_fields_keyed_table_gets_its_tombstone_under_the_key_of_the_deleted_records_fields(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    state = emulator.state
    state.clock.freeze(at(0))
    keep = state.insert("incident", {"number": "INC1", "company": "acme"}, at=at(1))
    gone = state.insert("incident", {"number": "INC2", "company": "acme & <co>"}, at=at(1))
    state.clock.set(at(10))
    settings = _settings(emulator, kafka_bootstrap, unique_topic, tmp_path / "o.json",
                         key={"type": "fields", "fields": ["number", "company"]})
    assert run_poll(settings).exit_code == 0
    state.clock.set(at(11))
    state.delete("incident", gone["sys_id"])
    state.clock.set(at(20))

    summary = run_poll(settings)

    assert summary.exit_code == 0, summary.to_json()
    got = read_all(kafka_bootstrap, unique_topic, timeout=30, expected=3)
    latest = latest_per_key(got)
    assert latest[fields_digest(["INC2", "acme & <co>"]).encode()].value is None
    assert orjson.loads(latest[fields_digest(["INC1", "acme"]).encode()].value or b"")["sys_id"] == keep["sys_id"]
    assert len(latest) == 2
    configs = topic_configs(settings.kafka, [unique_topic])[unique_topic]  # shared keys: never compacted
    assert isinstance(configs, dict) and configs["cleanup.policy"] == "delete" and configs["retention.ms"] == "-1"


def _seed_deleted(emulator: ServiceNowEmulator, count: int) -> list[str]:
    """``count`` records inserted at second 1 and deleted at seconds 2, 3, ...; the clock left at 30."""
    state = emulator.state
    state.clock.freeze(at(0))
    ids = [state.insert("incident", {"number": f"INC{i}"}, at=at(1))["sys_id"] for i in range(count)]
    for i, sys_id in enumerate(ids):
        state.clock.set(at(2 + i))
        state.delete("incident", sys_id)
    state.insert("incident", {"number": "ALIVE"}, at=at(1))
    state.clock.set(at(30))
    return ids


def test_records_wait_until_the_deletes_caught_up_and_the_deletes_cursor_stops_at_what_kafka_acknowledged(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    deleted = _seed_deleted(emulator, 5)
    offsets = tmp_path / "offsets.json"
    settings = _settings(emulator, kafka_bootstrap, unique_topic, offsets)
    audit = sorted((r["sys_created_on"], r["sys_id"]) for r in emulator.state.records("sys_audit_delete"))

    bounded = run_poll(settings, max_records=3)  # the budget ends inside the deletes: no record may be sent

    t = bounded.tables["incident"]
    assert (bounded.exit_code, t.deletes, t.records, t.stopped) == (0, 3, 0, "max_records")
    assert stored_cursor(offsets, "deletes/incident") == audit[2]
    assert stored_cursor(offsets, "incident") is None
    sent = read_all(kafka_bootstrap, unique_topic, timeout=30, expected=3)
    assert sorted(r.key for r in sent) == sorted(x.encode() for x in deleted[:3])

    entry = {"name": "incident", "topic": unique_topic, "deletes": "audit"}
    config = config_dict(emulator.url, "127.0.0.1:1", offsets, [entry], page_size=2,
                         kafka_client={"message.timeout.ms": 1500, "socket.timeout.ms": 1000})
    config["kafka"]["topics"]["create"] = False
    failed = run_poll(parse_settings(config, environ={}))  # Kafka unreachable: nothing acknowledged, no cursor moves
    assert failed.exit_code == 1, failed.to_json()
    assert stored_cursor(offsets, "deletes/incident") == audit[2]
    assert stored_cursor(offsets, "incident") is None

    rest = run_poll(settings)
    assert (rest.exit_code, rest.tables["incident"].deletes, rest.tables["incident"].records) == (0, 2, 1)
    assert stored_cursor(offsets, "deletes/incident") == audit[-1]
    got = read_all(kafka_bootstrap, unique_topic, timeout=30, expected=6)
    assert mirror(got) == table_state(emulator)
    assert sorted(r.key for r in got if r.value is None) == sorted(x.encode() for x in deleted)


def test_deletes_are_counted_in_their_own_pushed_counter(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, pushgateway_url: str, unique_topic: str, tmp_path: Path
) -> None:
    _seed_deleted(emulator, 4)
    job = f"deletes-{unique_topic}"
    entry = {"name": "incident", "topic": unique_topic, "deletes": "audit"}
    config = config_dict(emulator.url, kafka_bootstrap, tmp_path / "o.json", [entry], pushgateway=pushgateway_url)
    config["metrics"]["job"] = job
    assert run_poll(parse_settings(config, environ={})).exit_code == 0
    text = urllib.request.urlopen(f"{pushgateway_url}/metrics", timeout=10).read().decode()
    lines = [line for line in text.splitlines() if line.startswith("sncli_source_deletes_total{")
             and f'job="{job}"' in line and 'table="incident"' in line]
    assert len(lines) == 1 and float(lines[0].rsplit(" ", 1)[1]) == 4.0


def test_a_round_trip_to_another_table_carries_the_deletes(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    state = emulator.state
    state.clock.freeze(at(0))
    state.define_table("incident_copy", {"number": "string", "short_description": "string"})  # the copy's table
    a, b, c, d = (state.insert("incident", {"number": f"INC{i}", "short_description": f"v{i}"}, at=at(1))["sys_id"]
                  for i in range(4))
    state.clock.set(at(10))
    entry = {"name": "incident", "topic": unique_topic, "deletes": "audit"}
    config = config_dict(emulator.url, kafka_bootstrap, tmp_path / "o.json", [entry], page_size=2)
    config["kafka"]["client"] = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 500}
    config["sink"] = {"group_id": f"g-{unique_topic}", "dlq_topic": f"{unique_topic}-dlq", "workers": 2,
                      "dlq_signing_key": "test-dlq-signing-key-0123456789abcdef",
                      "topics": [{"topic": unique_topic, "table": "incident_copy", "delete_on_tombstone": True}]}
    settings = parse_settings(config, environ={})

    def poll_and_drain() -> None:
        assert run_poll(settings).exit_code == 0
        drained = run_drain(settings, DrainOptions(max_seconds=60))
        assert drained.exit_code == 0, drained.to_json()

    poll_and_drain()
    assert set(table_state(emulator, "incident_copy")) == {a, b, c, d}
    for second, action in [
        (11, lambda: state.update("incident", a, {"short_description": "changed"})),
        (12, lambda: state.delete("incident", a)),
        (13, lambda: state.delete("incident", b)),
        (14, lambda: state.update("incident", c, {"short_description": "kept"})),
        (15, lambda: state.delete("incident", d)),
        (16, lambda: state.insert("incident", {"sys_id": d, "number": "INC3", "short_description": "back"})),
    ]:
        state.clock.set(at(second))
        action()
    state.clock.set(at(30))

    poll_and_drain()

    copy = {r["sys_id"]: r["short_description"] for r in state.records("incident_copy")}
    assert copy == {r["sys_id"]: r["short_description"] for r in state.records("incident")}
    assert copy == {c: "kept", d: "back"}


def test_backfill_with_deletes_rebuilds_a_topic_that_mirrors_the_table(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    state = emulator.state
    state.clock.freeze(at(0))
    ids = [state.insert("incident", {"number": f"INC{i}"}, at=at(1))["sys_id"] for i in range(6)]
    for second, action in [
        (5, lambda: state.delete("incident", ids[0])),
        (6, lambda: state.delete("incident", ids[1])),
        (7, lambda: state.insert("incident", {"sys_id": ids[1], "number": "INC1"})),  # restored
        (8, lambda: state.update("incident", ids[2], {"short_description": "x"})),
    ]:
        state.clock.set(at(second))
        action()
    state.delete("problem", state.insert("problem", {"number": "PRB1"})["sys_id"])  # another table's delete
    state.clock.set(at(59))
    offsets = tmp_path / "o.json"
    settings = _settings(emulator, kafka_bootstrap, unique_topic, offsets)
    request = BackfillRequest(table="incident", since=at(0), until=at(50), parallel=2, deletes=True)

    summary = run_backfill(settings, request)

    assert summary.exit_code == 0, summary.to_json()
    assert summary.extra["deletes"]["tombstones"] == 2
    got = read_all(kafka_bootstrap, unique_topic, timeout=30, expected=7)
    assert len(got) == 7  # 2 tombstones, then the 5 records alive
    assert mirror(got) == table_state(emulator)
    assert run_backfill(settings, request).extra["deletes"]["tombstones"] == 0  # the range's deletes are done
    with pytest.raises(UsageError):
        run_backfill(settings, BackfillRequest(table="incident", until=at(50), window=(0, 2), deletes=True))


def test_a_delete_whose_key_cannot_be_made_goes_to_the_source_dlq_and_the_stream_moves_on(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    state = emulator.state
    state.clock.freeze(at(0))
    good = state.insert("incident", {"number": "INC1"}, at=at(1))
    broken = {"tablename": "incident", "documentkey": "f" * 32, "payload": "<record_update"}  # not XML
    state.insert("sys_audit_delete", broken, at=at(2))
    state.clock.set(at(3))
    state.delete("incident", good["sys_id"])
    state.clock.set(at(20))
    offsets = tmp_path / "o.json"
    entry = {"name": "incident", "topic": unique_topic, "deletes": "audit",
             "key": {"type": "fields", "fields": ["number"]}}
    config = config_dict(emulator.url, kafka_bootstrap, offsets, [entry])
    config["source"]["dlq_topic"] = f"{unique_topic}-dlq"
    config["sink"] = {"dlq_signing_key": "test-dlq-signing-key-0123456789abcdef"}

    summary = run_poll(parse_settings(config, environ={}))

    t = summary.tables["incident"]
    assert (summary.exit_code, t.deletes, t.dlq, t.stopped) == (3, 1, {"encode": 1}, "caught_up"), summary.to_json()
    audit = max((r["sys_created_on"], r["sys_id"]) for r in state.records("sys_audit_delete"))
    assert stored_cursor(offsets, "deletes/incident") == audit
    (dead,) = read_all(kafka_bootstrap, f"{unique_topic}-dlq", timeout=30, expected=1)
    assert dead.value is None and dead.header("sn.operation") == b"delete"
    assert dead.header("sn.sys_id") == b"f" * 32 and dead.header("sncli.error.class") == b"encode"
    tombstones = [r for r in read_all(kafka_bootstrap, unique_topic, timeout=30) if r.value is None]
    assert [r.key for r in tombstones] == [fields_digest(["INC1"]).encode()]


def test_backfill_set_cursor_moves_the_deletes_cursor_too_so_the_poll_sends_no_older_tombstone(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    state = emulator.state
    state.clock.freeze(at(0))
    x = state.insert("incident", {"number": "INC1"}, at=at(1))["sys_id"]
    state.clock.set(at(5))
    state.delete("incident", x)
    state.clock.set(at(6))
    state.insert("incident", {"sys_id": x, "number": "INC1"})  # restored
    state.clock.set(at(59))
    offsets = tmp_path / "o.json"
    settings = _settings(emulator, kafka_bootstrap, unique_topic, offsets, start=at(0))
    with pytest.raises(UsageError, match="--deletes"):
        run_backfill(settings, BackfillRequest(table="incident", since=at(0), until=at(50), set_cursor=True))

    done = run_backfill(settings, BackfillRequest(table="incident", since=at(0), until=at(50), set_cursor=True,
                                                  deletes=True))

    assert done.exit_code == 0 and done.extra["poll_cursor_set"] is True, done.to_json()
    assert stored_cursor(offsets, "deletes/incident") == (at(50), "")
    poll = run_poll(settings)
    assert (poll.tables["incident"].deletes, poll.tables["incident"].records) == (0, 0)
    got = read_all(kafka_bootstrap, unique_topic, timeout=30, expected=2)
    assert mirror(got) == table_state(emulator) == {x: at(6)}


def test_a_backfill_whose_deletes_were_dead_lettered_exits_3(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    state = emulator.state
    state.clock.freeze(at(0))
    state.insert("incident", {"number": "INC1"}, at=at(1))
    state.insert("sys_audit_delete", {"tablename": "incident", "documentkey": "f" * 32, "payload": "x"}, at=at(2))
    state.clock.set(at(59))
    entry = {"name": "incident", "topic": unique_topic, "deletes": "audit",
             "key": {"type": "fields", "fields": ["number"]}}
    config = config_dict(emulator.url, kafka_bootstrap, tmp_path / "o.json", [entry])
    config["source"]["dlq_topic"] = f"{unique_topic}-dlq"
    config["sink"] = {"dlq_signing_key": "test-dlq-signing-key-0123456789abcdef"}
    request = BackfillRequest(table="incident", since=at(0), until=at(50), deletes=True)

    summary = run_backfill(parse_settings(config, environ={}), request)

    assert summary.exit_code == 3, summary.to_json()
    assert summary.extra["deletes"]["dlq"] == {"encode": 1} and summary.tables["incident"].records == 1
