"""`verify` on the real broker and the emulator: in sync, each kind of drift, repair, field keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from sncli.config import Settings
from sncli.emulator.server import ServiceNowEmulator
from sncli.source.cycle import run_poll
from sncli.source.keys import fields_digest
from sncli.verify.engine import VerifyRequest, run_verify
from sncli.verify.report import TableReport
from sncli.verify.search import SearchPolicy
from tests.fixtures.kafka import read_all
from tests.integration.test_source_support import make_settings, stored_cursor

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW - timedelta(days=2)


def _seed(emulator: ServiceNowEmulator, count: int = 2000) -> list[dict[str, str]]:
    emulator.state.generate("incident", count, at=START, spread_seconds=86_400, field_count=6, record_bytes=128,
                            seed=7)
    return emulator.state.records("incident")


def _polled(emulator: ServiceNowEmulator, kafka_bootstrap: str, topic: str, tmp_path: Path,
            **table: object) -> Settings:
    settings = make_settings(emulator.url, kafka_bootstrap, tmp_path / "offsets.json",
                             [{"name": "incident", "topic": topic, **table}])
    assert run_poll(settings).exit_code == 0
    return settings


def _verify(settings: Settings, **kw: object) -> TableReport:
    return run_verify(settings, VerifyRequest(tables=["incident"], **kw)).tables["incident"]  # type: ignore[arg-type]


def _at(record: dict[str, str], seconds: int) -> str:
    moment = datetime.strptime(record["sys_updated_on"], "%Y-%m-%d %H:%M:%S") + timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def test_a_table_in_sync_costs_one_count_per_first_window_and_two_listings_past_the_bound(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    _seed(emulator)
    settings = _polled(emulator, kafka_bootstrap, unique_topic, tmp_path)
    emulator.state.clear_journal()
    report = _verify(settings)
    assert report.error is None and report.counts() == {"missing": 0, "stale": 0, "extra": 0}
    assert (report.sn_records, report.kafka_alive, report.exit_code) == (2000, 2000, 0)
    paths = [e.path for e in emulator.state.journal()]
    # A listing of what changed after the cursor (nothing), one count per first window, the listing again.
    assert paths[0] == paths[-1] == "/api/now/table/incident"
    assert all(p == "/api/now/stats/incident" for p in paths[1:-1])
    assert len(paths) == report.requests <= 1 + 64 + 1


def test_backdated_inserts_are_missing_and_repair_sends_them_without_moving_the_cursor(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    records = _seed(emulator)
    settings = _polled(emulator, kafka_bootstrap, unique_topic, tmp_path)
    cursor = stored_cursor(tmp_path / "offsets.json", "incident")
    # An import with auto sys fields off: old sys_updated_on, behind the cursor; a poll never sees them.
    backdated = [f"{0xabc000 + i:032x}" for i in range(5)]
    for i, sys_id in enumerate(backdated):
        stamp = _at(records[300 * i], 1)
        emulator.state.insert("incident", {"sys_id": sys_id, "short_description": "imported",
                                           "sys_created_on": stamp, "sys_updated_on": stamp})
    assert run_poll(settings).tables["incident"].records == 0

    report = _verify(settings)
    assert report.findings.missing == sorted(backdated)
    assert (report.findings.stale, report.findings.extra, report.exit_code) == ([], [], 3)

    repaired = _verify(settings, repair=True)
    assert repaired.exit_code == 0 and repaired.before_repair == {"missing": 5, "stale": 0, "extra": 0}
    assert repaired.repair is not None and repaired.repair.resent == 5
    assert stored_cursor(tmp_path / "offsets.json", "incident") == cursor  # never moved
    delivered = read_all(kafka_bootstrap, unique_topic, timeout=30, expected=2005)
    assert {r.key for r in delivered} >= {s.encode() for s in backdated}
    assert _verify(settings).exit_code == 0


def test_a_record_changed_after_the_poll_is_pending_and_hides_no_missing_one(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    records = _seed(emulator)
    settings = _polled(emulator, kafka_bootstrap, unique_topic, tmp_path)
    changed = records[400]["sys_id"]
    emulator.state.update("incident", changed, {"short_description": "changed after the poll"})
    # Imported behind the cursor in the very second of the changed record's version in Kafka: one window
    # holds both, and its counts agree (the older version counted in Kafka, the import in ServiceNow).
    stamp = records[400]["sys_updated_on"]
    emulator.state.insert("incident", {"sys_id": "d" * 32, "sys_created_on": stamp, "sys_updated_on": stamp})
    report = _verify(settings)
    assert (report.findings.missing, report.findings.pending) == (["d" * 32], [changed])
    assert (report.findings.stale, report.findings.extra, report.exit_code) == ([], [], 3)
    assert report.to_json()["pending_complete"] is True


def test_records_deleted_in_servicenow_are_extra_and_repair_tombstones_them(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    records = _seed(emulator)
    settings = _polled(emulator, kafka_bootstrap, unique_topic, tmp_path)
    gone = sorted(records[i]["sys_id"] for i in (0, 700, 1999))
    for sys_id in gone:
        emulator.state.delete("incident", sys_id)
    report = _verify(settings)
    assert (report.findings.extra, report.findings.missing, report.exit_code) == (gone, [], 3)

    assert _verify(settings, repair=True).exit_code == 0
    messages = read_all(kafka_bootstrap, unique_topic, timeout=30, expected=2003)
    last = {r.key: r for r in messages}
    for sys_id in gone:
        tombstone = last[sys_id.encode()]
        assert tombstone.value is None
        assert tombstone.header("sn.operation") == b"delete"
        assert tombstone.header("sn.sys_id") == sys_id.encode()
    assert _verify(settings).counts() == {"missing": 0, "stale": 0, "extra": 0}


def test_a_record_rewritten_with_an_old_timestamp_is_stale(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    records = _seed(emulator)
    settings = _polled(emulator, kafka_bootstrap, unique_topic, tmp_path)
    target = records[100]
    emulator.state.update("incident", target["sys_id"], {"short_description": "fixed by an import"},
                          at=records[1500]["sys_updated_on"])
    report = _verify(settings)
    assert [s.sys_id for s in report.findings.stale] == [target["sys_id"]]
    assert (report.findings.missing, report.findings.extra) == ([], [])
    assert _verify(settings, repair=True).exit_code == 0


def _copy_from(bootstrap: str, source: str, target: str, skip: int) -> int:
    """``target`` = ``source`` without its first ``skip`` messages of each partition (a head lost to retention)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(target, 3, 1)])[target].result(10)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    kept = 0
    for record in read_all(bootstrap, source, timeout=30):
        if record.offset < skip:
            continue
        producer.produce(target, record.value, record.key, partition=record.partition,
                         timestamp=record.timestamp_ms, headers=record.headers)
        kept += 1
    assert producer.flush(30) == 0
    return kept


def test_a_topic_missing_its_first_records(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    _seed(emulator)
    _polled(emulator, kafka_bootstrap, unique_topic + "-full", tmp_path)
    kept = _copy_from(kafka_bootstrap, unique_topic + "-full", unique_topic, skip=100)
    lost = {r.key.decode() for r in read_all(kafka_bootstrap, unique_topic + "-full", timeout=30)
            if r.offset < 100}
    truncated = make_settings(emulator.url, kafka_bootstrap, tmp_path / "offsets.json",
                              [{"name": "incident", "topic": unique_topic}])  # the same cursor, the copied topic
    report = _verify(truncated)
    assert kept == 2000 - len(lost)
    assert set(report.findings.missing) == lost and report.exit_code == 3
    assert _verify(truncated, repair=True).exit_code == 0


def test_a_table_keyed_by_fields_maps_messages_by_their_sys_id_header(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    records = _seed(emulator, 600)
    settings = _polled(emulator, kafka_bootstrap, unique_topic, tmp_path,
                       key={"type": "fields", "fields": ["number"]})
    gone = records[10]
    emulator.state.delete("incident", gone["sys_id"])
    emulator.state.insert("incident", {"sys_id": "f" * 32, "number": "INC-BACKDATED",
                                       "sys_created_on": _at(records[20], 0), "sys_updated_on": _at(records[20], 0)})
    report = _verify(settings)
    assert (report.findings.extra, report.findings.missing) == ([gone["sys_id"]], ["f" * 32])

    assert _verify(settings, repair=True).exit_code == 0
    tombstones = [r for r in read_all(kafka_bootstrap, unique_topic, timeout=30, expected=602) if r.value is None]
    assert [t.key for t in tombstones] == [fields_digest([gone["number"]]).encode()]


def test_what_cannot_be_verified_exits_1_with_the_reason(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    _seed(emulator, 50)
    never_polled = make_settings(emulator.url, kafka_bootstrap, tmp_path / "none.json",
                                 [{"name": "incident", "topic": unique_topic}])
    report = _verify(never_polled)
    assert report.exit_code == 1 and report.error is not None and "no poll cursor" in report.error

    settings = _polled(emulator, kafka_bootstrap, unique_topic, tmp_path)
    emulator.state.update_settings(hidden_rows={"incident": "number=INC0000001"})
    hidden = _verify(settings)
    assert hidden.exit_code == 1 and hidden.error is not None and "403" in hidden.error


def test_exact_finds_a_missing_and_an_extra_that_cancel_out_in_one_window(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    records = _seed(emulator)
    settings = _polled(emulator, kafka_bootstrap, unique_topic, tmp_path)
    emulator.state.delete("incident", records[5]["sys_id"])
    stamp = _at(records[3], 0)
    emulator.state.insert("incident", {"sys_id": "e" * 32, "sys_created_on": stamp, "sys_updated_on": stamp})
    counted = _verify(settings)  # equal counts in their window: counting alone may not see them
    assert set(counted.findings.missing) <= {"e" * 32} and set(counted.findings.extra) <= {records[5]["sys_id"]}
    exact = run_verify(settings, VerifyRequest(tables=["incident"], policy=SearchPolicy(exact=True)))
    found = exact.tables["incident"].findings
    assert (found.missing, found.extra) == (["e" * 32], [records[5]["sys_id"]])
