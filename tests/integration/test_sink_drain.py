"""sink drain on real Kafka (Tansu) and the emulator: order per key, bodies, commits, bounds."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from typing import Any

import orjson
import pytest

from sncli.emulator.server import ServiceNowEmulator
from sncli.metrics import RunMetrics
from sncli.sink.drain import run_drain
from sncli.sink.job import DrainOptions
from sncli.sink.resolve import RESERVED_FIELDS
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


def test_5000_updates_over_200_keys_keep_per_key_order_and_commit_the_ends(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str
) -> None:
    keys, versions, partitions = 200, 25, 4
    ids = [sid(1000 + k) for k in range(keys)]
    emulator.state.bulk_insert("incident", [{"sys_id": i, "short_description": "v0"} for i in ids])
    emulator.state.update_settings(write_latency_ms=10)
    create_topic(kafka_bootstrap, unique_topic, partitions)
    # Each key is updated 25 times in sequence; versions are interleaved across keys, so a
    # key's updates sit far apart in the topic and run on one lane among other keys' writes.
    records = [
        (i.encode(), json_value({
            "sys_id": i, "short_description": f"v{v}", "state": str(v % 7),
            "sys_updated_on": "2024-01-01 00:00:00", "sys_mod_count": str(v), "sys_updated_by": "kafka",
        }), [("sn.sys_id", i.encode())])
        for v in range(1, versions + 1) for i in ids
    ]
    ends = produce(kafka_bootstrap, unique_topic, records)
    assert sum(ends.values()) == keys * versions
    data = config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}], workers=8)
    settings = settings_of(data)
    emulator.state.clear_journal()

    started = time.monotonic()
    summary = run_drain(settings, DrainOptions())
    elapsed = time.monotonic() - started

    assert summary.exit_code == 0, summary.error
    assert summary.messages == keys * versions
    assert summary.written == {"patch": keys * versions}
    assert summary.dlq == {} and summary.skipped == 0
    # Every key ends in its last value ...
    for i in ids:
        assert emulator.state.get("incident", i)["short_description"] == f"v{versions}"
    # ... because each key's PATCHes reached ServiceNow strictly in Kafka order,
    patches = writes(emulator.state.journal(), "incident")
    assert len(patches) == keys * versions and all(e.method == "PATCH" and e.status == 200 for e in patches)
    seen: dict[str, list[int]] = defaultdict(list)
    for entry in patches:
        body = orjson.loads(entry.body)
        seen[entry.sys_id].append(int(body["short_description"][1:]))
        # and a PATCH carries the record's fields without any sys_* field.
        assert set(body) == {"short_description", "state"}
        assert not set(body) & RESERVED_FIELDS
    assert all(seen[i] == list(range(1, versions + 1)) for i in ids)
    # The commits are the end offsets, read back from the broker.
    assert committed_offsets(kafka_bootstrap, settings.sink.group_id, unique_topic, partitions) == ends
    assert summary.committed == {unique_topic: {str(p): o for p, o in ends.items()}}
    # 8 lanes at 10 ms per write: ~6.3 s of writes; generous bound for 2 shared cores.
    assert elapsed < 60


def test_a_second_drain_finds_nothing_and_an_empty_topic_ends_at_once(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str
) -> None:
    create_topic(kafka_bootstrap, unique_topic, 2)
    data = config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}])
    settings = settings_of(data)
    first = run_drain(settings, DrainOptions())
    assert first.exit_code == 0 and first.messages == 0 and first.stopped_by == "end"
    produce(kafka_bootstrap, unique_topic, [(None, json_value({"short_description": f"n{n}"}), None)
                                            for n in range(10)])
    second = run_drain(settings, DrainOptions())
    assert second.exit_code == 0 and second.written == {"post": 10}
    third = run_drain(settings, DrainOptions())
    assert third.exit_code == 0 and third.messages == 0
    assert len(emulator.state.records("incident")) == 10


def test_missing_topic_is_nothing_to_drain(emulator: ServiceNowEmulator, kafka_bootstrap: str) -> None:
    data = config_dict(emulator.url, kafka_bootstrap, [{"topic": f"absent-{uuid.uuid4().hex[:8]}",
                                                         "table": "incident"}])
    summary = run_drain(settings_of(data), DrainOptions())
    assert summary.exit_code == 0 and summary.messages == 0


def test_max_messages_bounds_the_run_and_commits_only_what_was_done(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str
) -> None:
    create_topic(kafka_bootstrap, unique_topic, 1)
    produce(kafka_bootstrap, unique_topic, [(None, json_value({"n": str(n)}), None) for n in range(30)])
    data = config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}], workers=2)
    settings = settings_of(data)
    summary = run_drain(settings, DrainOptions(max_messages=12))
    assert summary.stopped_by == "max_messages" and summary.exit_code == 0
    assert summary.messages >= 12
    done = summary.messages
    assert committed_offsets(kafka_bootstrap, settings.sink.group_id, unique_topic, 1) == {0: done}
    rest = run_drain(settings, DrainOptions())
    assert rest.messages == 30 - done
    assert sorted(int(r["n"]) for r in emulator.state.records("incident")) == list(range(30))


def test_stop_request_finishes_in_flight_writes_and_commits_below_the_rest(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str
) -> None:
    create_topic(kafka_bootstrap, unique_topic, 1)
    produce(kafka_bootstrap, unique_topic, [(None, json_value({"n": str(n)}), None) for n in range(400)])
    emulator.state.update_settings(write_latency_ms=20)
    data = config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}], workers=2)
    settings = settings_of(data)
    stop = threading.Event()
    timer = threading.Timer(4.0, stop.set)  # after the ~3 s group join, mid-way through the writes
    timer.start()
    try:
        summary = run_drain(settings, DrainOptions(), stop=stop)
    finally:
        timer.cancel()
    assert summary.stopped_by == "signal" and summary.exit_code == 0
    written = len(emulator.state.records("incident"))
    assert 0 < written < 400
    committed = committed_offsets(kafka_bootstrap, settings.sink.group_id, unique_topic, 1)[0]
    # Nothing committed past a record that was not written (records are POSTs with n = offset).
    done = {int(r["n"]) for r in emulator.state.records("incident")}
    assert set(range(committed)) <= done
    emulator.state.update_settings(write_latency_ms=0)
    rest = run_drain(settings, DrainOptions())
    assert rest.exit_code == 0
    assert {int(r["n"]) for r in emulator.state.records("incident")} == set(range(400))


def test_dry_run_writes_and_commits_nothing(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str
) -> None:
    create_topic(kafka_bootstrap, unique_topic, 1)
    produce(kafka_bootstrap, unique_topic, [
        (None, json_value({"sys_id": sid(1), "state": "2", "sys_mod_count": "3"}), None),
        (None, json_value({"short_description": "new"}), None),
        (None, b"garbage", None),
        (sid(2).encode(), None, [("sn.sys_id", sid(2).encode())]),
    ])
    data = config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}])
    settings = settings_of(data)
    emulator.state.clear_journal()
    summary = run_drain(settings, DrainOptions(dry_run=True))
    assert summary.exit_code == 0 and summary.dry_run
    plan: list[dict[str, Any]] = summary.plan or []
    assert [(p["operation"], p.get("table"), p.get("sys_id")) for p in plan] == [
        ("PATCH", "incident", sid(1)), ("POST", "incident", None), ("DLQ", None, None), ("SKIP", "incident", sid(2)),
    ]
    assert plan[0]["fields"] == ["state"]
    assert plan[2]["error_class"] == "decode"
    assert writes(emulator.state.journal()) == []
    assert committed_offsets(kafka_bootstrap, settings.sink.group_id, unique_topic, 1) == {0: -1001}


def test_metrics_are_pushed_with_the_sink_labels(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, pushgateway_url: str
) -> None:
    import urllib.request

    create_topic(kafka_bootstrap, unique_topic, 1)
    produce(kafka_bootstrap, unique_topic, [(None, json_value({"n": "1"}), None), (None, b"nope", None)])
    table = f"u_{uuid.uuid4().hex[:8]}"
    emulator.state.define_table(table, {"n": "string"})  # a table the instance has (else 400 Invalid table)
    data = config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": table}],
                       pushgateway=pushgateway_url)
    metrics = RunMetrics()
    summary = run_drain(settings_of(data), DrainOptions(), metrics=metrics)
    assert summary.exit_code == 3
    with urllib.request.urlopen(f"{pushgateway_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    mine = [line for line in text.splitlines() if f'table="{table}"' in line]
    assert any(line.startswith("bridge_sink_records_total") and 'op="post"' in line and 'outcome="written"' in line
               and line.endswith(" 1") for line in mine), mine
    assert any(line.startswith("bridge_dlq_records_total") and 'class="decode"' in line for line in mine), mine
    assert any(line.startswith("bridge_sn_api_latency_seconds_count") and 'method="POST"' in line for line in mine)
    assert any(line.startswith("sncli_run_duration_seconds") and 'command="sink_drain"' in line for line in mine)


def test_a_rebalance_mid_run_commits_the_revoked_work_and_loses_nothing(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str
) -> None:
    # ~8 s of writes for one member (800 x 20 ms / 2 workers): the second member's join
    # (~3 s on Tansu) and the rebalance that follows happen while the first is mid-way.
    keys, versions, partitions = 40, 20, 4
    ids = [sid(k) for k in range(keys)]
    emulator.state.bulk_insert("incident", [{"sys_id": i, "seq": "-1"} for i in ids])
    emulator.state.update_settings(write_latency_ms=20)
    create_topic(kafka_bootstrap, unique_topic, partitions)
    seq = 0
    records = []
    for _v in range(versions):
        for i in ids:
            records.append((i.encode(), json_value({"sys_id": i, "seq": str(seq)}), None))
            seq += 1
    ends = produce(kafka_bootstrap, unique_topic, records)
    data = config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}], workers=2)
    data["sink"]["max_pending"] = 8  # reading cannot run far ahead: the second member gets real work
    settings = settings_of(data)
    results: dict[str, Any] = {}

    def drain(name: str) -> None:
        results[name] = run_drain(settings, DrainOptions())

    first = threading.Thread(target=drain, args=("first",))
    first.start()
    deadline = time.monotonic() + 30
    while len(writes(emulator.state.journal())) < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    second = threading.Thread(target=drain, args=("second",))
    second.start()
    first.join(120)
    second.join(120)
    assert results["first"].exit_code == 0 and results["second"].exit_code == 0
    assert results["second"].messages > 0  # the second member did take partitions over

    journal = writes(emulator.state.journal(), "incident")
    done = [(e.sys_id, int(orjson.loads(e.body)["seq"])) for e in journal]
    assert sorted(s for _i, s in done) == list(range(keys * versions))  # every record once: no gap, no repeat
    per_key: dict[str, list[int]] = defaultdict(list)
    for sys_id, number in done:
        per_key[sys_id].append(number)
    assert all(v == sorted(v) for v in per_key.values())  # order per key held across the hand-over
    assert committed_offsets(kafka_bootstrap, settings.sink.group_id, unique_topic, partitions) == ends


def test_sink_counters_are_carried_across_drains_even_for_series_a_drain_did_not_touch(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, pushgateway_url: str
) -> None:
    """A POST-only drain, then a PATCH-only drain of the same group: both series stay, each with its total."""
    import re
    import urllib.request

    create_topic(kafka_bootstrap, unique_topic, 1)
    table = f"u_{uuid.uuid4().hex[:8]}"
    emulator.state.define_table(table, {"n": "string"})  # a table the instance has (else 400 Invalid table)
    data = config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": table}],
                       pushgateway=pushgateway_url)
    data["metrics"]["job"] = f"sncli-test-{uuid.uuid4().hex[:8]}"
    settings = settings_of(data)

    def written() -> dict[str, float]:
        with urllib.request.urlopen(f"{pushgateway_url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        found = {}
        for line in text.splitlines():
            if line.startswith("bridge_sink_records_total{") and f'job="{data["metrics"]["job"]}"' in line:
                op = re.search(r'op="(\w+)"', line)
                assert op is not None and 'outcome="written"' in line, line
                found[op.group(1)] = float(line.rsplit(" ", 1)[1])
        return found

    produce(kafka_bootstrap, unique_topic, [(None, json_value({"n": str(i)}), None) for i in range(3)])
    assert run_drain(settings, DrainOptions()).exit_code == 0
    assert written() == {"post": 3}
    sys_id = emulator.state.records(table)[0]["sys_id"]
    produce(kafka_bootstrap, unique_topic, [(None, json_value({"sys_id": sys_id, "n": "9"}), None)] * 2)
    assert run_drain(settings, DrainOptions()).exit_code == 0
    assert written() == {"post": 3, "patch": 2}
