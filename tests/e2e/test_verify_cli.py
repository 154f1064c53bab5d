"""`sncli verify` as a process: --json, exit codes, progress lines, metrics, and a repair killed midway."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sncli.emulator.server import ServiceNowEmulator
from tests.e2e.test_source_cli import sncli, start_sncli
from tests.fixtures.kafka import read_all
from tests.integration.test_source_support import config_dict, stored_offsets, write_config

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC).replace(microsecond=0)


def _config(tmp_path: Path, emulator: ServiceNowEmulator, bootstrap: str, topic: str,
            pushgateway: str | None = None) -> Path:
    data = config_dict(emulator.url, bootstrap, tmp_path / "offsets.json", [{"name": "incident", "topic": topic}],
                       pushgateway=pushgateway)
    return write_config(tmp_path / "sncli.yaml", data)


def _seeded(emulator: ServiceNowEmulator, count: int) -> list[dict[str, str]]:
    emulator.state.generate("incident", count, at=NOW - timedelta(days=2), spread_seconds=86_400, field_count=6,
                            record_bytes=100, seed=3)
    return emulator.state.records("incident")


def _backdate(emulator: ServiceNowEmulator, records: list[dict[str, str]], count: int) -> list[str]:
    """``count`` records imported with old timestamps (behind any cursor): what a poll never sees."""
    ids = [f"{0xbad0000 + i:032x}" for i in range(count)]
    stamps = [records[i % len(records)]["sys_updated_on"] for i in range(count)]
    rows = [{"sys_id": s, "short_description": "imported", "sys_updated_on": t, "sys_created_on": t}
            for s, t in zip(ids, stamps, strict=True)]
    emulator.state.bulk_insert("incident", rows)
    return ids


def test_json_exit_codes_progress_lines_and_metrics(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, pushgateway_url: str, unique_topic: str, tmp_path: Path
) -> None:
    records = _seeded(emulator, 1000)
    config = _config(tmp_path, emulator, kafka_bootstrap, unique_topic, pushgateway=pushgateway_url)
    assert sncli("--config", str(config), "source", "poll").returncode == 0

    in_sync = sncli("--json", "--config", str(config), "verify")
    assert in_sync.returncode == 0, in_sync.stderr
    assert json.loads(in_sync.stdout)["tables"]["incident"]["missing"] == 0

    emulator.state.delete("incident", records[500]["sys_id"])
    emulator.state.delete("incident", records[900]["sys_id"])
    backdated = _backdate(emulator, records, 1)
    differs = sncli("--config", str(config), "verify", "--json")  # --json after the command works too
    assert differs.returncode == 3, differs.stderr
    table = json.loads(differs.stdout)["tables"]["incident"]
    assert (table["missing"], table["stale"], table["extra"]) == (1, 0, 2)
    assert table["first_missing"] == backdated
    assert table["first_extra"] == sorted([records[500]["sys_id"], records[900]["sys_id"]])
    progress = [json.loads(line) for line in differs.stderr.splitlines() if line.startswith('{"progress"')]
    assert progress and {p["table"] for p in progress} == {"incident"}

    with urllib.request.urlopen(f"{pushgateway_url}/metrics", timeout=10) as resp:
        pushed = resp.read().decode()
    extra = [line for line in pushed.splitlines()
             if line.startswith("sncli_verify_extra_records{") and 'job="sncli-test"' in line
             and 'table="incident"' in line and 'command="verify"' in line]
    assert extra and extra[0].endswith(" 2"), extra

    text = sncli("--config", str(config), "verify")
    assert text.returncode == 3 and "incident -> " in text.stdout and "missing 1, stale 0, extra 2" in text.stdout
    assert sncli("--config", str(config), "verify", "--since", "yesterday").returncode == 2
    assert sncli("--config", str(config), "verify", "--table", "nope").returncode == 2


def test_sigkill_during_repair_loses_nothing_and_the_rerun_converges(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    records = _seeded(emulator, 2000)
    config = _config(tmp_path, emulator, kafka_bootstrap, unique_topic)
    assert sncli("--config", str(config), "source", "poll").returncode == 0
    cursor = stored_offsets(tmp_path / "offsets.json")["incident"]
    backdated = set(_backdate(emulator, records[:20], 1500))  # in the first windows: few to list
    emulator.state.update_settings(read_latency_ms=150)  # each batch of 100 fetched takes 150 ms

    proc = start_sncli("--config", str(config), "verify", "--repair")
    deadline = time.monotonic() + 60
    while proc.poll() is None and _lookups(emulator) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the repair finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    emulator.state.update_settings(read_latency_ms=0)

    delivered = {r.key.decode() for r in read_all(kafka_bootstrap, unique_topic, timeout=60) if r.key}
    assert 200 <= len(backdated & delivered) < 1500  # killed midway, with whole batches acknowledged
    assert stored_offsets(tmp_path / "offsets.json")["incident"] == cursor  # the repair never moves it

    rerun = sncli("--json", "--config", str(config), "verify", "--repair")
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["tables"]["incident"]["repair"]["resent"] == 1500 - len(backdated & delivered)
    assert sncli("--config", str(config), "verify").returncode == 0
    delivered = {r.key.decode() for r in read_all(kafka_bootstrap, unique_topic, timeout=60) if r.key}
    assert backdated <= delivered
    assert stored_offsets(tmp_path / "offsets.json")["incident"] == cursor


def _lookups(emulator: ServiceNowEmulator) -> int:
    return sum(1 for e in emulator.state.journal() if "sys_idIN" in e.query.get("sysparm_query", ""))
