"""`sncli status` as a process against real services: cursor, last run from the Pushgateway, sink lag, DLQ."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from sncli.emulator.server import ServiceNowEmulator
from tests.integration.sink_support import create_topic, json_value, produce
from tests.integration.test_source_support import config_dict, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def sncli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sncli", "--log-format", "json", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ})


def status(config: Path) -> tuple[int, dict[str, Any]]:
    done = sncli(config, "--json", "status")
    return done.returncode, json.loads(done.stdout)


def test_status_before_and_after_a_poll_and_a_drain_with_a_dlq_record(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, pushgateway_url: str, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    source_topic, sink_topic, dlq = f"status-src-{suffix}", f"status-sink-{suffix}", f"status-dlq-{suffix}"
    emulator.state.generate("incident", 30, spread_seconds=30)
    data = config_dict(emulator.url, kafka_bootstrap, tmp_path / "offsets.json",
                       [{"name": "incident", "topic": source_topic}], pushgateway=pushgateway_url)
    data["metrics"]["job"] = f"sncli-status-{suffix}"  # groups of this test only
    data["kafka"]["client"] = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 500}
    data["sink"] = {"group_id": f"status-{suffix}", "dlq_topic": dlq,
                    "topics": [{"topic": sink_topic, "table": "incident"}]}
    config = write_config(tmp_path / "sncli.yaml", data)
    create_topic(kafka_bootstrap, sink_topic, 1)
    # 105 records in batches of 20: the local broker's ListOffsets(latest) would say 101.
    for start in range(0, 105, 20):
        produce(kafka_bootstrap, sink_topic,
                [(None, json_value({"short_description": f"s{i}"}), None) for i in range(start, min(start + 20, 105))])

    code, before = status(config)
    assert code == 3 and any("no cursor stored yet" in r for r in before["attention"]), before
    assert before["sink"]["topics"] == [{"topic": sink_topic, "table": "incident", "exists": True, "lag": 105,
                                         "partitions": 1}]

    assert sncli(config, "source", "poll").returncode == 0
    code, polled = status(config)
    [incident] = polled["tables"]
    assert incident["cursor"]["timestamp"] and incident["fingerprint"] == "ok"
    assert [(r["command"], r["exit_code"]) for r in incident["runs"]] == [("source_poll", 0)]
    assert polled["dlq"][0]["pending"] == 0 and polled["attention"] == [] and code == 0, polled

    produce(kafka_bootstrap, sink_topic, [(b"bad", b"not json", None)])
    assert sncli(config, "sink", "drain").returncode == 3
    code, drained = status(config)
    assert code == 3
    assert drained["dlq"][0]["pending_by_class"] == {"decode": 1}
    assert drained["sink"]["topics"][0]["lag"] == 0
    runs = {r["command"]: r["exit_code"] for r in drained["tables"][0]["runs"]}
    assert runs == {"source_poll": 0, "sink_drain": 3}
    assert any("last sink_drain ended with exit 3" in r for r in drained["attention"])
    assert any("1 record(s) pending (1 decode)" in r for r in drained["attention"])
    screen = sncli(config, "status")
    assert screen.returncode == 3 and "needs attention" in screen.stdout and sink_topic in screen.stdout
