"""Poison messages in a sink topic: each is dead-lettered (or written), none stops the others, none is lost.

The mix, interleaved with good updates over two partitions: random bytes, an
Avro-framed value whose schema id the registry does not know, a JSON array, a
JSON string, a 5 MB value, records routed to a table that answers 400 and to
one that answers 403. After one drain: every message is either in ServiceNow
or in the DLQ with its original key and value, each key ends on its last good
update, and the commits are at the partition ends.

Covered elsewhere (not repeated): the DLQ headers of decode/403/400 failures
and the order of calls (tests/integration/test_sink_failures.py::
test_mixed_input_makes_the_right_calls_and_dlq_records), a DLQ topic that is
missing or refuses writes -> exit 1 and the commit stops at the record
(::test_dlq_topic_missing_fails_the_run_and_commits_nothing_past_the_record,
::test_broker_refusing_the_dlq_write_fails_the_run), resolve never raising
anything but RecordError (tests/unit/test_resolve.py, tests/reliability/test_bad_input.py).
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from sncli.emulator.faults import Fault
from sncli.emulator.server import ServiceNowEmulator
from tests.fixtures.kafka import read_all
from tests.reliability.support import (
    committed_offsets,
    create_topic,
    produce,
    run_sncli,
    sink_config,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

HUGE = 5 * 1024 * 1024
BIG_MESSAGES = {"message.max.bytes": 8 * 1024 * 1024}


def sid(n: int) -> str:
    return f"{n:032x}"


def _poison(kind: str, rng: random.Random, key: int) -> tuple[bytes | None, list[tuple[str, str | bytes | None]]]:
    if kind == "random bytes":
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))), []
    if kind == "unknown avro schema id":
        return b"\x00" + (987_654).to_bytes(4, "big") + b"\x02\x06abc", []
    if kind == "json array":
        return b'[{"sys_id": "' + sid(key).encode() + b'"}]', []
    if kind == "json string":
        return b'"just text"', []
    if kind == "400 table":
        return orjson.dumps({"seq": "x"}), [("sn.table", b"u_bad")]
    if kind == "403 table":
        return orjson.dumps({"seq": "x"}), [("sn.table", b"u_denied")]
    raise AssertionError(kind)


POISON_KINDS = ["random bytes", "unknown avro schema id", "json array", "json string", "400 table", "403 table"]


def _drain_mix(
    emulator: ServiceNowEmulator, bootstrap: str, tmp_path: Path, *, registry: str | None, huge: bool
) -> tuple[Any, list[tuple[int, int]], dict[int, str], str, str, str]:
    rng = random.Random(41)
    keys, good = 40, 400
    topic, dlq, group = (f"h9-{n}-{uuid.uuid4().hex[:8]}" for n in ("poison", "pdlq", "pgrp"))
    emulator.state.bulk_insert("incident", [{"sys_id": sid(k), "seq": "-1"} for k in range(keys)])
    emulator.state.update_settings(denied_tables={"u_denied"})
    emulator.state.faults.add(Fault(kind="status", status=400, table="u_bad", times=None))
    create_topic(bootstrap, topic, 2)
    create_topic(bootstrap, dlq, 1)
    records: list[tuple[bytes | None, bytes | None, Any]] = []
    kinds: dict[int, str] = {}
    last: dict[int, int] = {}
    for n in range(good):
        k = rng.randrange(keys)
        last[k] = n
        if rng.random() < 0.15:
            kind = rng.choice(POISON_KINDS)
            value, headers = _poison(kind, rng, k)
            kinds[len(records)] = kind
            records.append((sid(k).encode(), value, headers or None))
        records.append((sid(k).encode(), orjson.dumps({"sys_id": sid(k), "seq": str(n)}), None))
    if huge:
        kinds[len(records)] = "huge"
        records.append((sid(0).encode(), orjson.dumps({"sys_id": sid(0), "description": "x" * HUGE}), None))
    where = produce_big(bootstrap, topic, records)
    data = sink_config(emulator.url, bootstrap, [{"topic": topic, "table": "incident", "route_header": "sn.table",
                                                  "allowed_tables": ["u_bad", "u_denied"]}],
                       group_id=group, dlq_topic=dlq, kafka_client=BIG_MESSAGES if huge else None)
    if registry:
        data["kafka"]["schema_registry"] = {"url": registry}
    config = write_config(tmp_path / "c.yaml", data)
    result = run_sncli(config, "sink", "drain", json_output=True, timeout=180)
    for k in range(keys):  # order per key: poison in between does not reorder or stop a key's updates
        record = emulator.state.get("incident", sid(k))
        assert record is not None and record["seq"] == str(last.get(k, -1)), (k, record)
    return result, where, kinds, topic, dlq, group


def produce_big(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None, Any]]) -> list[Any]:
    if any(value is not None and len(value) > 1_000_000 for _, value, _ in records):
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                             "message.max.bytes": 8 * 1024 * 1024})
        where: list[Any] = [None] * len(records)

        def delivered(index: int) -> Any:
            def callback(err: Any, msg: Any) -> None:
                where[index] = None if err is not None else (msg.partition(), msg.offset())
            return callback

        for i, (key, value, headers) in enumerate(records):
            producer.produce(topic, key=key, value=value, headers=headers, on_delivery=delivered(i))
            producer.poll(0)
        assert producer.flush(60) == 0
        assert None not in where
        return where
    return produce(bootstrap, topic, records)


def _check_nothing_lost(
    emulator: ServiceNowEmulator, bootstrap: str, result: Any, where: list[Any], kinds: dict[int, str],
    topic: str, dlq: str, group: str,
) -> list[Any]:
    assert result.code == 3, (result.code, result.stderr[-3000:])
    assert "Traceback" not in result.output
    total = len(where)
    dead = read_all(bootstrap, dlq, timeout=60, expected=len(kinds))
    dead_at = {(int(r.header("sncli.error.partition") or b"-1"), int(r.header("sncli.error.offset") or b"-1")): r
               for r in dead}
    index_at = {pos: i for i, pos in enumerate(where)}
    assert {index_at[pos] for pos in dead_at} == set(kinds), "exactly the poison messages are dead-lettered"
    written = {int(orjson.loads(e.body or b"{}").get("seq", "-1")) for e in emulator.state.journal()
               if e.method == "PATCH" and e.table == "incident" and 200 <= e.status < 300}
    good = total - len(kinds)
    assert len({s for s in written if s >= 0}) == good  # every good update written: 0 lost
    ends = {p: max(o for q, o in where if q == p) + 1 for p in (0, 1)}
    assert committed_offsets(bootstrap, group, topic, 2) == ends
    return dead


def test_poison_messages_are_dead_lettered_and_the_rest_is_written(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, registry_url: str, tmp_path: Path
) -> None:
    result, where, kinds, topic, dlq, group = _drain_mix(emulator, kafka_bootstrap, tmp_path, registry=registry_url,
                                                         huge=False)
    dead = _check_nothing_lost(emulator, kafka_bootstrap, result, where, kinds, topic, dlq, group)
    classes = {r.header("sncli.error.class") for r in dead}
    assert classes == {b"decode", b"record", b"permission"}, classes
    summary = result.json()
    assert summary["dlq_total"] == len(kinds) and summary["exit_code"] == 3


# --------------------------------------------------------------------------- a 5 MB value


def _huge_case(emulator: ServiceNowEmulator, bootstrap: str, tmp_path: Path, kafka_client: dict[str, Any] | None
               ) -> tuple[Path, str, str, str, bytes, list[Any]]:
    """One partition: 5 good updates, a 5 MB value for a table answering 413, 5 more good updates."""
    topic, dlq, group = (f"h9-{n}-{uuid.uuid4().hex[:8]}" for n in ("huge", "hdlq", "hgrp"))
    emulator.state.insert("incident", {"sys_id": sid(1), "seq": "-1"})
    emulator.state.faults.add(Fault(kind="status", status=413, table="u_big", times=None))
    create_topic(bootstrap, topic, 1)
    create_topic(bootstrap, dlq, 1)
    huge = orjson.dumps({"description": "x" * HUGE})
    records: list[tuple[bytes | None, bytes | None, Any]] = [
        (b"k", orjson.dumps({"sys_id": sid(1), "seq": str(n)}), None) for n in range(5)]
    records.append((b"big", huge, [("sn.table", b"u_big")]))
    records += [(b"k", orjson.dumps({"sys_id": sid(1), "seq": str(n)}), None) for n in range(5, 10)]
    where = produce_big(bootstrap, topic, records)
    config = write_config(tmp_path / "c.yaml", sink_config(
        emulator.url, bootstrap, [{"topic": topic, "table": "incident", "route_header": "sn.table",
                                   "allowed_tables": ["u_big"]}],
        group_id=group, dlq_topic=dlq, workers=1, kafka_client=kafka_client))
    return config, topic, dlq, group, huge, where


def test_a_5mb_value_refused_by_servicenow_is_dead_lettered_whole(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    config, topic, dlq, group, huge, _where = _huge_case(emulator, kafka_bootstrap, tmp_path, BIG_MESSAGES)
    result = run_sncli(config, "sink", "drain", json_output=True, timeout=120)
    assert result.code == 3, result.stderr[-3000:]
    dead = read_all(kafka_bootstrap, dlq, timeout=60, expected=1)
    assert len(dead) == 1 and dead[0].value == huge and dead[0].key == b"big"
    assert dead[0].header("sncli.error.status") == b"413"
    assert committed_offsets(kafka_bootstrap, group, topic, 1) == {0: 11}
    assert emulator.state.get("incident", sid(1))["seq"] == "9"  # type: ignore[index]


def test_a_5mb_value_the_dlq_cannot_take_stops_the_run_below_it_and_a_fixed_rerun_finishes(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """With the client's default 1 MB message limit the DLQ write fails: exit 1, the commit stays at the record."""
    config, topic, dlq, group, huge, where = _huge_case(emulator, kafka_bootstrap, tmp_path, None)
    result = run_sncli(config, "sink", "drain", json_output=True, timeout=120)
    assert result.code == 1, result.stderr[-3000:]
    assert "Traceback" not in result.output
    error = result.json()["error"]
    assert "could not dead-letter" in error and f"@{where[5][1]}" in error, error
    committed = committed_offsets(kafka_bootstrap, group, topic, 1)[0]
    assert committed <= where[5][1]  # nothing committed past the record that could not be dead-lettered
    written = {orjson.loads(e.body or b"{}").get("seq") for e in emulator.state.journal()
               if e.method == "PATCH" and 200 <= e.status < 300}
    assert {str(n) for n in range(committed)} <= written  # and everything below the commit was written
    assert read_all(kafka_bootstrap, dlq, timeout=30) == []

    data = yaml.safe_load(config.read_text())
    data["kafka"]["client"].update(BIG_MESSAGES)
    write_config(config, data)
    rerun = run_sncli(config, "sink", "drain", json_output=True, timeout=120)
    assert rerun.code == 3, rerun.stderr[-3000:]
    assert committed_offsets(kafka_bootstrap, group, topic, 1) == {0: 11}
    dead = read_all(kafka_bootstrap, dlq, timeout=60, expected=1)
    assert len(dead) == 1 and dead[0].value == huge
    assert emulator.state.get("incident", sid(1))["seq"] == "9"  # type: ignore[index]


# --------------------------------------------------------------------------- small poison (issue 15, section 2)


def test_a_small_value_nested_a_thousand_deep_is_dead_lettered_and_the_records_behind_it_written(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """6 KB of brackets on a ``nested: flatten`` topic once stopped every drain at the same offset (exit 1)."""
    topic, dlq, group = (f"deep-{n}-{uuid.uuid4().hex[:8]}" for n in ("t", "dlq", "grp"))
    emulator.state.insert("incident", {"sys_id": sid(1), "seq": "-1"})
    create_topic(kafka_bootstrap, topic, 1)
    create_topic(kafka_bootstrap, dlq, 1)
    deep = b'{"a":' * 1000 + b'{"leaf":"x"}' + b"}" * 1000
    produce(kafka_bootstrap, topic, [
        (b"k", orjson.dumps({"sys_id": sid(1), "seq": "0"}), None),
        (b"deep", deep, None),
        (b"k", orjson.dumps({"sys_id": sid(1), "seq": "2"}), None),
    ])
    config = write_config(tmp_path / "c.yaml", sink_config(
        emulator.url, kafka_bootstrap, [{"topic": topic, "table": "incident", "nested": "flatten"}],
        group_id=group, dlq_topic=dlq, workers=1))
    result = run_sncli(config, "sink", "drain", json_output=True, timeout=120)
    assert result.code == 3, result.stderr[-3000:]
    assert "Traceback" not in result.output
    assert result.json()["dlq"] == {"record": 1}
    dead = read_all(kafka_bootstrap, dlq, timeout=30, expected=1)
    assert [(r.key, r.value, r.header("sncli.error.offset")) for r in dead] == [(b"deep", deep, b"1")]
    assert b"deep" in (dead[0].header("sncli.error.message") or b"")
    assert emulator.state.get("incident", sid(1))["seq"] == "2"  # type: ignore[index]
    assert committed_offsets(kafka_bootstrap, group, topic, 1) == {0: 3}


def test_any_exception_resolving_one_record_dead_letters_it_as_decode(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only RecordError: whatever one record's bytes make the resolver raise is that record's problem."""
    from sncli.config import parse_settings
    from sncli.sink import drain

    topic, dlq, group = (f"boom-{n}-{uuid.uuid4().hex[:8]}" for n in ("t", "dlq", "grp"))
    create_topic(kafka_bootstrap, topic, 1)
    create_topic(kafka_bootstrap, dlq, 1)
    produce(kafka_bootstrap, topic, [
        (b"a", orjson.dumps({"number": "A"}), None),
        (b"boom", orjson.dumps({"number": "BOOM"}), None),
        (b"c", orjson.dumps({"number": "C"}), None),
    ])
    real_resolve = drain.resolve

    def resolve(record: Any, cfg: Any, decode: Any) -> Any:
        if record.key == b"boom":
            raise RecursionError("maximum recursion depth exceeded")
        return real_resolve(record, cfg, decode)

    monkeypatch.setattr(drain, "resolve", resolve)
    settings = parse_settings(sink_config(emulator.url, kafka_bootstrap, [{"topic": topic, "table": "incident"}],
                                          group_id=group, dlq_topic=dlq, workers=1), {})
    summary = drain.run_drain(settings, drain.DrainOptions())
    assert summary.exit_code == 3 and summary.error is None, summary.error
    assert summary.dlq == {"decode": 1} and summary.written == {"post": 2}
    dead = read_all(kafka_bootstrap, dlq, timeout=30, expected=1)
    assert [(r.key, r.header("sncli.error.class")) for r in dead] == [(b"boom", b"decode")]
    assert b"RecursionError" in (dead[0].header("sncli.error.message") or b"")
    assert sorted(r["number"] for r in emulator.state.records("incident")) == ["A", "C"]
    assert committed_offsets(kafka_bootstrap, group, topic, 1) == {0: 3}
