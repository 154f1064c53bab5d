"""dlq inspect / replay / export on real Kafka and the emulator."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from sncli.config import Settings
from sncli.dlq.record import ERROR_HEADERS
from sncli.dlq.select import Filters, View, make_filters, replay_group
from sncli.dlq.views import export_dlq, inspect_dlq
from sncli.emulator.server import ServiceNowEmulator
from sncli.sink.drain import run_drain
from sncli.sink.job import DrainOptions
from sncli.sink.replay import run_replay
from tests.fixtures.kafka import read_all
from tests.integration.sink_support import (
    DLQ_KEY,
    committed_offsets,
    config_dict,
    create_topic,
    json_value,
    produce,
    settings_of,
    sid,
    write_config,
    writes,
)

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)


def header(headers: list[tuple[str, bytes | None]], name: str) -> str | None:
    found = None
    for key, value in headers:
        if key == name:
            found = None if value is None else value.decode()
    return found


@pytest.fixture
def dead_lettered(emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str) -> tuple[Settings, str]:
    """A drain that dead-letters 3 records for a 403 table and 1 undecodable one."""
    emulator.state.insert("incident", {"sys_id": sid(9), "state": "1"})
    emulator.state.update_settings(denied_tables={"u_denied"})
    emulator.state.define_table("u_denied", {"number": "string"})  # exists (else 400 Invalid table)
    create_topic(kafka_bootstrap, unique_topic, 1)
    route = [("sn.table", b"u_denied")]
    produce(kafka_bootstrap, unique_topic, [
        (b"a", json_value({"number": "A"}), route),
        (b"b", json_value({"number": "B"}), route),
        (b"g", b"\xff\xfe garbage", [("trace", b"g")]),
        (None, json_value({"sys_id": sid(9), "state": "2"}), None),
        (b"c", json_value({"number": "C"}), route),
    ])
    cfg = {"topic": unique_topic, "table": "incident", "route_header": "sn.table", "allowed_tables": ["u_denied"]}
    settings = settings_of(config_dict(emulator.url, kafka_bootstrap, [cfg], workers=2))
    summary = run_drain(settings, DrainOptions())
    assert summary.exit_code == 3 and summary.dlq == {"permission": 3, "decode": 1}
    return settings, unique_topic


def test_inspect_lists_with_filters_and_commits_nothing(dead_lettered: tuple[Settings, str]) -> None:
    settings, topic = dead_lettered
    kafka, dlq = settings.kafka, settings.sink.dlq_topic
    everything = inspect_dlq(kafka, dlq, Filters(), 100)
    assert len(everything) == 4
    assert sorted(e.error_class for e in everything) == ["decode", "permission", "permission", "permission"]
    assert {e.origin.offset for e in everything if e.origin} == {0, 1, 2, 4}
    denied = inspect_dlq(kafka, dlq, make_filters("u_denied", "permission", None, now=NOW), 100)
    assert len(denied) == 3 and all(e.status == 403 and e.table == "u_denied" for e in denied)
    assert inspect_dlq(kafka, dlq, make_filters(None, "decode", None, now=NOW), 100)[0].origin.offset == 2  # type: ignore[union-attr]
    assert inspect_dlq(kafka, dlq, make_filters(None, None, "1h", now=NOW, topic=topic), 100) == everything
    assert inspect_dlq(kafka, dlq, make_filters(None, None, None, now=NOW, topic="other"), 100) == []
    future = (NOW + timedelta(hours=1)).isoformat()
    assert inspect_dlq(kafka, dlq, make_filters(None, None, future, now=NOW), 100) == []
    latest = inspect_dlq(kafka, dlq, Filters(), 2)
    assert latest == everything[-2:]
    # Reading commits nothing, in any group: a replay still starts from the beginning.
    group = replay_group(settings.sink.group_id)
    assert committed_offsets(kafka.bootstrap_servers, group, dlq, 2) == {0: -1001, 1: -1001}


def test_inspect_of_a_missing_dlq_is_empty(emulator: ServiceNowEmulator, kafka_bootstrap: str) -> None:
    settings = settings_of(config_dict(emulator.url, kafka_bootstrap, [{"topic": "x", "table": "incident"}]))
    assert inspect_dlq(settings.kafka, settings.sink.dlq_topic, Filters(), 10) == []


def test_replay_after_the_fix_writes_the_records_and_a_second_replay_does_nothing(
    dead_lettered: tuple[Settings, str], emulator: ServiceNowEmulator
) -> None:
    settings, topic = dead_lettered
    bootstrap, dlq = settings.kafka.bootstrap_servers, settings.sink.dlq_topic
    permission = make_filters(None, "permission", None, now=NOW)
    group = replay_group(settings.sink.group_id)

    # The plan first: what would be written, and nothing is.
    emulator.state.clear_journal()
    plan = run_replay(settings, permission, dry_run=True)
    assert plan.exit_code == 0
    assert [(p["operation"], p["table"], p["sys_id"], p["offset"]) for p in plan.plan or []] == [
        ("POST", "u_denied", None, 0), ("POST", "u_denied", None, 1), ("POST", "u_denied", None, 4)]
    assert writes(emulator.state.journal()) == []
    assert committed_offsets(bootstrap, group, dlq, 2) == {0: -1001, 1: -1001}

    # Still denied: the records fail again and go back to the DLQ with a replay count.
    again = run_replay(settings, permission)
    assert again.exit_code == 3 and again.dlq == {"permission": 3} and again.carried_forward == 1

    # Fixed: the replay writes them.
    emulator.state.update_settings(denied_tables=set())
    emulator.state.clear_journal()
    fixed = run_replay(settings, permission)
    assert fixed.exit_code == 0, fixed.error
    assert fixed.written == {"post": 3} and fixed.dlq == {}
    assert sorted(r["number"] for r in emulator.state.records("u_denied")) == ["A", "B", "C"]
    assert [(e.method, e.table, e.status) for e in writes(emulator.state.journal())] == [("POST", "u_denied", 201)] * 3

    # A second replay does nothing: no write to ServiceNow, no record dead-lettered again.
    emulator.state.clear_journal()
    second = run_replay(settings, permission)
    assert second.exit_code == 0 and second.written == {} and second.dlq == {}
    assert writes(emulator.state.journal()) == []
    # Not even an unfiltered replay repeats them: only the (carried) undecodable record is left.
    rest = run_replay(settings, Filters())
    assert rest.exit_code == 3 and rest.written == {} and rest.dlq == {"decode": 1}
    assert writes(emulator.state.journal()) == []
    assert len(emulator.state.records("u_denied")) == 3

    # The re-dead-lettered record kept its origin and original headers, and counts its replays.
    records = read_all(bootstrap, dlq)
    last_decode = [r for r in records if header(r.headers, "sncli.error.class") == "decode"][-1]
    assert last_decode.value == b"\xff\xfe garbage" and last_decode.key == b"g"
    assert header(last_decode.headers, "sncli.error.topic") == topic
    assert header(last_decode.headers, "sncli.error.offset") == "2"
    assert header(last_decode.headers, "sncli.replay.count") == "1"
    assert header(last_decode.headers, "trace") == "g"
    assert [k for k, _ in last_decode.headers].count("sncli.error.class") == 1
    permission_copies = [r for r in records if header(r.headers, "sncli.error.class") == "permission"]
    assert max(int(header(r.headers, "sncli.replay.count") or 0) for r in permission_copies) == 1


def test_replay_of_a_topic_no_longer_configured_goes_back_to_the_dlq(
    dead_lettered: tuple[Settings, str], emulator: ServiceNowEmulator
) -> None:
    settings, _topic = dead_lettered
    data: dict[str, Any] = settings.model_dump(mode="json")
    data["servicenow"]["auth"]["password"] = "admin"
    data["sink"]["dlq_signing_key"] = DLQ_KEY
    data["sink"]["topics"] = [{"topic": "something-else", "table": "incident"}]
    changed = settings_of(data)
    summary = run_replay(changed, make_filters(None, "permission", None, now=NOW))
    assert summary.exit_code == 3 and summary.dlq == {"record": 3}
    last = read_all(settings.kafka.bootstrap_servers, settings.sink.dlq_topic)[-1]
    assert "not in sink.topics" in (header(last.headers, "sncli.error.message") or "")


def test_export_parquet_and_jsonl_one_row_per_dlq_record(
    dead_lettered: tuple[Settings, str], tmp_path: Path
) -> None:
    settings, topic = dead_lettered
    kafka, dlq = settings.kafka, settings.sink.dlq_topic
    out = tmp_path / "exports" / "dlq.parquet"
    assert export_dlq(kafka, dlq, Filters(), out, "parquet") == 4
    assert out.stat().st_mode & 0o777 == 0o600  # whole records: private to the user who exported them
    assert out.parent.stat().st_mode & 0o777 == 0o700
    table = pq.read_table(out)
    assert table.num_rows == 4
    columns = set(table.column_names)
    for name in ERROR_HEADERS:
        assert name.replace("sncli.error.", "error_") in columns
    rows = sorted(table.to_pylist(), key=lambda r: r["error_offset"])
    assert [r["error_offset"] for r in rows] == [0, 1, 2, 4]
    assert [r["error_class"] for r in rows] == ["permission", "permission", "decode", "permission"]
    assert rows[0]["error_status"] == 403 and rows[2]["error_status"] is None
    assert rows[0]["error_topic"] == topic and rows[0]["error_table"] == "u_denied"
    assert rows[2]["value"] == b"\xff\xfe garbage"  # exact bytes
    assert rows[0]["error_timestamp"].tzinfo is not None
    assert orjson.loads(rows[0]["headers"]) == {"sn.table": "u_denied"}

    filtered = tmp_path / "permission.jsonl"
    assert export_dlq(kafka, dlq, make_filters(None, "decode", None, now=NOW), filtered, "jsonl") == 1
    assert filtered.stat().st_mode & 0o777 == 0o600
    lines = [orjson.loads(line) for line in filtered.read_bytes().splitlines()]
    assert len(lines) == 1 and lines[0]["error_class"] == "decode"
    assert lines[0]["value_encoding"] == "base64"
    assert base64.b64decode(lines[0]["value"]) == b"\xff\xfe garbage"
    assert lines[0]["key"] == "g" and lines[0]["key_encoding"] == "utf-8"

    empty = tmp_path / "none.parquet"
    assert export_dlq(kafka, dlq, make_filters(None, "conflict", None, now=NOW), empty, "parquet") == 0
    assert pq.read_table(empty).num_rows == 0
    assert not list(tmp_path.glob("*.partial")) and not list(out.parent.glob("*.partial"))


def sncli_json(config: Path, *args: str) -> Any:
    proc = subprocess.run([sys.executable, "-m", "sncli", "--json", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_inspect_and_export_list_what_is_pending_and_the_full_history_with_all(
    dead_lettered: tuple[Settings, str], emulator: ServiceNowEmulator, tmp_path: Path
) -> None:
    settings, _topic = dead_lettered
    kafka, dlq = settings.kafka, settings.sink.dlq_topic
    data: dict[str, Any] = settings.model_dump(mode="json")
    data["servicenow"]["auth"]["password"] = "admin"
    data["sink"]["dlq_signing_key"] = DLQ_KEY
    config = write_config(tmp_path / "sncli.yaml", data)
    pending = View(replay_group(settings.sink.group_id))
    history = View(replay_group(settings.sink.group_id), history=True)

    # Still denied: the 3 permission records fail again (re-dead-lettered, replay count 1) and
    # the decode record, not selected, is carried forward. 8 records, 4 of them pending.
    again = run_replay(settings, make_filters(None, "permission", None, now=NOW))
    assert again.exit_code == 3 and again.dlq == {"permission": 3} and again.carried_forward == 1
    rows = sncli_json(config, "dlq", "inspect")
    assert sorted((r["error_class"], r["error_offset"], r["replay_count"]) for r in rows) == [
        ("decode", 2, 0), ("permission", 0, 1), ("permission", 1, 1), ("permission", 4, 1)]
    assert all(r["pending"] is True for r in rows)
    everything = sncli_json(config, "dlq", "inspect", "--all")
    assert len(everything) == 8
    assert sorted((r["error_offset"], r["pending"]) for r in everything) == [
        (0, False), (0, True), (1, False), (1, True), (2, False), (2, True), (4, False), (4, True)]

    # Fixed: the replay writes the permission records; the decode record is carried forward again.
    emulator.state.update_settings(denied_tables=set())
    fixed = run_replay(settings, make_filters(None, "permission", None, now=NOW))
    assert fixed.exit_code == 0 and fixed.written == {"post": 3} and fixed.carried_forward == 1
    left = inspect_dlq(kafka, dlq, Filters(), 100, view=pending)
    assert [(e.error_class, e.origin.offset if e.origin else None, e.pending) for e in left] == [("decode", 2, True)]
    assert inspect_dlq(kafka, dlq, make_filters(None, "permission", None, now=NOW), 100, view=pending) == []
    assert len(inspect_dlq(kafka, dlq, Filters(), 100, view=history)) == 9

    out = tmp_path / "pending.jsonl"
    assert export_dlq(kafka, dlq, Filters(), out, "jsonl", view=pending) == 1
    assert [orjson.loads(line)["error_class"] for line in out.read_bytes().splitlines()] == ["decode"]
    full = tmp_path / "history.parquet"
    assert export_dlq(kafka, dlq, Filters(), full, "parquet", view=history) == 9
    table = pq.read_table(full).to_pylist()
    assert [(r["error_class"], r["replay_count"]) for r in table if r["pending"]] == [("decode", 0)]
    # A group that never replayed sees everything as pending; reading committed nothing anywhere.
    assert len(inspect_dlq(kafka, dlq, Filters(), 100, view=View("never-replayed"))) == 9
    assert committed_offsets(kafka.bootstrap_servers, "never-replayed", dlq, 2) == {0: -1001, 1: -1001}


# --------------------------------------------------------------------------- hostile DLQ records (issue 15)


def sncli_run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sncli", "--json", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60, env={**os.environ})


def claims(topic: str, **extra: bytes) -> list[tuple[str, bytes | None]]:
    """The sncli.error.* headers a DLQ producer can write by hand."""
    headers: dict[str, bytes] = {"sncli.error.class": b"record", "sncli.error.message": b"x",
                                 "sncli.error.topic": topic.encode(), "sncli.error.partition": b"0",
                                 "sncli.error.offset": b"0", "sncli.error.attempts": b"1", **extra}
    return list(headers.items())


def test_records_written_straight_to_the_dlq_cannot_use_another_topics_rights(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The forgery of issue 15: a DLQ record claiming hr.users created and deleted sys_user records.

    Only the incidents topic's producer fed the sink; whoever wrote the other
    DLQ records (unsigned, a signature copied from a real record, an unparseable
    number) gets nothing written, and nothing stops the replay.
    """
    hr, inc, dlq = (f"{n}-{uuid.uuid4().hex[:8]}" for n in ("hr-users", "incidents", "dlq"))
    emulator.state.insert("sys_user", {"sys_id": sid(50), "user_name": "alice"})
    emulator.state.update_settings(denied_tables={"u_denied"})
    emulator.state.define_table("u_denied", {"number": "string"})  # exists (else 400 Invalid table)
    create_topic(kafka_bootstrap, inc, 1)
    create_topic(kafka_bootstrap, dlq, 1)
    hr_cfg = {"topic": hr, "table": "sys_user", "delete_on_tombstone": True, "sys_id_from": ["value", "header", "key"]}
    inc_cfg = {"topic": inc, "table": "incident", "route_header": "sn.table", "allowed_tables": ["u_denied"]}
    data = config_dict(emulator.url, kafka_bootstrap, [hr_cfg, inc_cfg], dlq_topic=dlq, workers=1)
    settings = settings_of(data)
    config = write_config(tmp_path / "sncli.yaml", data)

    # A real failure first: the sink dead-letters (and signs) one incidents record.
    produce(kafka_bootstrap, inc, [(b"real", json_value({"number": "REAL"}), [("sn.table", b"u_denied")])])
    assert run_drain(settings, DrainOptions()).dlq == {"permission": 1}
    real = read_all(kafka_bootstrap, dlq)[0]
    copied = [(k, v) for k, v in real.headers if k == "sncli.error.signature"]
    assert len(copied) == 1

    # Then what a DLQ producer writes by hand.
    produce(kafka_bootstrap, dlq, [
        (None, json_value({"user_name": "mallory", "roles": "admin"}), claims(hr)),    # POST sys_user
        (sid(50).encode(), None, claims(hr)),                                          # DELETE alice
        (sid(50).encode(), None, claims(hr) + copied),                                 # a stolen signature
        (b"n", json_value({"number": "N"}), claims(inc, **{"sncli.error.attempts": "²".encode()})),
        (b"old", json_value({"number": "OLD"}), claims(inc)),  # as dead-lettered before the key was set
    ])

    # inspect shows every record, the unparseable one marked; nothing dies.
    listing = sncli_run(config, "dlq", "inspect")
    assert listing.returncode == 0 and "Traceback" not in listing.stderr, listing.stderr
    rows = json.loads(listing.stdout)
    assert len(rows) == 6 and [r["problems"] for r in rows if r["problems"]] == [["sncli.error.attempts"]]
    assert sorted((r["key"] or "", r["signature"]) for r in rows) == [
        ("", "unsigned"), (sid(50), "invalid"), (sid(50), "unsigned"), ("n", "unsigned"), ("old", "unsigned"),
        ("real", "valid")]
    text = subprocess.run([sys.executable, "-m", "sncli", "--config", str(config), "dlq", "inspect"],
                          capture_output=True, text=True, timeout=60, env={**os.environ})
    assert text.returncode == 0 and "unparseable" in text.stdout, text.stderr

    # The plan shows the refusals; a dry run writes nothing.
    plan = run_replay(settings, Filters(), dry_run=True)
    assert plan.exit_code == 3 and plan.refused == {"bad_signature": 1, "malformed": 1, "unsigned": 3}
    assert sorted(p["error"] for p in plan.plan or [] if p["operation"] == "REFUSED") == [
        "bad_signature", "malformed", "unsigned", "unsigned", "unsigned"]

    # Replay: the real record is written, every forged one refused; exit 3, not 1.
    emulator.state.update_settings(denied_tables=set())
    emulator.state.clear_journal()
    replayed = sncli_run(config, "dlq", "replay")
    assert replayed.returncode == 3, replayed.stderr
    summary = json.loads(replayed.stdout)
    assert summary["written"] == {"post": 1} and summary["dlq"] == {}, summary
    assert summary["refused"] == {"bad_signature": 1, "malformed": 1, "unsigned": 3}, summary
    assert [(e.method, e.table) for e in writes(emulator.state.journal())] == [("POST", "u_denied")]
    assert [r["user_name"] for r in emulator.state.records("sys_user") if r["sys_id"] == sid(50)] == ["alice"]
    assert not [r for r in emulator.state.records("sys_user") if r.get("user_name") == "mallory"]

    # The unsigned ones stay pending (they may predate the key); the rest are history.
    pending = inspect_dlq(settings.kafka, dlq, Filters(), 100, view=View(replay_group(settings.sink.group_id)))
    assert [(e.origin.topic if e.origin else None, e.key) for e in pending] == [
        (hr, None), (hr, sid(50).encode()), (inc, b"old")]

    # The operator vouches for the unsigned records of the incidents topic: the old one is written,
    # and nothing of hr's rights is handed out (its records are not selected, only carried forward).
    emulator.state.clear_journal()
    vouched = run_replay(settings, make_filters(None, None, None, now=NOW, topic=inc), trust_unsigned=True)
    assert vouched.exit_code == 0 and vouched.written == {"post": 1} and vouched.carried_forward == 2
    assert [(e.method, e.table) for e in writes(emulator.state.journal())] == [("POST", "incident")]
    # Without a key, replay writes nothing at all unless told which topic to vouch for (exit 2).
    data["sink"].pop("dlq_signing_key")
    unkeyed = sncli_run(write_config(tmp_path / "nokey.yaml", data), "dlq", "replay")
    assert unkeyed.returncode == 2 and "dlq_signing_key" in unkeyed.stderr and "Traceback" not in unkeyed.stderr
    assert writes(emulator.state.journal(), "sys_user") == []
