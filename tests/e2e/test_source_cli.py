"""`sncli source poll` as a process: summary, exit codes, SIGTERM, concurrent runs, SIGKILL crash loop."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from sncli.emulator.server import ServiceNowEmulator
from tests.fixtures.kafka import read_all
from tests.integration.test_source_support import config_dict, keyset, stored_cursor, write_config

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC).replace(microsecond=0)


def sncli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sncli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "NO_COLOR": "1"})


def start_sncli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "sncli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _config(tmp_path: Path, emulator: ServiceNowEmulator, bootstrap: str, topic: str, **kw: Any) -> Path:
    data = config_dict(emulator.url, bootstrap, tmp_path / "offsets.json", [{"name": "incident", "topic": topic}],
                       **kw)
    return write_config(tmp_path / "sncli.yaml", data)


def _page_requests(emulator: ServiceNowEmulator) -> int:
    return sum(1 for e in emulator.state.journal()
               if e.path.endswith("/incident") and "ORDERBY" in e.query.get("sysparm_query", ""))


def test_one_poll_delivers_15000_records_with_a_json_summary(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    emulator.state.generate("incident", 12_000, at=NOW - timedelta(hours=3), spread_seconds=0, field_count=10,
                            record_bytes=200, seed=1)
    emulator.state.generate("incident", 3_000, at=NOW - timedelta(hours=2), spread_seconds=3_000, field_count=10,
                            record_bytes=200, seed=2)
    config = _config(tmp_path, emulator, kafka_bootstrap, unique_topic)

    done = sncli("--json", "--config", str(config), "source", "poll")

    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)  # stdout is only the summary; logs went to stderr
    assert summary["command"] == "source_poll" and summary["exit_code"] == 0
    expected = keyset(emulator.state.records("incident"))
    table = summary["tables"]["incident"]
    assert (table["records"], table["pages"], table["produced"], table["error"]) == (15_000, 15, 15_000, None)
    assert table["cursor_before"] is None
    assert table["cursor_after"] == {"timestamp": expected[-1][0], "sys_id": expected[-1][1]}
    assert summary["duration_seconds"] > 0
    got = read_all(kafka_bootstrap, unique_topic, timeout=60, expected=15_000)
    assert sorted((v["sys_updated_on"], v["sys_id"]) for v in (orjson.loads(r.value) for r in got)) == expected
    assert stored_cursor(tmp_path / "offsets.json", "incident") == expected[-1]


def test_config_option_after_the_command_and_bad_table_exit_2(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    config = _config(tmp_path, emulator, kafka_bootstrap, unique_topic)
    done = sncli("source", "poll", "--config", str(config), "--table", "nope")
    assert done.returncode == 2
    assert "no table named 'nope'" in done.stderr
    assert "Traceback" not in done.stderr
    ok = sncli("source", "poll", "--config", str(config), "--table", "incident")
    assert ok.returncode == 0, ok.stderr
    assert "incident: 0 records" in ok.stdout


def test_sigterm_stops_at_a_page_boundary_and_exits_0(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    emulator.state.generate("incident", 3_000, at=NOW - timedelta(hours=1), spread_seconds=300, field_count=5,
                            record_bytes=100, seed=3)
    emulator.state.update_settings(read_latency_ms=50)
    config = _config(tmp_path, emulator, kafka_bootstrap, unique_topic, page_size=100)
    proc = start_sncli("--json", "--config", str(config), "source", "poll")
    deadline = time.monotonic() + 60
    while _page_requests(emulator) < 5:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    table = json.loads(out)["tables"]["incident"]
    assert table["stopped"] == "signal"
    assert 0 < table["records"] < 3_000 and table["records"] % 100 == 0
    expected = keyset(emulator.state.records("incident"))
    assert stored_cursor(tmp_path / "offsets.json", "incident") == expected[table["records"] - 1]
    assert "SIGTERM received" in err


def test_two_concurrent_runs_on_one_table_one_exits_75(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    emulator.state.generate("incident", 2_000, at=NOW - timedelta(hours=1), spread_seconds=300, field_count=5,
                            record_bytes=100, seed=4)
    emulator.state.update_settings(read_latency_ms=50)
    config = _config(tmp_path, emulator, kafka_bootstrap, unique_topic, page_size=100)
    first = start_sncli("--config", str(config), "source", "poll")
    deadline = time.monotonic() + 60
    while _page_requests(emulator) < 2:
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.02)
    started = time.monotonic()
    second = sncli("--json", "--config", str(config), "source", "poll")
    assert second.returncode == 75, second.stderr
    assert time.monotonic() - started < 10  # at once, not after waiting for the lock
    assert json.loads(second.stdout)["exit_code"] == 75
    assert "another run holds the lock for incident" in json.loads(second.stdout)["error"]
    first.communicate(timeout=120)
    assert first.returncode == 0
    got = read_all(kafka_bootstrap, unique_topic, timeout=60, expected=2_000)
    assert len(got) == 2_000  # the refused run produced nothing


def _crash_loop(
    emulator: ServiceNowEmulator, bootstrap: str, tmp_path: Path, *, records: int, page_size: int, kills: int,
    seed: int,
) -> None:
    """SIGKILL the poll after a random number of page requests, `kills` times; then run to the end."""
    rng = random.Random(seed)
    topic = f"crash-{uuid.uuid4().hex[:8]}"
    emulator.state.generate("incident", records, at=NOW - timedelta(hours=2), spread_seconds=records // 20,
                            field_count=5, record_bytes=100, seed=seed)
    emulator.state.update_settings(read_latency_ms=15)
    config = _config(tmp_path, emulator, bootstrap, topic, page_size=page_size)
    expected = keyset(emulator.state.records("incident"))
    done_kills = 0
    for _ in range(kills * 3):
        if done_kills == kills:
            break
        emulator.state.clear_journal()
        proc = start_sncli("--config", str(config), "source", "poll")
        target = rng.randint(1, 6)
        deadline = time.monotonic() + 60
        while proc.poll() is None and _page_requests(emulator) < target and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.random() * 0.05)  # anywhere inside the page: fetching, producing, storing
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            done_kills += 1
        proc.communicate(timeout=30)
    assert done_kills == kills, "the table was finished before every kill happened; use more records"
    final = sncli("--config", str(config), "source", "poll")
    assert final.returncode == 0, final.stderr
    got = read_all(bootstrap, topic, timeout=60, expected=len(expected))
    counts = Counter((v["sys_updated_on"], v["sys_id"]) for v in (orjson.loads(r.value) for r in got))
    assert set(counts) == set(expected)  # nothing lost
    duplicates = sum(c - 1 for c in counts.values())
    print(f"crash loop: {kills} kills, {len(got)} messages, {duplicates} duplicates")
    assert duplicates <= kills * page_size  # at most one page re-sent per kill
    assert stored_cursor(tmp_path / "offsets.json", "incident") == expected[-1]


def test_sigkill_after_random_pages_loses_nothing_ci_subset(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    _crash_loop(emulator, kafka_bootstrap, tmp_path, records=6_000, page_size=200, kills=5, seed=7)


@pytest.mark.slow
def test_sigkill_after_random_pages_loses_nothing_full(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    _crash_loop(emulator, kafka_bootstrap, tmp_path, records=50_000, page_size=500, kills=20, seed=11)


def test_every_repeats_cycles_until_sigterm(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    emulator.state.generate("incident", 50, at=NOW - timedelta(hours=1), spread_seconds=10, seed=20)
    config = _config(tmp_path, emulator, kafka_bootstrap, unique_topic)
    proc = start_sncli("--json", "--config", str(config), "source", "poll", "--every", "0.5")
    deadline = time.monotonic() + 60
    while stored_cursor(tmp_path / "offsets.json", "incident") is None:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    later = emulator.state.generate("incident", 5, at=NOW - timedelta(minutes=1), spread_seconds=0, seed=21)
    while len(read_all(kafka_bootstrap, unique_topic, timeout=30)) < 55:  # a later cycle picks them up
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    summaries = [json.loads(doc) for doc in out.replace("}\n{", "}\x00{").split("\x00")]
    assert len(summaries) >= 2
    assert sum(s["tables"]["incident"]["records"] for s in summaries) == 55
    got = {orjson.loads(r.value)["sys_id"] for r in read_all(kafka_bootstrap, unique_topic, timeout=30)}
    assert set(later) <= got
