"""What the alerts read besides the counters: runs by exit code, and a run's start and end marks.

``sncli_runs_total{exit_code}`` counts each run of a table (every known code present from the first
run, at 0); ``sncli_run_started_timestamp_seconds`` is pushed once a run holds its locks and
``sncli_run_finished_timestamp_seconds`` when it ends, but not by a run the lock refused (exit 75):
the holder may still be running, and only its own end may clear SncliRunStuck.
"""

from __future__ import annotations

import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sncli.config import parse_settings
from sncli.emulator.server import ServiceNowEmulator
from sncli.metrics import FINISHED, STARTED
from sncli.offsets.lock import run_lock
from sncli.source.cycle import run_poll
from tests.integration.test_source_support import config_dict

pytestmark = pytest.mark.integration


def group(gateway: str, job: str) -> dict[tuple[str, str], float]:
    """(sample name, exit_code label or "") -> value, for job's incident poll group."""
    with urllib.request.urlopen(f"{gateway}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {(s.name, s.labels.get("exit_code", "")): s.value
            for f in text_string_to_metric_families(text) for s in f.samples
            if s.labels.get("job") == job and s.labels.get("table") == "incident"
            and s.labels.get("command") == "source_poll"}


def test_runs_are_counted_by_exit_code_and_a_locked_run_leaves_the_holders_marks(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, pushgateway_url: str, unique_topic: str, tmp_path: Path
) -> None:
    job = f"sncli-test-{uuid.uuid4().hex[:8]}"
    tables = [{"name": "incident", "topic": unique_topic}]
    data = config_dict(emulator.url, kafka_bootstrap, tmp_path / "o.json", tables, pushgateway=pushgateway_url)
    data["metrics"]["job"] = job
    settings = parse_settings(data, environ={})

    assert run_poll(settings).exit_code == 0
    first = group(pushgateway_url, job)
    assert {code: first[("sncli_runs_total", code)] for code in ("0", "1", "2", "3", "75")} == {
        "0": 1, "1": 0, "2": 0, "3": 0, "75": 0}
    assert first[(STARTED, "")] <= first[(FINISHED, "")]

    with run_lock(settings, "incident"):  # the "holder": a run in progress
        assert run_poll(settings).exit_code == 75
        assert run_poll(settings).exit_code == 75
    locked = group(pushgateway_url, job)
    assert locked[("sncli_runs_total", "75")] == 2 and locked[("sncli_runs_total", "0")] == 1
    assert locked[(STARTED, "")] == first[(STARTED, "")] and locked[(FINISHED, "")] == first[(FINISHED, "")]

    assert run_poll(settings).exit_code == 0
    again = group(pushgateway_url, job)
    assert again[("sncli_runs_total", "0")] == 2 and again[("sncli_runs_total", "75")] == 2
    assert first[(FINISHED, "")] < again[(STARTED, "")] <= again[(FINISHED, "")]
