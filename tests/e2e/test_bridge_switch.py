"""Switching from the Go bridge: import its offsets.json, and the next poll continues from there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import yaml

from sncli.emulator.server import ServiceNowEmulator
from tests.fixtures.kafka import read_all

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def sncli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sncli", "--log-format", "json", "--config", str(config), *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, "SN_PASSWORD": "admin"},
    )


def test_import_then_poll_continues_where_the_bridge_stopped(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    # 100 records, several of them sharing each second, so the sys_id half of the cursor matters.
    emulator.state.generate("incident", 100, at=datetime.now(UTC) - timedelta(hours=2), spread_seconds=30, seed=5)
    ordered = sorted(emulator.state.records("incident"), key=lambda r: (r["sys_updated_on"], r["sys_id"]))
    last_sent = ordered[49]
    # The bridge's shape: unix seconds and the last identifier it published.
    unix = int(datetime.strptime(last_sent["sys_updated_on"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp())
    bridge = tmp_path / "offsets.json"
    bridge.write_text(json.dumps({"incident": {"timestamp": unix, "last_identifier": last_sent["sys_id"]}}))

    config = tmp_path / "sncli.yaml"
    config.write_text(yaml.safe_dump({
        "servicenow": {"instance_url": emulator.url, "rate_limit": None,
                       "auth": {"type": "basic", "username": "admin", "password": "${SN_PASSWORD}"}},
        "kafka": {"bootstrap_servers": kafka_bootstrap},
        "offsets": {"store": "file", "path": str(tmp_path / "sncli-offsets.json")},
        "source": {"safety_lag_seconds": 1, "tables": [{"name": "incident", "topic": unique_topic}]},
    }))

    imported = sncli(config, "offsets", "import", "--from-bridge", str(bridge), "--yes")
    assert imported.returncode == 0, imported.stderr
    shown = json.loads(sncli(config, "--json", "offsets", "show").stdout)
    (row,) = [r for r in shown if r["key"] == "incident"]
    assert (row["timestamp"], row["sys_id"], row["fingerprint"]) == (
        last_sent["sys_updated_on"], last_sent["sys_id"], "ok")

    polled = sncli(config, "--json", "source", "poll")
    assert polled.returncode == 0, polled.stderr
    assert json.loads(polled.stdout)["tables"]["incident"]["records"] == 50

    produced = [orjson.loads(r.value)["sys_id"] for r in read_all(kafka_bootstrap, unique_topic, timeout=30)]
    assert sorted(produced) == sorted(r["sys_id"] for r in ordered[50:])  # nothing re-read, nothing skipped
