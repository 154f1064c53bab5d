"""Writes the drain gives up: at its deadline, and for partitions it loses (real Kafka, the emulator).

A write given up is never committed, so the next run (or the partition's new owner)
reads it again: every record still reaches ServiceNow at least once, in order per key.
What must not happen is the run outliving its bound by the whole queue, or a write of
the old owner landing after the new owner wrote the same key.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from sncli.emulator.faults import Fault
from sncli.emulator.server import ServiceNowEmulator
from sncli.sink import assignment as assignment_module
from sncli.sink.drain import run_drain
from sncli.sink.job import DrainOptions, DrainSummary
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


def seqs_by_key(entries: Sequence[Any]) -> dict[str, list[int]]:
    """Each key's successful PATCHes, as the ``seq`` values they carried, in the order served."""
    out: dict[str, list[int]] = defaultdict(list)
    for entry in entries:
        if entry.method == "PATCH" and entry.status == 200:
            out[entry.sys_id].append(int(orjson.loads(entry.body)["seq"]))
    return out


def test_max_seconds_bounds_the_run_drops_queued_writes_uncommitted_and_the_next_run_writes_them(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str
) -> None:
    keys, versions = 10, 12
    ids = [sid(100 + k) for k in range(keys)]
    emulator.state.bulk_insert("incident", [{"sys_id": i, "seq": "-1"} for i in ids])
    create_topic(kafka_bootstrap, unique_topic, 1)
    # seq = the record's offset (one partition, produced in order); each key's versions are spread out.
    records = [(ids[n % keys].encode(), json_value({"sys_id": ids[n % keys], "seq": str(n)}), None)
               for n in range(keys * versions)]
    produce(kafka_bootstrap, unique_topic, records)
    data = config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}], workers=2)
    settings = settings_of(data)
    # 120 writes at 300 ms on 2 workers: ~18 s of work, far more than the bound. The group
    # join takes ~3 s of the 6, so a few seconds of writes happen before the deadline.
    emulator.state.update_settings(write_latency_ms=300)
    max_seconds = 6.0
    emulator.state.clear_journal()

    started = time.monotonic()
    first = run_drain(settings, DrainOptions(max_seconds=max_seconds))
    elapsed = time.monotonic() - started

    # After the deadline only the attempts already sent may finish (each bounded by the request
    # timeout, 5 s here); the queued writes are not waited for.
    assert elapsed < max_seconds + settings.servicenow.timeout_seconds + 2.0, elapsed
    assert first.stopped_by == "max_seconds" and first.exit_code == 0, first.error
    run1 = writes(emulator.state.journal(), "incident")
    written1 = {s for seq in seqs_by_key(run1).values() for s in seq}
    assert 0 < len(written1) < keys * versions
    committed = committed_offsets(kafka_bootstrap, settings.sink.group_id, unique_topic, 1)[0]
    assert committed == first.committed.get(unique_topic, {}).get("0", -1001)
    assert set(range(max(committed, 0))) <= written1  # nothing committed past a record not written
    assert committed < keys * versions

    emulator.state.update_settings(write_latency_ms=0)
    second = run_drain(settings, DrainOptions())
    assert second.exit_code == 0 and second.stopped_by == "end", second.error
    run2 = writes(emulator.state.journal(), "incident")[len(run1):]
    # Every record reached ServiceNow at least once, each run applied each key in Kafka order,
    # and every key ends at its last version.
    assert written1 | {s for seq in seqs_by_key(run2).values() for s in seq} == set(range(keys * versions))
    for run in (run1, run2):
        assert all(seq == sorted(seq) for seq in seqs_by_key(run).values())
    for k, i in enumerate(ids):
        assert emulator.state.get("incident", i)["seq"] == str(k + keys * (versions - 1))
    assert committed_offsets(kafka_bootstrap, settings.sink.group_id, unique_topic, 1) == {0: keys * versions}


def test_a_revoked_partitions_retrying_write_is_abandoned_before_the_new_owner_writes_the_key(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # How long a revoke may wait for its partitions' writes: 30 s in the product, short here so
    # that the old behaviour (wait, then return with the write still retrying) shows quickly.
    monkeypatch.setattr(assignment_module, "REVOKE_WAIT_SECONDS", 1.0)
    keys = [sid(7), sid(8)]  # one key per partition: whichever partition the second member takes
    emulator.state.bulk_insert("incident", [{"sys_id": k, "seq": "-1"} for k in keys])
    create_topic(kafka_bootstrap, unique_topic, 2)
    ends: dict[int, int] = {}
    for partition, key in enumerate(keys):
        ends.update(produce(kafka_bootstrap, unique_topic, [
            (key.encode(), json_value({"sys_id": key, "seq": str(v)}), None) for v in range(3)
        ], partition=partition))
    for key in keys:  # ServiceNow refuses these keys' writes until the test says otherwise
        emulator.state.faults.add(Fault(kind="status", status=503, method="PATCH",
                                        path_prefix=f"/api/now/table/incident/{key}", times=None))
    base = config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}], workers=2)
    base["servicenow"]["retry"] = {"max_attempts": 1000, "initial_backoff_ms": 100, "max_backoff_ms": 300,
                                   "max_elapsed_seconds": 60}
    # The two members authenticate differently, so the journal tells their requests apart.
    other = {**base, "servicenow": {**base["servicenow"], "auth": {
        "type": "oauth", "grant_type": "password", "client_id": "sncli", "client_secret": "sncli-secret",
        "username": "admin", "password": "admin"}}}
    first_settings, second_settings = settings_of(base), settings_of(other)
    results: dict[str, DrainSummary] = {}
    emulator.state.clear_journal()

    def key_writes() -> list[Any]:
        return [e for e in writes(emulator.state.journal(), "incident") if e.sys_id in keys]

    def wait_for(condition: Any, what: str, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    first = threading.Thread(target=lambda: results.update(first=run_drain(first_settings, DrainOptions())))
    first.start()
    wait_for(lambda: {e.sys_id for e in key_writes() if e.auth == "basic"} == set(keys),
             "the first member retrying both keys")
    second = threading.Thread(target=lambda: results.update(second=run_drain(second_settings, DrainOptions())))
    second.start()
    wait_for(lambda: any(e.auth == "bearer" for e in key_writes()), "the second member writing a key")
    time.sleep(1.0)  # several retry rounds of anything still retrying
    emulator.state.faults.clear()
    first.join(60)
    second.join(60)
    assert not first.is_alive() and not second.is_alive()
    assert results["first"].exit_code == 0, results["first"].error
    assert results["second"].exit_code == 0, results["second"].error

    journal = key_writes()
    moved = {e.sys_id for e in journal if e.auth == "bearer"}
    assert moved
    for key in moved:
        mine = [(n, e.auth) for n, e in enumerate(journal) if e.sys_id == key]
        handed_over = next(n for n, auth in mine if auth == "bearer")
        late = [n for n, auth in mine if auth == "basic" and n > handed_over]
        # The old owner gave the key's write up before the revoke returned: not one attempt after.
        assert late == [], f"{key}: old owner's attempts after the new owner's first: {late}"
    for key in keys:
        assert emulator.state.get("incident", key)["seq"] == "2"  # the last version, not an older one
    landed = seqs_by_key(journal)
    assert all(set(landed[key]) == {0, 1, 2} for key in keys)
    assert committed_offsets(kafka_bootstrap, first_settings.sink.group_id, unique_topic, 2) == ends
