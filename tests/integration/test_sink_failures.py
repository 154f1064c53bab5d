"""sink drain failure paths: the right ServiceNow calls, DLQ records with every header, commits, exit codes."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from sncli.dlq.record import ERROR_HEADERS
from sncli.emulator.faults import Fault
from sncli.emulator.server import ServiceNowEmulator
from sncli.sink.drain import run_drain
from sncli.sink.job import DrainOptions
from tests.fixtures.kafka import read_all
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


def header(headers: list[tuple[str, bytes | None]], name: str) -> str | None:
    found = None
    for key, value in headers:
        if key == name:
            found = None if value is None else value.decode()
    return found


def test_mixed_input_makes_the_right_calls_and_dlq_records(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str
) -> None:
    existing, absent, doomed = sid(1), sid(2), sid(3)
    emulator.state.insert("incident", {"sys_id": existing, "short_description": "old"})
    emulator.state.insert("incident", {"sys_id": doomed, "short_description": "to delete"})
    emulator.state.update_settings(denied_tables={"u_denied"})
    emulator.state.faults.add(Fault(kind="status", status=400, table="u_bad", times=None))
    create_topic(kafka_bootstrap, unique_topic, 1)
    original_headers = [("trace-id", b"abc"), ("sn.table", b"u_denied")]
    produce(kafka_bootstrap, unique_topic, [
        (b"k0", b"\x89PNG not json", [("trace-id", b"t0")]),                      # 0 decode
        (b"k1", json_value({"short_description": "denied"}), original_headers),    # 1 403 -> permission
        (b"k2", json_value({"short_description": "bad"}), [("sn.table", b"u_bad")]),  # 2 400 -> record
        (absent.encode(), json_value({"sys_id": absent, "short_description": "created by 404"}), None),  # 3
        (doomed.encode(), None, [("sn.sys_id", doomed.encode())]),                 # 4 tombstone -> DELETE
        (existing.encode(), json_value({"sys_id": existing, "short_description": "new",
                                        "sys_mod_count": "9"}), None),             # 5 PATCH
        (b"k6", json_value({"short_description": "fresh"}), None),                 # 6 POST
    ], partition=0)
    topic_cfg = {"topic": unique_topic, "table": "incident", "delete_on_tombstone": True, "not_found": "create",
                 "route_header": "sn.table", "allowed_tables": ["u_denied", "u_bad"]}
    data = config_dict(emulator.url, kafka_bootstrap, [topic_cfg], workers=1)
    settings = settings_of(data)
    emulator.state.clear_journal()

    summary = run_drain(settings, DrainOptions())

    assert summary.exit_code == 3, summary.error
    assert summary.dlq == {"decode": 1, "permission": 1, "record": 1}
    assert summary.written == {"post": 2, "patch": 1, "delete": 1}
    calls = [(e.method, e.path.removeprefix("/api/now/table/"), e.status) for e in writes(emulator.state.journal())]
    assert calls == [
        ("POST", "u_denied", 403),
        ("POST", "u_bad", 400),
        ("PATCH", f"incident/{absent}", 404),
        ("POST", "incident", 201),  # not_found: create -> POST with that sys_id
        ("DELETE", f"incident/{doomed}", 204),
        ("PATCH", f"incident/{existing}", 200),
        ("POST", "incident", 201),
    ]
    created = emulator.state.get("incident", absent)
    assert created is not None and created["short_description"] == "created by 404"
    assert emulator.state.get("incident", doomed) is None
    assert emulator.state.get("incident", existing)["short_description"] == "new"
    assert committed_offsets(kafka_bootstrap, settings.sink.group_id, unique_topic, 1) == {0: 7}

    dlq = read_all(kafka_bootstrap, settings.sink.dlq_topic, expected=3)
    assert len(dlq) == 3
    by_offset = {int(header(r.headers, "sncli.error.offset") or -1): r for r in dlq}
    assert set(by_offset) == {0, 1, 2}
    for offset, record in by_offset.items():
        names = [k for k, _ in record.headers]
        assert all(name in names for name in ERROR_HEADERS), names
        assert header(record.headers, "sncli.error.topic") == unique_topic
        assert header(record.headers, "sncli.error.partition") == "0"
        assert header(record.headers, "sncli.error.timestamp", ).endswith("Z")  # type: ignore[union-attr]
        assert record.key == f"k{offset}".encode()
        assert "admin" not in (header(record.headers, "sncli.error.message") or "").split()
    decode, denied, bad = by_offset[0], by_offset[1], by_offset[2]
    assert decode.value == b"\x89PNG not json"
    assert header(decode.headers, "sncli.error.class") == "decode"
    assert header(decode.headers, "sncli.error.status") == ""
    assert header(decode.headers, "sncli.error.attempts") == "0"
    assert header(decode.headers, "trace-id") == "t0"
    assert orjson.loads(denied.value or b"") == {"short_description": "denied"}
    assert denied.headers[:2] == original_headers  # the original headers come first, untouched
    assert header(denied.headers, "sncli.error.class") == "permission"
    assert header(denied.headers, "sncli.error.status") == "403"
    assert header(denied.headers, "sncli.error.table") == "u_denied"
    assert header(denied.headers, "sncli.error.attempts") == "1"
    assert "User Not Authorized" in (header(denied.headers, "sncli.error.message") or "")
    assert header(bad.headers, "sncli.error.class") == "record"
    assert header(bad.headers, "sncli.error.status") == "400"
    assert header(bad.headers, "sncli.error.table") == "u_bad"


def test_not_found_fail_and_ignore(emulator: ServiceNowEmulator, kafka_bootstrap: str) -> None:
    topics = [f"nf-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for name in topics:
        create_topic(kafka_bootstrap, name, 1)
        produce(kafka_bootstrap, name, [(None, json_value({"sys_id": sid(77), "state": "1"}), None),
                                        (None, None, [("sn.sys_id", sid(78).encode())])])
    cfgs = [{"topic": topics[0], "table": "incident", "not_found": "fail", "delete_on_tombstone": True},
            {"topic": topics[1], "table": "incident", "not_found": "ignore", "delete_on_tombstone": True}]
    settings = settings_of(config_dict(emulator.url, kafka_bootstrap, cfgs))
    summary = run_drain(settings, DrainOptions())
    assert summary.exit_code == 3
    assert summary.dlq == {"not_found": 2}  # fail: the PATCH and the DELETE of topic 0
    assert summary.skipped == 2  # ignore: both of topic 1
    assert emulator.state.get("incident", sid(77)) is None  # nothing was created


def test_ambiguous_post_lookup_finds_the_record_instead_of_duplicating(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str
) -> None:
    # The POST is applied but its answer never comes (read timeout): lookup by correlation field.
    emulator.state.faults.add(Fault(kind="timeout_after_write", method="POST", table="incident", times=1,
                                    close=True))
    create_topic(kafka_bootstrap, unique_topic, 1)
    produce(kafka_bootstrap, unique_topic, [(None, json_value({"number": "INC1", "state": "1"}), None),
                                            (None, json_value({"number": "INC2", "state": "1"}), None)])
    cfg = {"topic": unique_topic, "table": "incident", "ambiguous": "lookup", "correlation_field": "number"}
    settings = settings_of(config_dict(emulator.url, kafka_bootstrap, [cfg], workers=1))
    emulator.state.clear_journal()
    summary = run_drain(settings, DrainOptions())
    assert summary.exit_code == 0, summary.error
    assert sorted(r["number"] for r in emulator.state.records("incident")) == ["INC1", "INC2"]
    lookups = [e for e in emulator.state.journal() if e.method == "GET"]
    assert len(lookups) == 1
    assert lookups[0].query["sysparm_query"] == "number=INC1"
    assert lookups[0].query["sysparm_limit"] == "2"


def test_an_ambiguous_post_whose_correlation_value_has_a_caret_is_dead_lettered_not_looked_up(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str
) -> None:
    # ServiceNow documents no escape for '^' in a query value: the lookup cannot be made safe.
    emulator.state.faults.add(Fault(kind="timeout_after_write", method="POST", table="incident", times=1,
                                    close=True))
    create_topic(kafka_bootstrap, unique_topic, 1)
    produce(kafka_bootstrap, unique_topic, [(None, json_value({"number": "INC^NQ1", "state": "1"}), None),
                                            (None, json_value({"number": "INC2", "state": "1"}), None)])
    cfg = {"topic": unique_topic, "table": "incident", "ambiguous": "lookup", "correlation_field": "number"}
    settings = settings_of(config_dict(emulator.url, kafka_bootstrap, [cfg], workers=1))
    emulator.state.clear_journal()
    summary = run_drain(settings, DrainOptions())
    assert summary.exit_code == 3 and summary.dlq == {"ambiguous": 1}, summary.error
    # The first POST did land (its answer was lost): an operator resolves it from the DLQ record.
    assert sorted(r["number"] for r in emulator.state.records("incident")) == ["INC2", "INC^NQ1"]
    assert [e for e in emulator.state.journal() if e.method == "GET"] == []  # no query carried the value


def test_ambiguous_post_lookup_posts_again_when_nothing_landed_and_fails_on_two_matches(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str
) -> None:
    # 502 on POST: the gateway may have passed it on (ambiguous), but the emulator did not apply it.
    emulator.state.faults.add(Fault(kind="status", status=502, method="POST", table="incident", times=2))
    emulator.state.bulk_insert("incident", [{"number": "DUP"}, {"number": "DUP"}])
    create_topic(kafka_bootstrap, unique_topic, 1)
    produce(kafka_bootstrap, unique_topic, [(None, json_value({"number": "DUP"}), None),
                                            (None, json_value({"number": "ONE"}), None)])
    cfg = {"topic": unique_topic, "table": "incident", "ambiguous": "lookup", "correlation_field": "number"}
    settings = settings_of(config_dict(emulator.url, kafka_bootstrap, [cfg], workers=1))
    emulator.state.clear_journal()
    summary = run_drain(settings, DrainOptions())
    assert summary.exit_code == 3
    assert summary.written == {"post": 1} and summary.dlq == {"ambiguous": 1}
    calls = [(e.method, e.status) for e in emulator.state.journal() if e.path.startswith("/api/now/table/")]
    assert calls == [("POST", 502), ("GET", 200),  # DUP: two matches -> cannot tell which -> DLQ
                     ("POST", 502), ("GET", 200), ("POST", 201)]  # ONE: lookup finds none -> POST again
    assert sorted(r["number"] for r in emulator.state.records("incident")) == ["DUP", "DUP", "ONE"]
    dlq = read_all(kafka_bootstrap, settings.sink.dlq_topic, expected=1)
    assert "more than one record" in (header(dlq[0].headers, "sncli.error.message") or "")
    assert header(dlq[0].headers, "sncli.error.attempts") == "2"


def test_ambiguous_post_fail_policy_dead_letters(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str
) -> None:
    emulator.state.faults.add(Fault(kind="status", status=502, method="POST", table="incident", times=1))
    create_topic(kafka_bootstrap, unique_topic, 1)
    produce(kafka_bootstrap, unique_topic, [(None, json_value({"number": "A"}), None)])
    settings = settings_of(config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}]))
    summary = run_drain(settings, DrainOptions())
    assert summary.exit_code == 3 and summary.dlq == {"ambiguous": 1}
    dlq = read_all(kafka_bootstrap, settings.sink.dlq_topic, expected=1)
    assert header(dlq[0].headers, "sncli.error.status") == "502"


def test_retries_exhausted_is_dead_lettered_with_its_attempts(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str
) -> None:
    emulator.state.insert("incident", {"sys_id": sid(5), "state": "1"})
    emulator.state.faults.add(Fault(kind="status", status=503, method="PATCH", times=None))
    create_topic(kafka_bootstrap, unique_topic, 1)
    produce(kafka_bootstrap, unique_topic, [(None, json_value({"sys_id": sid(5), "state": "2"}), None)])
    settings = settings_of(config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}],
                                       max_attempts=3))
    summary = run_drain(settings, DrainOptions())
    assert summary.exit_code == 3 and summary.dlq == {"retries_exhausted": 1}
    dlq = read_all(kafka_bootstrap, settings.sink.dlq_topic, expected=1)
    assert header(dlq[0].headers, "sncli.error.attempts") == "3"
    assert header(dlq[0].headers, "sncli.error.status") == "503"


def test_bad_credentials_fail_the_run_without_dead_lettering(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str
) -> None:
    create_topic(kafka_bootstrap, unique_topic, 1)
    produce(kafka_bootstrap, unique_topic, [(None, json_value({"n": str(n)}), None) for n in range(5)])
    data = config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}])
    data["servicenow"]["auth"]["password"] = "canary-wrong-Pa55"
    settings = settings_of(data)
    summary = run_drain(settings, DrainOptions())
    assert summary.exit_code == 1 and summary.dlq == {}
    assert "401" in (summary.error or "") and "canary-wrong-Pa55" not in (summary.error or "")
    # Nothing was committed past the first record (0, or no commit at all).
    assert committed_offsets(kafka_bootstrap, settings.sink.group_id, unique_topic, 1)[0] in (0, -1001)


def dlq_unwritable_case(
    emulator: ServiceNowEmulator, bootstrap: str, topic: str, dlq_topic: str, *, create_topics: bool
) -> dict[str, Any]:
    """10 records, offset 4 goes to a 403 table; one worker so the order of events is fixed."""
    emulator.state.update_settings(denied_tables={"u_denied"})
    create_topic(bootstrap, topic, 1)
    produce(bootstrap, topic, [
        (None, json_value({"n": str(n)}), [("sn.table", b"u_denied")] if n == 4 else None) for n in range(10)
    ])
    cfg = {"topic": topic, "table": "incident", "route_header": "sn.table", "allowed_tables": ["u_denied"]}
    return config_dict(emulator.url, bootstrap, [cfg], workers=1, dlq_topic=dlq_topic, create_topics=create_topics)


def test_dlq_topic_missing_fails_the_run_and_commits_nothing_past_the_record(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str
) -> None:
    dlq_topic = f"dlq-missing-{uuid.uuid4().hex[:8]}"
    data = dlq_unwritable_case(emulator, kafka_bootstrap, unique_topic, dlq_topic, create_topics=False)
    settings = settings_of(data)

    failed = run_drain(settings, DrainOptions())

    assert failed.exit_code == 1
    assert dlq_topic in (failed.error or "") and "kafka.topics.create is false" in (failed.error or "")
    assert committed_offsets(kafka_bootstrap, settings.sink.group_id, unique_topic, 1) == {0: 4}
    assert sorted(int(r["n"]) for r in emulator.state.records("incident")) == [0, 1, 2, 3]

    # Fixed: the DLQ topic exists now. The rerun starts at the failed record and dead-letters it.
    create_topic(kafka_bootstrap, dlq_topic, 1)
    rerun = run_drain(settings, DrainOptions())
    assert rerun.exit_code == 3 and rerun.dlq == {"permission": 1}
    assert rerun.messages == 6
    assert committed_offsets(kafka_bootstrap, settings.sink.group_id, unique_topic, 1) == {0: 10}
    assert sorted(int(r["n"]) for r in emulator.state.records("incident")) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    dlq = read_all(kafka_bootstrap, dlq_topic, expected=1)
    assert [header(r.headers, "sncli.error.offset") for r in dlq] == ["4"]


def test_broker_refusing_the_dlq_write_fails_the_run(
    emulator: ServiceNowEmulator, private_tansu: Any, tmp_path: Path
) -> None:
    # A broker of its own that validates the DLQ topic against a schema no DLQ record meets:
    # the produce reaches the broker and the broker rejects it.
    topic, dlq_topic = "src", "dlq-refusing"
    refuse_all = orjson.dumps({"type": "object", "properties": {
        "value": {"type": "object", "required": ["never-present"]}}}).decode()
    broker = private_tansu(schemas={dlq_topic: refuse_all})
    data = dlq_unwritable_case(emulator, broker.bootstrap, topic, dlq_topic, create_topics=True)
    settings = settings_of(data)

    failed = run_drain(settings, DrainOptions())

    assert failed.exit_code == 1 and "could not dead-letter src[0]@4" in (failed.error or "")
    assert committed_offsets(broker.bootstrap, settings.sink.group_id, topic, 1) == {0: 4}

    # Fixed: a DLQ topic the broker accepts. The rerun writes the record to it.
    data["sink"]["dlq_topic"] = "dlq-accepting"
    rerun = run_drain(settings_of(data), DrainOptions())
    assert rerun.exit_code == 3 and rerun.dlq == {"permission": 1}
    assert committed_offsets(broker.bootstrap, settings.sink.group_id, topic, 1) == {0: 10}
    assert len(read_all(broker.bootstrap, "dlq-accepting", expected=1)) == 1


def test_a_servicenow_outage_stops_the_run_instead_of_dead_lettering_everything(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str
) -> None:
    emulator.state.faults.add(Fault(kind="status", status=503, table="incident", times=None))
    create_topic(kafka_bootstrap, unique_topic, 1)
    produce(kafka_bootstrap, unique_topic, [(None, json_value({"n": str(n)}), None) for n in range(40)])
    settings = settings_of(config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}],
                                       workers=2, max_attempts=2))
    summary = run_drain(settings, DrainOptions())
    assert summary.exit_code == 1 and "in a row" in (summary.error or "")
    dead = summary.dlq.get("retries_exhausted", 0)
    assert 5 <= dead <= 5 + 2  # the breaker's threshold, plus what the other worker had in hand
    committed = committed_offsets(kafka_bootstrap, settings.sink.group_id, unique_topic, 1)[0]
    assert committed <= dead  # nothing committed past the records that were not dead-lettered
