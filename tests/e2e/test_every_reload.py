"""`source poll --every`: a config edit takes effect on the next cycle; a broken edit is ignored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from sncli.emulator.server import ServiceNowEmulator
from tests.fixtures.kafka import read_all

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def config_doc(emulator: ServiceNowEmulator, bootstrap: str, tmp_path: Path,
               tables: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "servicenow": {"instance_url": emulator.url, "rate_limit": None,
                       "auth": {"type": "basic", "username": "admin", "password": "${SN_PASSWORD}"}},
        "kafka": {"bootstrap_servers": bootstrap},
        "offsets": {"store": "file", "path": str(tmp_path / "offsets.json")},
        "source": {"safety_lag_seconds": 1, "tables": tables},
    }


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"sncli exited early while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_edit_applies_next_cycle_and_broken_edit_is_ignored(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    incident_topic, problem_topic = f"{unique_topic}.incident", f"{unique_topic}.problem"
    emulator.state.generate("incident", 20, spread_seconds=60, seed=1)
    emulator.state.generate("problem", 7, spread_seconds=60, seed=2)
    config = tmp_path / "sncli.yaml"
    incident = {"name": "incident", "topic": incident_topic}
    config.write_text(yaml.safe_dump(config_doc(emulator, kafka_bootstrap, tmp_path, [incident])))
    errors = tmp_path / "stderr.log"
    with errors.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sncli", "--log-format", "json", "--config", str(config),
             "source", "poll", "--every", "0.5"],
            stdout=subprocess.DEVNULL, stderr=err, text=True, env={**os.environ, "SN_PASSWORD": "admin"},
        )
    try:
        wait_for(lambda: len(read_all(kafka_bootstrap, incident_topic, timeout=10)) == 20, proc, "incident")

        # A valid edit: a second table. The next cycle polls it without a restart.
        problem = {"name": "problem", "topic": problem_topic}
        config.write_text(yaml.safe_dump(config_doc(emulator, kafka_bootstrap, tmp_path, [incident, problem])))
        wait_for(lambda: len(read_all(kafka_bootstrap, problem_topic, timeout=10)) == 7, proc, "problem")

        # A broken edit: logged, ignored, and the last good config keeps running.
        config.write_text(config.read_text().replace("safety_lag_seconds: 1", "safety_lag_seconds: soon"))
        wait_for(lambda: "keeping the previous one" in errors.read_text(), proc, "the rejection log line")
        emulator.state.generate("incident", 3, seed=3)
        emulator.state.generate("problem", 2, seed=4)
        wait_for(lambda: len(read_all(kafka_bootstrap, incident_topic, timeout=10)) == 23
                 and len(read_all(kafka_bootstrap, problem_topic, timeout=10)) == 9, proc, "records after the bad edit")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    log = errors.read_text()
    rejected = [line for line in log.splitlines() if "keeping the previous one" in line]
    assert len(rejected) == 1 and "source.safety_lag_seconds" in rejected[0]
    assert "Traceback" not in log


def test_a_secret_rotated_between_cycles_is_masked_like_the_first(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    """Every config a looping process reads registers its secrets, not only the first one.

    The Pushgateway URL carries credentials and comes from a secret file; the gateway
    is down, so each cycle logs the URL in its warning. The credentials are rotated
    (file and config edited) while the loop runs: neither password may ever show.
    """
    old, new = "cAnary-OLD-7f3a1c", "cAnary-NEW-2b9e4d"
    secret = tmp_path / "pushgateway-url"
    secret.write_text(f"http://sncli:{old}@127.0.0.1:9\n")
    emulator.state.generate("incident", 3, spread_seconds=60, seed=1)
    config = tmp_path / "sncli.yaml"
    doc = config_doc(emulator, kafka_bootstrap, tmp_path, [{"name": "incident", "topic": unique_topic}])
    doc["metrics"] = {"pushgateway": f"${{file:{secret}}}", "job": "sncli-before"}
    config.write_text(yaml.safe_dump(doc))
    errors, output = tmp_path / "stderr.log", tmp_path / "stdout.log"
    with errors.open("w") as err, output.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sncli", "--log-format", "json", "--config", str(config),
             "source", "poll", "--every", "0.3"],
            stdout=out, stderr=err, text=True, env={**os.environ, "SN_PASSWORD": "admin"},
        )
    try:
        wait_for(lambda: "could not push metrics" in errors.read_text(), proc, "the first push warning")
        secret.write_text(f"http://sncli:{new}@127.0.0.1:9\n")
        doc["metrics"]["job"] = "sncli-after"
        config.write_text(yaml.safe_dump(doc))

        def warned_after_reload() -> bool:
            _, reloaded, after = errors.read_text().partition("changed; the next cycle uses it")
            return bool(reloaded) and "could not push metrics" in after

        wait_for(warned_after_reload, proc, "a push warning after the reload")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    log, printed = errors.read_text(), output.read_text()
    warnings = [line for line in log.splitlines() if "could not push metrics" in line]
    # The URL came from a ${file:} reference: like every expanded value it is masked whole.
    assert len(warnings) >= 2 and all("could not push metrics to ***" in line for line in warnings)
    for canary in (old, new):
        assert canary not in log and canary not in printed
