"""`sncli backfill` as a process: --json summary, progress lines, SIGKILL and resume, Indexed-Job windows."""

from __future__ import annotations

import json
import random
import signal
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from sncli.emulator.server import ServiceNowEmulator
from tests.e2e.test_source_cli import sncli, start_sncli
from tests.fixtures.kafka import describe_partitions, read_all
from tests.integration.test_source_support import config_dict, keyset, stored_offsets, write_config

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC).replace(microsecond=0)


def _config(tmp_path: Path, emulator: ServiceNowEmulator, bootstrap: str, topic: str, page_size: int = 500) -> Path:
    data = config_dict(emulator.url, bootstrap, tmp_path / "offsets.json", [{"name": "incident", "topic": topic}],
                       page_size=page_size)
    return write_config(tmp_path / "sncli.yaml", data)


def _window_cursors(offsets: Path) -> int:
    return sum(1 for k in stored_offsets(offsets) if k.startswith("backfill/") and ".plan/" not in k)


def _crash_and_resume(
    emulator: ServiceNowEmulator, bootstrap: str, tmp_path: Path, *, records: int, kills: int, seed: int
) -> None:
    rng = random.Random(seed)
    topic = f"bfk-{uuid.uuid4().hex[:8]}"
    emulator.state.generate("incident", records, at=NOW - timedelta(days=10), spread_seconds=86_400 * 9,
                            field_count=6, record_bytes=80, seed=seed)
    emulator.state.update_settings(read_latency_ms=20)
    page_size = 500
    config = _config(tmp_path, emulator, bootstrap, topic, page_size)
    offsets = tmp_path / "offsets.json"
    for _ in range(kills):
        proc = start_sncli("--config", str(config), "backfill", "--table", "incident", "--parallel", "4")
        deadline = time.monotonic() + 60
        while proc.poll() is None and _window_cursors(offsets) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.random() * 0.5)
        assert proc.poll() is None, "the backfill finished before it could be killed; use more records"
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    emulator.state.update_settings(read_latency_ms=0)
    # The same command again, without --until: it resumes the unfinished range.
    done = sncli("--json", "--config", str(config), "backfill", "--table", "incident", "--parallel", "4")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["range_done"] is True
    assert summary["tables"]["incident"]["records"] < records  # resumed, not started over
    got = read_all(bootstrap, topic, timeout=90, expected=records)
    counts = Counter((v["sys_updated_on"], v["sys_id"]) for v in (orjson.loads(r.value) for r in got))
    missing = set(keyset(emulator.state.records("incident"))) - set(counts)
    if missing:  # say what a post-mortem needs before failing: where the cursors stood, what went to a DLQ
        print("missing", len(missing), "from", min(missing), "to", max(missing))
        print("stored offsets:", json.dumps(stored_offsets(offsets), indent=1, default=str))
        try:
            dead = read_all(bootstrap, "servicenow.dlq", timeout=10)
            print("servicenow.dlq holds", len(dead), "records;", sum(r.key in {m[1].encode() for m in missing}
                                                                      for r in dead), "of the missing keys")
        except Exception as exc:  # no DLQ topic: nothing was dead-lettered
            print("servicenow.dlq:", exc)
        print(describe_partitions(got))
        again = read_all(bootstrap, topic, timeout=30, expected=records)  # a reading fault, or not in Kafka?
        found = {(v["sys_updated_on"], v["sys_id"]) for v in (orjson.loads(r.value) for r in again)}
        print("a second read of the topic finds", len(missing & found), "of the missing records")
        print(describe_partitions(again))
    assert set(counts) == set(keyset(emulator.state.records("incident")))  # every record
    duplicates = sum(c - 1 for c in counts.values())
    assert duplicates <= kills * 4 * page_size  # at most one page per window per kill


def test_backfill_parallel_4_of_100000_killed_and_resumed_loses_nothing(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    _crash_and_resume(emulator, kafka_bootstrap, tmp_path, records=100_000, kills=3, seed=1)


@pytest.mark.slow
def test_backfill_killed_ten_times_loses_nothing(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    _crash_and_resume(emulator, kafka_bootstrap, tmp_path, records=100_000, kills=10, seed=2)


def test_json_summary_progress_lines_and_parquet(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    emulator.state.generate("incident", 3_000, at=NOW - timedelta(days=2), spread_seconds=86_400, seed=3)
    config = _config(tmp_path, emulator, kafka_bootstrap, "unused")
    out = tmp_path / "pq"
    done = sncli("--json", "--log-format", "json", "--config", str(config), "backfill", "--table", "incident",
                 "--parallel", "2", "--output", f"parquet:{out}")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["command"] == "backfill" and summary["exit_code"] == 0
    assert summary["output"] == f"parquet:{out}"
    assert summary["tables"]["incident"]["records"] == 3_000
    assert len(summary["windows"]) == 2 and all(w["done"] and w["files"] for w in summary["windows"])
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any("3000/3000 records" in entry["msg"] for entry in lines)  # plain progress lines off a TTY
    assert sorted(p.name for p in out.iterdir()) == ["incident-w0of2.parquet", "incident-w1of2.parquet"]


def test_usage_errors_exit_2(emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path) -> None:
    config = _config(tmp_path, emulator, kafka_bootstrap, "unused")
    for args, message in [
        (["--window", "0/2"], "--window needs --until"),
        (["--window", "2/2", "--until", "2024-01-01 00:00:00"], "--window 2/2"),
        (["--output", "csv:/tmp/x"], "--output must be"),
        (["--since", "yesterday"], "--since"),
    ]:
        done = sncli("--config", str(config), "backfill", "--table", "incident", *args)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr
