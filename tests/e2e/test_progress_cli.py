"""Long runs off a terminal print JSON progress lines on stderr; stdout keeps only the --json result."""

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
    env = {**os.environ, "SNCLI_PROGRESS_SECONDS": "0.3"}
    return subprocess.run([sys.executable, "-m", "sncli", "--log-format", "json", "--config", str(config), "--json",
                           *args], capture_output=True, text=True, timeout=120, env=env)


def progress_lines(stderr: str, label: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stderr.splitlines()]  # every stderr line is JSON (logs, progress)
    return [line for line in lines if line.get("progress") == label]


def test_poll_and_drain_report_progress_with_their_totals(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    emulator.state.generate("incident", 600, spread_seconds=60)
    emulator.state.update_settings(read_latency_ms=150)  # 6 pages of 100: about a second of polling
    data = config_dict(emulator.url, kafka_bootstrap, tmp_path / "offsets.json",
                       [{"name": "incident", "topic": f"progress-src-{suffix}"}], page_size=100)
    sink_topic = f"progress-sink-{suffix}"
    data["kafka"]["client"] = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 500}
    data["sink"] = {"group_id": f"progress-{suffix}", "dlq_topic": f"progress-dlq-{suffix}", "workers": 1,
                    "topics": [{"topic": sink_topic, "table": "incident"}]}
    config = write_config(tmp_path / "sncli.yaml", data)

    poll = sncli(config, "source", "poll")
    assert poll.returncode == 0, poll.stderr
    assert json.loads(poll.stdout)["exit_code"] == 0
    lines = progress_lines(poll.stderr, "source poll")
    # X-Total-Count of the backlog, asked once the first page is in (a line before it may say None)
    assert len(lines) >= 2 and {line["total"] for line in lines} <= {None, 600}, lines
    assert lines[-1]["done"] == 600 and lines[-1]["total"] == 600

    create_topic(kafka_bootstrap, sink_topic, 1)
    for start in range(0, 60, 20):  # multi-record batches: the total must come from fetch watermarks
        produce(kafka_bootstrap, sink_topic,
                [(None, json_value({"short_description": f"p{i}"}), None) for i in range(start, start + 20)])
    emulator.state.update_settings(read_latency_ms=0, write_latency_ms=25)  # 60 writes, one worker: ~1.5 s
    drain = sncli(config, "sink", "drain")
    assert drain.returncode == 0, drain.stderr
    assert json.loads(drain.stdout)["messages"] == 60
    lines = progress_lines(drain.stderr, "sink drain")
    # learned beside the run, before its group has joined (a line before it may say None)
    assert len(lines) >= 2 and {line["total"] for line in lines} <= {None, 60}, lines
    assert lines[-1]["total"] == 60
    assert lines[-1]["done"] == 60
