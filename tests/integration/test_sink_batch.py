"""sink.write_mode: batch on the real broker and the emulator's Batch API, and the in-flight gate.

Each item of a batch must end exactly as its own call would have: 404 -> POST
with that sys_id, 4xx -> DLQ, 5xx -> that item retried alone; unserviced items
retried, never dropped; a lost batch answer is ambiguous for its POSTs under
the topic's ``ambiguous`` policy. Against a concurrency limit the gate keeps
429s rare and nothing is lost.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from sncli.dlq.select import Filters
from sncli.emulator.faults import Fault
from sncli.emulator.server import ServiceNowEmulator
from sncli.sink.drain import run_drain
from sncli.sink.job import DrainOptions
from sncli.sink.replay import run_replay
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
BATCH = "/api/now/v1/batch"


def batch_config(emulator: ServiceNowEmulator, bootstrap: str, topics: list[dict[str, Any]], *,
                 workers: int = 4, batch_size: int = 50, max_attempts: int = 3, **sink: Any) -> dict[str, Any]:
    data = config_dict(emulator.url, bootstrap, topics, workers=workers, max_attempts=max_attempts)
    data["sink"].update(write_mode="batch", batch_size=batch_size, batch_max_wait_ms=30, **sink)
    return data


def exchanges(emulator: ServiceNowEmulator) -> list[Any]:
    return [e for e in emulator.state.journal() if e.path == BATCH]


def test_batch_items_end_as_their_own_calls_would(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str
) -> None:
    existing, absent, doomed, flaky = sid(1), sid(2), sid(3), sid(4)
    for n in (existing, doomed, flaky):
        emulator.state.insert("incident", {"sys_id": n, "short_description": "old"})
    emulator.state.update_settings(denied_tables={"u_denied"})
    emulator.state.faults.add(Fault(kind="status", status=500, path_prefix=f"/api/now/table/incident/{flaky}"))
    create_topic(kafka_bootstrap, unique_topic, 1)
    produce(kafka_bootstrap, unique_topic, [
        (b"k1", json_value({"short_description": "denied"}), [("sn.table", b"u_denied")]),  # 403 -> DLQ
        (absent.encode(), json_value({"sys_id": absent, "short_description": "made"}), None),  # 404 -> POST
        (doomed.encode(), None, [("sn.sys_id", doomed.encode())]),  # DELETE
        (existing.encode(), json_value({"sys_id": existing, "short_description": "new"}), None),  # PATCH
        (flaky.encode(), json_value({"sys_id": flaky, "short_description": "after 500"}), None),  # 500, retried
        (b"k6", json_value({"short_description": "fresh"}), None),  # POST
    ], partition=0)
    cfg = {"topic": unique_topic, "table": "incident", "delete_on_tombstone": True, "not_found": "create",
           "route_header": "sn.table", "allowed_tables": ["u_denied"]}
    settings = settings_of(batch_config(emulator, kafka_bootstrap, [cfg]))
    emulator.state.clear_journal()

    summary = run_drain(settings, DrainOptions())

    assert summary.exit_code == 3, summary.error
    assert summary.dlq == {"permission": 1}
    assert summary.written == {"post": 2, "patch": 2, "delete": 1}
    items = [(e.method, e.path.removeprefix("/api/now/table/"), e.status) for e in writes(emulator.state.journal())]
    assert sorted(items) == sorted([
        ("POST", "u_denied", 403), ("PATCH", f"incident/{absent}", 404), ("POST", "incident", 201),
        ("DELETE", f"incident/{doomed}", 204), ("PATCH", f"incident/{existing}", 200),
        ("PATCH", f"incident/{flaky}", 500), ("PATCH", f"incident/{flaky}", 200), ("POST", "incident", 201),
    ])
    assert items.index(("PATCH", f"incident/{absent}", 404)) < items.index(("POST", "incident", 201))
    # Carried in Batch API exchanges, not one call per write; the retries went in later batches.
    sent = exchanges(emulator)
    assert 2 <= len(sent) < len(items) and all(e.status == 200 for e in sent)
    assert summary.servicenow is not None and summary.servicenow["batches"] == len(sent)
    assert emulator.state.get("incident", absent)["short_description"] == "made"  # type: ignore[index]
    assert emulator.state.get("incident", doomed) is None
    assert emulator.state.get("incident", flaky)["short_description"] == "after 500"  # type: ignore[index]
    assert committed_offsets(kafka_bootstrap, settings.sink.group_id, unique_topic, 1) == {0: 6}
    dlq = read_all(kafka_bootstrap, settings.sink.dlq_topic, expected=1)
    assert [r.key for r in dlq] == [b"k1"]


def test_unserviced_items_are_sent_again_never_dropped(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str
) -> None:
    # 10 ms per write and a 25 ms budget: a batch services 3 items, the rest come back unserviced.
    emulator.state.update_settings(write_time_ms=10, batch_budget_ms=25)
    create_topic(kafka_bootstrap, unique_topic, 1)
    produce(kafka_bootstrap, unique_topic,
            [(f"k{n}".encode(), json_value({"number": f"N{n}"}), None) for n in range(30)], partition=0)
    settings = settings_of(batch_config(emulator, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}],
                                        workers=2, batch_size=10))
    summary = run_drain(settings, DrainOptions())
    assert summary.exit_code == 0, summary.error
    assert summary.written == {"post": 30}
    assert summary.servicenow is not None and summary.servicenow["unserviced"] > 0
    numbers = sorted(r["number"] for r in emulator.state.records("incident"))
    assert numbers == sorted(f"N{n}" for n in range(30))  # each exactly once
    assert committed_offsets(kafka_bootstrap, settings.sink.group_id, unique_topic, 1) == {0: 30}


@pytest.mark.parametrize("policy", ["fail", "retry", "lookup"])
def test_a_lost_batch_answer_is_ambiguous_for_its_posts_only(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, policy: str
) -> None:
    # The batch runs, then the connection drops before its answer: its POSTs may have landed (they did).
    emulator.state.insert("incident", {"sys_id": sid(7), "state": "1"})
    emulator.state.faults.add(Fault(kind="timeout_after_write", path_prefix=BATCH, close=True, times=1))
    create_topic(kafka_bootstrap, unique_topic, 1)
    produce(kafka_bootstrap, unique_topic, [
        (b"a", json_value({"number": "INC-A", "state": "1"}), None),
        (b"b", json_value({"number": "INC-B", "state": "1"}), None),
        (sid(7).encode(), json_value({"sys_id": sid(7), "state": "2"}), None),
    ], partition=0)
    cfg = {"topic": unique_topic, "table": "incident", "ambiguous": policy, "correlation_field": "number"}
    settings = settings_of(batch_config(emulator, kafka_bootstrap, [cfg], batch_size=10))
    summary = run_drain(settings, DrainOptions())

    numbers = sorted(r.get("number", "") for r in emulator.state.records("incident") if r.get("number"))
    assert emulator.state.get("incident", sid(7))["state"] == "2"  # type: ignore[index]  # a PATCH is retried
    if policy == "fail":
        assert summary.dlq == {"ambiguous": 2} and summary.written == {"patch": 1}
        assert numbers == ["INC-A", "INC-B"]  # landed once; the DLQ says they may have
    elif policy == "retry":
        assert summary.dlq == {} and summary.written == {"post": 2, "patch": 1}
        assert numbers == ["INC-A", "INC-A", "INC-B", "INC-B"]  # what "retry" accepts: duplicates
    else:
        assert summary.dlq == {} and summary.written == {"post": 2, "patch": 1}, summary.error
        assert numbers == ["INC-A", "INC-B"]  # found by the lookup, not posted twice
    assert committed_offsets(kafka_bootstrap, settings.sink.group_id, unique_topic, 1) == {0: 3}


def test_a_429_storm_slows_the_drain_and_loses_nothing(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str
) -> None:
    # One transaction at a time against 16 workers: most first tries are refused.
    emulator.state.update_settings(max_concurrent=1, concurrency_retry_after=0.05, round_trip_ms=5)
    create_topic(kafka_bootstrap, unique_topic, 2)
    produce(kafka_bootstrap, unique_topic,
            [(f"key{n % 10}".encode(), json_value({"sys_id": sid(100 + n % 10), "seq": str(n)}), None)
             for n in range(120)])
    cfg = {"topic": unique_topic, "table": "incident", "not_found": "create"}
    data = config_dict(emulator.url, kafka_bootstrap, [cfg], workers=16, max_attempts=50)
    settings = settings_of(data)
    summary = run_drain(settings, DrainOptions())
    assert summary.exit_code == 0, summary.error
    assert sum(summary.written.values()) == 120
    refused = [e for e in emulator.state.journal() if e.status == 429]
    assert refused, "the storm did not happen"
    assert summary.servicenow is not None and summary.servicenow["concurrency_limit"] < 16
    assert_per_key_order(emulator, 10)


def assert_per_key_order(emulator: ServiceNowEmulator, keys: int) -> None:
    """Each key's accepted writes reach the emulator in the order they were produced."""
    import orjson

    seen: dict[str, list[int]] = defaultdict(list)
    for entry in writes(emulator.state.journal()):
        if entry.status in (200, 201) and entry.body:
            body = orjson.loads(entry.body)
            seen[entry.sys_id or body.get("sys_id", "")].append(int(body["seq"]))
    assert len(seen) == keys
    for key, seqs in seen.items():
        assert seqs == sorted(seqs), (key, seqs)


def test_workers_64_against_8_transactions_lose_nothing_and_rarely_hear_429(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str
) -> None:
    emulator.state.update_settings(max_concurrent=8, round_trip_ms=10, write_time_ms=1,
                                   concurrency_retry_after=0.1)
    create_topic(kafka_bootstrap, unique_topic, 2)
    produce(kafka_bootstrap, unique_topic,
            [(f"key{n % 100}".encode(), json_value({"sys_id": sid(1000 + n % 100), "seq": str(n)}), None)
             for n in range(1200)])
    cfg = {"topic": unique_topic, "table": "incident", "not_found": "create"}
    settings = settings_of(config_dict(emulator.url, kafka_bootstrap, [cfg], workers=64, max_attempts=20))
    summary = run_drain(settings, DrainOptions())
    assert summary.exit_code == 0, summary.error
    assert sum(summary.written.values()) == 1200
    calls = [e for e in emulator.state.journal() if e.path.startswith("/api/now/")]
    refused = [e for e in calls if e.status == 429]
    assert len(refused) < 0.01 * len(calls), (len(refused), len(calls))
    assert emulator.slots.peak <= 8
    assert_per_key_order(emulator, 100)


def test_dlq_replay_writes_through_batches_too(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str
) -> None:
    emulator.state.update_settings(denied_tables={"incident"})
    create_topic(kafka_bootstrap, unique_topic, 1)
    produce(kafka_bootstrap, unique_topic,
            [(f"k{n}".encode(), json_value({"number": f"R{n}"}), None) for n in range(5)], partition=0)
    settings = settings_of(batch_config(emulator, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}]))
    first = run_drain(settings, DrainOptions())
    assert first.dlq == {"permission": 5}
    emulator.state.update_settings(denied_tables=set())
    emulator.state.clear_journal()
    replayed = run_replay(settings, Filters())
    assert replayed.exit_code == 0, replayed.error
    assert replayed.written == {"post": 5}
    assert sorted(r["number"] for r in emulator.state.records("incident")) == [f"R{n}" for n in range(5)]
    assert 1 <= len(exchanges(emulator)) < 5  # the five POSTs travelled in Batch API exchanges
