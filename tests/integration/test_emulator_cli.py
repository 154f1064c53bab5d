"""``sncli emulator`` as a subprocess: ready line, serving, seeding, clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"ready on (http://127\.0\.0\.1:(\d+))")


def start(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sncli", "--log-format", "json", "emulator", "--port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = READY.search(line)
    if match is None:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"no ready line: {line!r} stderr={err!r}")
    return proc, match.group(1)


@pytest.fixture
def running() -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc, url = start("--seed", "incident=25", "--token-ttl", "60", env={"SNCLI_EMULATOR_PASSWORD": "s3cret"})
    try:
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def test_serves_seeded_data_and_stops_on_sigterm(running: tuple[subprocess.Popen[str], str]) -> None:
    proc, url = running
    r = requests.get(f"{url}/api/now/table/incident", auth=("admin", "s3cret"), params={"sysparm_limit": "100"})
    assert r.status_code == 200 and len(r.json()["result"]) == 25
    assert requests.get(f"{url}/api/now/table/incident", auth=("admin", "admin")).status_code == 401
    token = requests.post(
        f"{url}/oauth_token.do",
        data={"grant_type": "password", "client_id": "sncli", "client_secret": "sncli-secret",
              "username": "admin", "password": "s3cret"},
    ).json()  # fmt: skip
    assert token["expires_in"] == 60
    ctl = requests.post(f"{url}/__emulator/generate", json={"table": "problem", "count": 5})
    assert ctl.json()["result"]["count"] == 5
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "s3cret" not in err
    assert "seeded 25 records into incident" in err and "emulator stopped" in err  # logs go to stderr
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/__emulator/health", timeout=2)


def test_stops_on_sigint() -> None:
    proc, url = start()
    assert requests.get(f"{url}/__emulator/health").status_code == 200
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=15)
    assert proc.returncode == 0


def test_busy_port_is_a_usage_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "sncli", "emulator", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 2
    assert "cannot listen" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_seed_spec_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sncli", "emulator", "--port", "0", "--seed", "incident"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "TABLE=COUNT" in proc.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "example.com"])
def test_a_non_loopback_bind_is_refused_without_allow_remote(host: str) -> None:
    # admin/admin and an unauthenticated control API must not appear on the network by accident.
    proc = subprocess.Popen([sys.executable, "-m", "sncli", "emulator", "--port", "0", "--host", host],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()  # the old code printed its ready line and served
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert ready == "" and proc.returncode == 2, ready
    assert "refusing to listen on" in err and "--allow-remote" in err and "Traceback" not in err


def test_allow_remote_binds_every_interface_and_warns() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "sncli", "emulator", "--port", "0", "--host", "0.0.0.0",
                             "--allow-remote"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready = re.search(r"ready on http://0\.0\.0\.0:(\d+)", proc.stdout.readline())
        assert ready is not None
        health = requests.get(f"http://127.0.0.1:{ready.group(1)}/__emulator/health", timeout=5)
        assert health.status_code == 200
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert "default login admin/admin" in err and "unauthenticated control API" in err


def test_the_instance_physics_come_from_the_command_line_and_survive_a_reset() -> None:
    proc, url = start("--round-trip-ms", "7", "--write-time-ms", "3", "--max-concurrent", "5",
                      "--batch-budget-ms", "40")
    try:
        wanted = {"round_trip_ms": 7, "write_time_ms": 3, "max_concurrent": 5, "batch_budget_ms": 40}
        settings = requests.get(f"{url}/__emulator/settings", timeout=5).json()["result"]
        assert {k: settings[k] for k in wanted} == wanted
        requests.post(f"{url}/__emulator/reset", timeout=5)
        settings = requests.get(f"{url}/__emulator/settings", timeout=5).json()["result"]
        assert {k: settings[k] for k in wanted} == wanted
        assert requests.get(f"{url}/api/now/table/incident", auth=("admin", "admin"), timeout=5).status_code == 200
    finally:
        proc.kill()
        proc.communicate(timeout=10)
