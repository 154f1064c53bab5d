"""`sncli sink drain` in batch mode as a process: SIGKILL mid-batch, then a rerun finishes the job."""

from __future__ import annotations

import json
import signal
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from sncli.emulator.server import ServiceNowEmulator
from tests.e2e.test_sink_cli import keyed_updates, sncli, start, wait_for
from tests.integration.sink_support import (
    committed_offsets,
    config_dict,
    create_topic,
    produce,
    sid,
    write_config,
    writes,
)

pytestmark = pytest.mark.e2e


def per_key_seqs(entries: list[object]) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = defaultdict(list)
    for entry in writes(entries, "incident"):  # type: ignore[arg-type]
        if entry.status in (200, 201):
            seen[entry.sys_id].append(int(orjson.loads(entry.body)["seq"]))
    return seen


def test_sigkill_mid_batch_then_rerun_writes_every_record_in_key_order(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    keys, versions, partitions = 30, 10, 2
    emulator.state.bulk_insert("incident", [{"sys_id": sid(k), "version": "0"} for k in range(keys)])
    emulator.state.update_settings(round_trip_ms=100, write_time_ms=1, max_concurrent=2)
    create_topic(kafka_bootstrap, unique_topic, partitions)
    ends = produce(kafka_bootstrap, unique_topic, keyed_updates(keys, versions))
    total = keys * versions
    data = config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": "incident"}], workers=2)
    data["sink"].update(write_mode="batch", batch_size=3, batch_max_wait_ms=10)
    config = write_config(tmp_path / "sncli.yaml", data)
    group = data["sink"]["group_id"]

    proc = start("sink", "drain", "--config", str(config))
    try:
        wait_for(lambda: max(committed_offsets(kafka_bootstrap, group, unique_topic, partitions).values()) > 0,
                 60, "a first commit")
        proc.send_signal(signal.SIGKILL)  # batches are in flight: killed between send and answer
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    first_run = emulator.state.journal()
    first = per_key_seqs(first_run)
    assert 0 < sum(map(len, first.values())) < total
    assert any(e.path == "/api/now/v1/batch" for e in first_run)

    rerun = sncli("--json", "sink", "drain", "--config", str(config))
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["messages"] < total  # resumed from the committed offsets
    assert summary["servicenow"]["batches"] > 0

    second = per_key_seqs(emulator.state.journal()[len(first_run):])
    everything = {seq for seqs in (*first.values(), *second.values()) for seq in seqs}
    assert everything == set(range(total))  # every record written at least once
    for run in (first, second):
        for key, seqs in run.items():
            assert seqs == sorted(seqs), (key, seqs)  # per-key order within each run
    for k in range(keys):
        assert emulator.state.get("incident", sid(k))["version"] == str(versions)  # type: ignore[index]
    assert committed_offsets(kafka_bootstrap, group, unique_topic, partitions) == ends
