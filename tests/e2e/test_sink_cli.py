"""`sncli sink drain` and `sncli dlq ...` as processes: exit codes, --json, signals, crash and rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from sncli.emulator.server import ServiceNowEmulator
from tests.integration.sink_support import (
    committed_offsets,
    config_dict,
    create_topic,
    json_value,
    produce,
    sid,
    write_config,
    writes,
)

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def sncli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sncli", "--log-format", "json", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ},
    )


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sncli", "--log-format", "json", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ},
    )


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_drain_json_summary_and_exit_3_then_dlq_inspect_and_export(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    create_topic(kafka_bootstrap, unique_topic, 1)
    produce(kafka_bootstrap, unique_topic, [
        (None, json_value({"number": "1"}), None),
        (b"bad", b"not json", None),
        (None, None, None),
    ])
    data = config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}])
    config = write_config(tmp_path / "sncli.yaml", data)

    proc = sncli("--json", "sink", "drain", "--config", str(config))
    assert proc.returncode == 3, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["messages"] == 3 and summary["written"] == {"post": 1}
    assert summary["dlq"] == {"decode": 1} and summary["skipped"] == 1
    assert summary["committed"] == {unique_topic: {"0": 3}} and summary["exit_code"] == 3
    for line in proc.stderr.splitlines():
        json.loads(line)  # logs are JSON lines on stderr; stdout held only the summary

    listing = sncli("--json", "dlq", "inspect", "--config", str(config))
    assert listing.returncode == 0, listing.stderr
    rows = json.loads(listing.stdout)
    assert len(rows) == 1 and rows[0]["error_class"] == "decode" and rows[0]["error_offset"] == 1
    text = sncli("dlq", "inspect", "--error-class", "decode", "--config", str(config))
    assert text.returncode == 0, text.stderr
    assert "decode" in text.stdout and "value is not valid JSON" in text.stdout, text.stdout
    bad = sncli("dlq", "inspect", "--error-class", "nonsense", "--config", str(config))
    assert bad.returncode == 2 and "--error-class" in bad.stderr

    out = tmp_path / "dlq.parquet"
    exported = sncli("--json", "dlq", "export", "--format", "parquet", "--output", str(out), "--config", str(config))
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["rows"] == 1
    assert pq.read_table(out).column("error_class").to_pylist() == ["decode"]

    plan = sncli("--json", "dlq", "replay", "--dry-run", "--config", str(config))
    assert plan.returncode == 0, plan.stderr
    assert [p["operation"] for p in json.loads(plan.stdout)["plan"]] == ["DLQ"]


def test_usage_errors_exit_2(emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path) -> None:
    data = config_dict(emulator.url, kafka_bootstrap, [{"topic": "known", "table": "incident"}])
    config = write_config(tmp_path / "sncli.yaml", data)
    proc = sncli("sink", "drain", "--topic", "unknown", "--config", str(config))
    assert proc.returncode == 2 and "unknown" in proc.stderr and "Traceback" not in proc.stderr
    data["sink"]["topics"] = []
    empty = write_config(tmp_path / "empty.yaml", data)
    proc = sncli("sink", "drain", "--config", str(empty))
    assert proc.returncode == 2 and "sink.topics" in proc.stderr


def test_dry_run_prints_the_plan_and_writes_nothing(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    create_topic(kafka_bootstrap, unique_topic, 1)
    produce(kafka_bootstrap, unique_topic, [(None, json_value({"sys_id": sid(4), "state": "3"}), None)])
    data = config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}])
    config = write_config(tmp_path / "sncli.yaml", data)
    proc = sncli("sink", "drain", "--dry-run", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert "PATCH" in proc.stdout and sid(4) in proc.stdout and "state" in proc.stdout
    assert writes(emulator.state.journal()) == []
    assert committed_offsets(kafka_bootstrap, data["sink"]["group_id"], unique_topic, 1) == {0: -1001}


def keyed_updates(keys: int, versions: int) -> list[tuple[bytes, bytes, None]]:
    """``versions`` updates of each key, interleaved; ``seq`` numbers every message."""
    out = []
    seq = 0
    for v in range(1, versions + 1):
        for k in range(keys):
            out.append((sid(k).encode(), json_value({"sys_id": sid(k), "seq": str(seq), "version": str(v)}), None))
            seq += 1
    return out


def seqs_written(emulator: ServiceNowEmulator) -> list[int]:
    return [int(orjson.loads(e.body)["seq"]) for e in writes(emulator.state.journal(), "incident")
            if e.status in (200, 201)]


def test_sigkill_mid_drain_then_rerun_writes_every_record_at_least_once(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    keys, versions, partitions = 100, 30, 2
    emulator.state.bulk_insert("incident", [{"sys_id": sid(k), "version": "0"} for k in range(keys)])
    emulator.state.update_settings(write_latency_ms=10)
    create_topic(kafka_bootstrap, unique_topic, partitions)
    ends = produce(kafka_bootstrap, unique_topic, keyed_updates(keys, versions))
    total = keys * versions
    data = config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}], workers=4)
    config = write_config(tmp_path / "sncli.yaml", data)

    proc = start("sink", "drain", "--config", str(config))
    try:
        # Kill it once a periodic commit happened, while writes are still going on.
        group = data["sink"]["group_id"]
        wait_for(lambda: max(committed_offsets(kafka_bootstrap, group, unique_topic, partitions).values()) > 0,
                 60, "a first commit")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    first = set(seqs_written(emulator))
    assert 0 < len(first) < total

    rerun = sncli("--json", "sink", "drain", "--config", str(config))
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["messages"] < total  # it resumed from the committed offsets, not from the start

    written = seqs_written(emulator)
    assert set(written) == set(range(total))  # every record written at least once, none skipped
    for k in range(keys):
        assert emulator.state.get("incident", sid(k))["version"] == str(versions)  # type: ignore[index]
    assert committed_offsets(kafka_bootstrap, data["sink"]["group_id"], unique_topic, partitions) == ends


def test_sigterm_stops_cleanly_commits_and_a_rerun_finishes(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    keys, versions = 50, 20
    emulator.state.bulk_insert("incident", [{"sys_id": sid(k), "version": "0"} for k in range(keys)])
    emulator.state.update_settings(write_latency_ms=10)
    create_topic(kafka_bootstrap, unique_topic, 1)
    ends = produce(kafka_bootstrap, unique_topic, keyed_updates(keys, versions))
    total = keys * versions
    data = config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}], workers=2)
    config = write_config(tmp_path / "sncli.yaml", data)

    proc = start("--json", "sink", "drain", "--config", str(config))
    try:
        wait_for(lambda: len(seqs_written(emulator)) >= 100, 60, "the first writes")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["stopped_by"] == "signal"
    committed = summary["committed"][unique_topic]["0"]
    assert committed == committed_offsets(kafka_bootstrap, data["sink"]["group_id"], unique_topic, 1)[0]
    assert committed < total
    assert set(range(committed)) <= set(seqs_written(emulator))  # nothing committed past an unwritten record

    rerun = sncli("--json", "sink", "drain", "--config", str(config))
    assert rerun.returncode == 0, rerun.stderr
    assert set(seqs_written(emulator)) == set(range(total))
    assert committed_offsets(kafka_bootstrap, data["sink"]["group_id"], unique_topic, 1) == ends


def test_every_repeats_drains_until_sigterm(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    create_topic(kafka_bootstrap, unique_topic, 1)
    produce(kafka_bootstrap, unique_topic, [(None, json_value({"n": "first"}), None)])
    data = config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}])
    config = write_config(tmp_path / "sncli.yaml", data)
    proc = start("--json", "sink", "drain", "--every", "0.5", "--config", str(config))
    try:
        wait_for(lambda: len(emulator.state.records("incident")) == 1, 60, "the first drain")
        produce(kafka_bootstrap, unique_topic, [(None, json_value({"n": "second"}), None)])
        wait_for(lambda: len(emulator.state.records("incident")) == 2, 60, "a later drain")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    decoder, summaries, at = json.JSONDecoder(), [], 0
    while at < len(out.strip()):
        doc, at = decoder.raw_decode(out, at)
        summaries.append(doc)
        while at < len(out) and out[at].isspace():
            at += 1
    assert len(summaries) >= 2  # one summary per drain
    assert sum(s["messages"] for s in summaries) == 2
