"""SIGKILL at seeded random moments, re-run until done: nothing lost, bounded duplicates, order per key.

Pipelines here: ``sink drain`` and ``backfill --parallel 4``. The CI runs a
seeded subset (>= 5 kills each); ``scripts/test.sh --full`` runs the long
loops (>= 20 kills over 50 000 records).

``source poll``'s crash loop already exists and is not repeated:
tests/e2e/test_source_cli.py::test_sigkill_after_random_pages_loses_nothing_ci_subset (5 kills) and
::test_sigkill_after_random_pages_loses_nothing_full (slow, 50 000 records, 20 kills).

After every kill the state it left is checked, not only the end result:
- sink: every message below the group's committed offset is written to
  ServiceNow or acknowledged in the DLQ (nothing committed past unwritten data);
- backfill: every record up to each window's stored cursor is in Kafka.
At the end: every record/message arrived at least once (0 lost), and what was
done twice is limited to what the killed run had not committed yet (one page
per window for backfill; the uncommitted tail of a partition for the sink).
"""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from sncli.emulator.server import ServiceNowEmulator
from tests.fixtures.kafka import read_all
from tests.reliability.support import (
    committed_offsets,
    crash_loop,
    create_topic,
    keyset,
    produce,
    sink_config,
    sncli_argv,
    source_config,
    stored_offsets,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

NOW = datetime.now(UTC).replace(microsecond=0)


def sid(n: int) -> str:
    return f"{n:032x}"


# --------------------------------------------------------------------------- sink drain


def _sink_crash_loop(
    emulator: ServiceNowEmulator, bootstrap: str, tmp_path: Path, *, messages: int, keys: int, kills: int, seed: int,
    progress_range: tuple[int, int], max_delay: float, write_latency_ms: int,
) -> None:
    rng = random.Random(seed)
    partitions = 3
    topic, dlq, group = (f"h9-{name}-{uuid.uuid4().hex[:8]}" for name in ("sink", "dlq", "grp"))
    # Writes slow enough that some kills land after a periodic commit (every 5 s), some before.
    emulator.state.update_settings(journal_size=10 * messages + 10_000, write_latency_ms=write_latency_ms)
    emulator.state.bulk_insert("incident", [{"sys_id": sid(k), "seq": "-1"} for k in range(keys)])
    create_topic(bootstrap, topic, partitions)
    create_topic(bootstrap, dlq, 1)
    poison = {n for n in range(messages) if rng.random() < 0.01}
    records: list[tuple[bytes | None, bytes | None, Any]] = []
    key_of: dict[int, int] = {}
    for n in range(messages):
        k = rng.randrange(keys)
        key_of[n] = k
        value = b"\x00not json" if n in poison else orjson.dumps({"sys_id": sid(k), "seq": str(n)})
        records.append((sid(k).encode(), value, None))
    where = produce(bootstrap, topic, records)
    seq_at = {pos: n for n, pos in enumerate(where)}
    config = write_config(tmp_path / "sink.yaml", sink_config(
        emulator.url, bootstrap, [{"topic": topic, "table": "incident"}], group_id=group, dlq_topic=dlq, workers=4))

    def patches() -> list[Any]:
        return [e for e in emulator.state.journal() if e.method == "PATCH" and e.table == "incident"]

    def written() -> list[int]:
        return [int(orjson.loads(e.body or b"{}")["seq"]) for e in patches() if 200 <= e.status < 300]

    def dead_lettered() -> set[int]:
        found = set()
        for r in read_all(bootstrap, dlq, timeout=60):
            part, off = int(r.header("sncli.error.partition") or b"-1"), int(r.header("sncli.error.offset") or b"-1")
            found.add(seq_at[(part, off)])
        return found

    commits: list[dict[int, int]] = []
    journal_marks: list[int] = [0]

    def after_kill(kill: int) -> None:
        committed = committed_offsets(bootstrap, group, topic, partitions)
        commits.append(committed)
        journal_marks.append(len(patches()))
        done = set(written()) | dead_lettered()
        below = {seq_at[(p, o)] for p, end in committed.items() for o in range(end)}
        assert below <= done, f"kill {kill}: committed past {len(below - done)} unwritten messages: {committed}"

    progress_base = len(patches())
    result = crash_loop(
        sncli_argv(config, ["sink", "drain"]), kills=kills, rng=rng, progress=lambda: len(patches()) - progress_base,
        progress_range=progress_range, max_delay=max_delay, after_kill=after_kill, workdir=tmp_path,
        ok_codes=(3,))  # 3: done, some records dead-lettered

    # 0 lost: every message was written or dead-lettered; every poison message is in the DLQ.
    writes = written()
    dlq_seqs = dead_lettered()
    assert set(writes) | dlq_seqs == set(range(messages))
    assert poison <= dlq_seqs and not (dlq_seqs - poison)
    # Order per key: the last write of each key is its last message, and within one run a key's writes ascend.
    for k in range(keys):
        last = max((n for n in range(messages) if key_of[n] == k and n not in poison), default=-1)
        record = emulator.state.get("incident", sid(k))
        assert record is not None and record["seq"] == str(last), (k, record)
    all_patches = patches()
    journal_marks.append(len(all_patches))
    for run in range(len(journal_marks) - 1):
        by_key: dict[str, list[int]] = defaultdict(list)
        for entry in all_patches[journal_marks[run]:journal_marks[run + 1]]:
            if 200 <= entry.status < 300:
                by_key[entry.sys_id or ""].append(int(orjson.loads(entry.body or b"{}")["seq"]))
        for key, seqs in by_key.items():
            assert seqs == sorted(seqs), f"run {run + 1}: writes of {key} out of order: {seqs}"
    # Redone work is bounded: after kill i only messages at or past its committed offsets were written again.
    counts = Counter(writes)
    for i, committed in enumerate(commits):
        before = {int(orjson.loads(e.body or b"{}")["seq"]) for e in all_patches[: journal_marks[i + 1]]
                  if 200 <= e.status < 300}
        again = {int(orjson.loads(e.body or b"{}")["seq"]) for e in all_patches[journal_marks[i + 1]:]
                 if 200 <= e.status < 300} & before
        redone_below = [n for n in again if where[n][1] < committed[where[n][0]]]
        assert not redone_below, f"kill {i + 1}: {len(redone_below)} committed messages were written again"
    assert any(sum(c.values()) for c in commits), "no kill came after a commit; the loop proved little"
    duplicates = sum(c - 1 for c in counts.values())
    print(f"sink crash loop: {result.kills} kills at {result.kill_points}, {len(writes)} writes, "
          f"{duplicates} duplicates, commits {commits}")


def test_sink_drain_crash_loop_ci_subset(emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path) -> None:
    _sink_crash_loop(emulator, kafka_bootstrap, tmp_path, messages=7_000, keys=150, kills=5, seed=21,
                     progress_range=(50, 2_500), max_delay=0.3, write_latency_ms=10)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_sink_drain_crash_loop_50000_messages_20_kills(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    _sink_crash_loop(emulator, kafka_bootstrap, tmp_path, messages=50_000, keys=2_000, kills=20, seed=22,
                     progress_range=(500, 6_000), max_delay=1.0, write_latency_ms=5)


# --------------------------------------------------------------------------- backfill --parallel 4


def _backfill_crash_loop(
    emulator: ServiceNowEmulator, bootstrap: str, tmp_path: Path, *, records: int, kills: int, seed: int,
    page_size: int, progress_range: tuple[int, int], read_latency_ms: int, max_delay: float,
) -> None:
    rng = random.Random(seed)
    topic = f"h9-bf-{uuid.uuid4().hex[:8]}"
    emulator.state.update_settings(journal_size=200_000)
    emulator.state.generate("incident", records, at=NOW - timedelta(days=10), spread_seconds=86_400 * 9,
                            field_count=5, record_bytes=80, seed=seed)
    expected = keyset(emulator.state.records("incident"))
    emulator.state.update_settings(read_latency_ms=read_latency_ms)
    offsets = tmp_path / "offsets.json"
    config = write_config(tmp_path / "bf.yaml", source_config(
        emulator.url, bootstrap, offsets, [{"name": "incident", "topic": topic}], page_size=page_size))
    until = (NOW - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    argv = sncli_argv(config, ["backfill", "--table", "incident", "--parallel", "4",
                               "--since", "2000-01-01 00:00:00", "--until", until])

    def page_requests() -> int:
        return sum(1 for e in emulator.state.journal()
                   if e.method == "GET" and "ORDERBY" in e.query.get("sysparm_query", ""))

    checked: list[int] = []

    def after_kill(kill: int) -> None:
        stored = stored_offsets(offsets)
        lows = {key.rsplit("/", 1)[1]: entry["timestamp"] for key, entry in stored.items() if ".plan/" in key}
        cursors = {key.rsplit("/", 1)[1]: (entry["timestamp"], entry["sys_id"]) for key, entry in stored.items()
                   if key.startswith("backfill/") and ".plan/" not in key}
        if not cursors:
            return
        in_kafka = {(v["sys_updated_on"], v["sys_id"]) for v in
                    (orjson.loads(r.value or b"null") for r in read_all(bootstrap, topic, timeout=60))}
        for window, cursor in cursors.items():
            covered = [k for k in expected if lows[window] <= k[0] and k <= cursor]
            missing = set(covered) - in_kafka
            assert not missing, f"kill {kill}: window {window}'s cursor {cursor} is past {len(missing)} unsent records"
            checked.append(len(covered))

    result = crash_loop(argv, kills=kills, rng=rng, progress=page_requests, progress_range=progress_range,
                        max_delay=max_delay, after_kill=after_kill, workdir=tmp_path)
    assert len(checked) >= kills, f"too few stored window cursors to check after the kills: {checked}"
    got = read_all(bootstrap, topic, timeout=120, expected=len(expected))
    counts = Counter((v["sys_updated_on"], v["sys_id"]) for v in (orjson.loads(r.value or b"null") for r in got))
    assert set(counts) == set(expected)  # 0 lost
    duplicates = sum(c - 1 for c in counts.values())
    print(f"backfill crash loop: {kills} kills at {result.kill_points}, {len(got)} messages, {duplicates} duplicates; "
          f"records checked below window cursors after kills: {checked}")
    assert duplicates <= kills * 4 * page_size  # at most one page per window per kill


def test_backfill_parallel_4_crash_loop_ci_subset(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    _backfill_crash_loop(emulator, kafka_bootstrap, tmp_path, records=30_000, kills=5, seed=31, page_size=200,
                         progress_range=(4, 14), read_latency_ms=20, max_delay=0.3)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_backfill_parallel_4_crash_loop_50000_records_20_kills(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    _backfill_crash_loop(emulator, kafka_bootstrap, tmp_path, records=50_000, kills=20, seed=32, page_size=100,
                         progress_range=(4, 16), read_latency_ms=20, max_delay=0.3)
