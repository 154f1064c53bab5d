"""Metrics of a poll run reach the Pushgateway (read back over HTTP); a gateway that is down is harmless."""

from __future__ import annotations

import re
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sncli.config import parse_settings
from sncli.emulator.server import ServiceNowEmulator
from sncli.offsets.lock import run_lock
from sncli.source.cycle import run_poll
from tests.integration.test_source_support import config_dict

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def _scrape(gateway: str) -> str:
    with urllib.request.urlopen(f"{gateway}/metrics", timeout=5) as resp:
        text: str = resp.read().decode()
    return text


def _value(text: str, name: str, job: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if found.get("job") == job and all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_poll_metrics_are_pushed_and_readable(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, pushgateway_url: str, unique_topic: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    emulator.state.generate("incident", 130, at=now - timedelta(hours=1), spread_seconds=60, seed=1)
    job = f"sncli-test-{uuid.uuid4().hex[:8]}"
    data = config_dict(emulator.url, kafka_bootstrap, tmp_path / "o.json",
                       [{"name": "incident", "topic": unique_topic},
                        {"name": "problem", "topic": unique_topic + "-p"}],
                       page_size=50, pushgateway=pushgateway_url)
    data["metrics"]["job"] = job
    settings = parse_settings(data, environ={})

    summary = run_poll(settings)
    assert summary.exit_code == 0

    text = _scrape(pushgateway_url)
    # One group per table (job, command, table): see sncli.source.runkit.finish_metrics.
    incident = {"command": "source_poll", "table": "incident"}
    problem = {"command": "source_poll", "table": "problem"}
    assert _value(text, "bridge_source_records_total", job, **incident) == 130
    assert _value(text, "bridge_source_produce_total", job, **incident) == 130
    assert _value(text, "bridge_source_records_total", job, **problem) == 0
    # Both tables caught up to the cycle's upper bound: no lag, however old their newest record
    # (~59 min for incident, none at all for problem). Set for both.
    for group in (incident, problem):
        lag = _value(text, "bridge_offset_lag_seconds", job, **group)
        assert lag is not None and 0 <= lag < 60
    calls = _value(text, "bridge_sn_api_latency_seconds_count", job, endpoint="table/incident", method="GET",
                   **incident)
    assert calls is not None and calls >= 3
    for group in (incident, problem):
        assert _value(text, "sncli_run_duration_seconds", job, **group) is not None
        success = _value(text, "sncli_last_success_timestamp_seconds", job, **group)
        assert success is not None and abs(success - datetime.now(UTC).timestamp()) < 120
        assert _value(text, "sncli_run_exit_code", job, **group) == 0


def test_a_partial_run_keeps_the_failed_tables_last_success(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, pushgateway_url: str, unique_topic: str, tmp_path: Path
) -> None:
    job = f"sncli-test-{uuid.uuid4().hex[:8]}"
    data = config_dict(emulator.url, kafka_bootstrap, tmp_path / "o.json",
                       [{"name": "incident", "topic": unique_topic},
                        {"name": "problem", "topic": unique_topic + "-p"}], pushgateway=pushgateway_url)
    data["metrics"]["job"] = job
    settings = parse_settings(data, environ={})
    emulator.state.update_settings(denied_tables={"problem"})
    assert run_poll(settings).exit_code == 3
    text = _scrape(pushgateway_url)
    assert _value(text, "sncli_run_exit_code", job, command="source_poll", table="incident") == 0
    assert _value(text, "sncli_last_success_timestamp_seconds", job, command="source_poll", table="incident")
    assert _value(text, "sncli_run_exit_code", job, command="source_poll", table="problem") == 1
    assert _value(text, "sncli_last_success_timestamp_seconds", job, command="source_poll", table="problem") is None


def test_a_failed_or_locked_run_pushes_its_exit_code_and_keeps_the_last_success(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, pushgateway_url: str, unique_topic: str, tmp_path: Path
) -> None:
    job = f"sncli-test-{uuid.uuid4().hex[:8]}"
    tables = [{"name": "incident", "topic": unique_topic}]
    data = config_dict(emulator.url, kafka_bootstrap, tmp_path / "o.json", tables,
                       pushgateway=pushgateway_url)
    data["metrics"]["job"] = job
    settings = parse_settings(data, environ={})
    assert run_poll(settings).exit_code == 0
    group = {"command": "source_poll", "table": "incident"}
    first_success = _value(_scrape(pushgateway_url), "sncli_last_success_timestamp_seconds", job, **group)
    assert first_success is not None

    with run_lock(settings, "incident"):
        assert run_poll(settings).exit_code == 75
    text = _scrape(pushgateway_url)
    assert _value(text, "sncli_run_exit_code", job, **group) == 75
    assert _value(text, "sncli_last_success_timestamp_seconds", job, **group) == first_success


def test_pushgateway_down_never_fails_the_run(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator.state.generate("incident", 5, at=NOW - timedelta(hours=1), spread_seconds=0, seed=2)
    tables = [{"name": "incident", "topic": unique_topic}]
    data = config_dict(emulator.url, kafka_bootstrap, tmp_path / "o.json", tables,
                       pushgateway="http://127.0.0.1:9")
    summary = run_poll(parse_settings(data, environ={}))
    assert summary.exit_code == 0 and summary.tables["incident"].records == 5
    assert any("could not push metrics" in r.getMessage() for r in caplog.records)


def test_lag_is_behind_servicenow_not_the_age_of_the_newest_record(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, pushgateway_url: str, unique_topic: str, tmp_path: Path
) -> None:
    """An idle, caught-up table has (about) the safety lag, cycle after cycle; a bounded one is behind its cursor."""
    now = datetime.now(UTC).replace(microsecond=0)
    emulator.state.generate("incident", 30, at=now - timedelta(hours=2), spread_seconds=3600, seed=5)
    job = f"sncli-test-{uuid.uuid4().hex[:8]}"
    tables = [{"name": "incident", "topic": unique_topic}]
    data = config_dict(emulator.url, kafka_bootstrap, tmp_path / "o.json", tables, page_size=10,
                       pushgateway=pushgateway_url, safety_lag_seconds=5)
    data["metrics"]["job"] = job
    settings = parse_settings(data, environ={})
    group = {"command": "source_poll", "table": "incident"}

    # Stopped by --max-records after 10 of 30 records: behind by the age of the 10th record (~2 h).
    summary = run_poll(settings, max_records=10)
    assert summary.exit_code == 0 and summary.tables["incident"].stopped == "max_records"
    cursor = summary.tables["incident"].cursor_after
    assert cursor is not None
    behind = (datetime.now(UTC) - datetime.fromisoformat(cursor.timestamp).replace(tzinfo=UTC)).total_seconds()
    lag = _value(_scrape(pushgateway_url), "bridge_offset_lag_seconds", job, **group)
    assert lag is not None and behind - 60 < lag <= behind + 1 and lag > 3600

    # Two cycles that catch up on a table nobody writes to: lag = now - HI = the safety lag, not 1-2 h.
    for _ in range(2):
        summary = run_poll(settings)
        assert summary.exit_code == 0 and summary.tables["incident"].stopped == "caught_up"
        lag = _value(_scrape(pushgateway_url), "bridge_offset_lag_seconds", job, **group)
        assert lag is not None and 5 - 1 <= lag < 5 + 30


def _push_text(gateway: str, path: str, text: str) -> None:
    request = urllib.request.Request(f"{gateway}/metrics/{path}", data=text.encode(), method="PUT")
    with urllib.request.urlopen(request, timeout=5):
        pass


def test_pushed_counters_only_grow_across_runs_and_equal_the_total(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, pushgateway_url: str, unique_topic: str, tmp_path: Path
) -> None:
    """Three runs into one group: each counter on the gateway is the sum over the runs, never one run's count."""
    now = datetime.now(UTC).replace(microsecond=0)
    emulator.state.generate("incident", 30, at=now - timedelta(hours=1), spread_seconds=600, seed=11)
    job = f"sncli-test-{uuid.uuid4().hex[:8]}"
    tables = [{"name": "incident", "topic": unique_topic}]
    data = config_dict(emulator.url, kafka_bootstrap, tmp_path / "o.json", tables, page_size=10,
                       pushgateway=pushgateway_url)
    data["metrics"]["job"] = job
    settings = parse_settings(data, environ={})
    group = {"command": "source_poll", "table": "incident"}
    calls = "bridge_sn_api_latency_seconds_count"
    seen: list[tuple[float | None, float | None, float | None]] = []
    for added in (0, 20, 0):  # 30 records, then 20 more, then an idle run
        if added:
            emulator.state.generate("incident", added, at=now - timedelta(minutes=30), spread_seconds=60, seed=12)
        assert run_poll(settings).exit_code == 0
        text = _scrape(pushgateway_url)
        seen.append((_value(text, "bridge_source_records_total", job, **group),
                     _value(text, "bridge_source_produce_total", job, **group),
                     _value(text, calls, job, endpoint="table/incident", method="GET", **group)))
    assert [(records, produced) for records, produced, _ in seen] == [(30, 30), (50, 50), (50, 50)]
    counts = [count for _, _, count in seen]
    assert None not in counts and counts[0] < counts[1] < counts[2]  # the latency histogram grows too
    text = _scrape(pushgateway_url)
    buckets = [line for line in text.splitlines()
               if line.startswith(calls.replace("_count", "_bucket")) and f'job="{job}"' in line
               and 'endpoint="table/incident"' in line and 'le="+Inf"' in line]
    assert len(buckets) == 1 and float(buckets[0].rsplit(" ", 1)[1]) == counts[2]  # buckets carried alike


def test_a_garbled_pushed_counter_restarts_from_the_run_and_is_carried_again(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, pushgateway_url: str, unique_topic: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    emulator.state.generate("incident", 5, at=now - timedelta(hours=1), spread_seconds=60, seed=21)
    job = f"sncli-test-{uuid.uuid4().hex[:8]}"
    tables = [{"name": "incident", "topic": unique_topic}]
    data = config_dict(emulator.url, kafka_bootstrap, tmp_path / "o.json", tables, pushgateway=pushgateway_url)
    data["metrics"]["job"] = job
    group = {"command": "source_poll", "table": "incident"}
    _push_text(pushgateway_url, f"job/{job}/command/source_poll/table/incident",
               "# TYPE bridge_source_records_total counter\nbridge_source_records_total{table=\"incident\"} NaN\n"
               "# TYPE bridge_source_produce_total counter\nbridge_source_produce_total{table=\"incident\"} 7\n")
    settings = parse_settings(data, environ={})
    assert run_poll(settings).exit_code == 0
    text = _scrape(pushgateway_url)
    assert _value(text, "bridge_source_records_total", job, **group) == 5  # NaN cannot be carried: restarts
    assert _value(text, "bridge_source_produce_total", job, **group) == 7 + 5
    assert any("bridge_source_records" in r.getMessage() and "restart" in r.getMessage() for r in caplog.records)
    emulator.state.generate("incident", 3, at=now - timedelta(minutes=30), spread_seconds=60, seed=22)
    assert run_poll(settings).exit_code == 0
    text = _scrape(pushgateway_url)
    assert _value(text, "bridge_source_records_total", job, **group) == 8
    assert _value(text, "bridge_source_produce_total", job, **group) == 15
