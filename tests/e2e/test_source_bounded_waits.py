"""`sncli source poll` never hangs on ServiceNow and stores a page's cursor as soon as Kafka acknowledged it.

Each run is a process with a bound on its life (a hang fails the test, it does
not hang the suite):

- several tables on OAuth whose token expires mid-run while the token endpoint
  fails and the rate limit makes requests wait: the run finishes;
- a ServiceNow that takes a page request and never answers: the run ends
  within ``timeout_seconds`` x attempts, and a SIGTERM or ``--max-seconds``
  stops it while it waits;
- a page whose first attempt fails fast: the page before it is stored at once,
  not after the failing page's whole retry budget (a run killed meanwhile
  does not re-send it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sncli.emulator.faults import Fault
from sncli.emulator.server import ServiceNowEmulator
from tests.integration.test_source_support import config_dict, keyset, stored_cursor, write_config

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC).replace(microsecond=0)
TOKEN_PATH = "/oauth_token.do"
OAUTH = {"type": "oauth", "grant_type": "password", "client_id": "sncli", "client_secret": "sncli-secret",
         "username": "admin", "password": "admin"}


def start_sncli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "sncli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "NO_COLOR": "1"})


def finish(proc: subprocess.Popen[str], within: float) -> tuple[str, str]:
    """The process's output once it exits; a process still running after ``within`` s is killed and fails the test."""
    try:
        return proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate(timeout=30)
        pytest.fail(f"sncli still running after {within:.0f} s (a hang); its log ends:\n{err[-3000:]}")


def wait_for(condition: Any, within: float, what: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"sncli exited ({proc.returncode}) before {what}: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {within:.0f} s")
        time.sleep(0.01)


def _config(tmp_path: Path, emulator: ServiceNowEmulator, bootstrap: str, tables: list[dict[str, Any]],
            servicenow: dict[str, Any], **kw: Any) -> Path:
    data = config_dict(emulator.url, bootstrap, tmp_path / "offsets.json", tables, **kw)
    data["servicenow"].update(servicenow)
    return write_config(tmp_path / "sncli.yaml", data)


def test_oauth_token_expiring_mid_run_with_a_failing_token_endpoint_does_not_deadlock_several_tables(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    """Issue 14.1: a refresh waiting for a retry or the rate limit while other tables need a token."""
    names = ["incident", "problem", "change_request"]
    for i, name in enumerate(names):
        emulator.state.generate(name, 1_500, at=NOW - timedelta(hours=1), spread_seconds=600, field_count=5,
                                record_bytes=100, seed=i)
    # Tokens live 1 s (the client refreshes at 0.9 s): several refreshes in a run of a few seconds.
    emulator.state.update_settings(token_ttl_seconds=1, read_latency_ms=30)
    # Every refresh after the first grant is answered 503 twice before it succeeds: a retry wait under way.
    emulator.state.faults.add(Fault(kind="status", status=503, path_prefix=TOKEN_PATH, skip=1, times=2))
    emulator.state.faults.add(Fault(kind="status", status=503, path_prefix=TOKEN_PATH, skip=4, times=2))
    emulator.state.faults.add(Fault(kind="status", status=503, path_prefix=TOKEN_PATH, skip=7, times=2))
    tables = [{"name": n, "topic": f"{unique_topic}-{n}"} for n in names]
    config = _config(
        tmp_path, emulator, kafka_bootstrap, tables, page_size=100,
        servicenow={"auth": OAUTH, "rate_limit": {"requests_per_second": 40, "burst": 2}, "timeout_seconds": 5,
                    "retry": {"max_attempts": 5, "initial_backoff_ms": 50, "max_backoff_ms": 200}},
    )

    proc = start_sncli("--json", "--config", str(config), "source", "poll")
    out, err = finish(proc, within=60)

    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out)
    for name in names:
        assert summary["tables"][name]["records"] == 1_500, summary
        assert stored_cursor(tmp_path / "offsets.json", name) == keyset(emulator.state.records(name))[-1]
    grants = [e for e in emulator.state.journal() if e.path == TOKEN_PATH]
    assert sum(1 for e in grants if e.status == 503) >= 2, "the token endpoint never failed: nothing was tested"
    assert sum(1 for e in grants if e.status == 200) >= 2, "the token never expired mid-run: nothing was tested"


def test_oauth_token_expiring_mid_run_does_not_deadlock_a_parallel_backfill(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    """Issue 14.1 for ``backfill --parallel``: its windows share one client, as a poll's tables do."""
    emulator.state.generate("incident", 6_000, at=NOW - timedelta(days=1), spread_seconds=80_000, field_count=5,
                            record_bytes=100, seed=5)
    emulator.state.update_settings(token_ttl_seconds=1, read_latency_ms=30)
    for skip in (1, 4, 7):
        emulator.state.faults.add(Fault(kind="status", status=503, path_prefix=TOKEN_PATH, skip=skip, times=2))
    config = _config(
        tmp_path, emulator, kafka_bootstrap, [{"name": "incident", "topic": unique_topic}], page_size=100,
        servicenow={"auth": OAUTH, "rate_limit": {"requests_per_second": 40, "burst": 2}, "timeout_seconds": 5,
                    "retry": {"max_attempts": 5, "initial_backoff_ms": 50, "max_backoff_ms": 200}},
    )

    proc = start_sncli("--json", "--config", str(config), "backfill", "--table", "incident", "--parallel", "3")
    out, err = finish(proc, within=60)

    assert proc.returncode == 0, err[-3000:]
    assert json.loads(out)["tables"]["incident"]["records"] == 6_000
    grants = [e for e in emulator.state.journal() if e.path == TOKEN_PATH]
    assert sum(1 for e in grants if e.status == 503) >= 2, "the token endpoint never failed: nothing was tested"
    assert sum(1 for e in grants if e.status == 200) >= 2, "the token never expired mid-run: nothing was tested"


def _silent_after_first_answer(emulator: ServiceNowEmulator) -> Fault:
    """The cycle's clock request is answered; every page request after it is taken and never answered."""
    return emulator.state.faults.add(
        Fault(kind="timeout_after_write", method="GET", table="incident", skip=1, times=None, latency_ms=120_000)
    )


def test_a_silent_answer_fails_the_run_within_timeout_times_attempts(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    """Issue 14.2: a request sent ahead was awaited 600 s, whatever servicenow.timeout_seconds said."""
    emulator.state.generate("incident", 50, at=NOW - timedelta(hours=1), spread_seconds=60, seed=1)
    fault = _silent_after_first_answer(emulator)
    config = _config(
        tmp_path, emulator, kafka_bootstrap, [{"name": "incident", "topic": unique_topic}],
        servicenow={"timeout_seconds": 1, "retry": {"max_attempts": 3, "initial_backoff_ms": 10,
                                                    "max_backoff_ms": 50}},
    )
    started = time.monotonic()
    proc = start_sncli("--json", "--config", str(config), "source", "poll")
    out, err = finish(proc, within=30)
    elapsed = time.monotonic() - started

    assert proc.returncode == 1, err[-3000:]
    table = json.loads(out)["tables"]["incident"]
    assert "gave up after 3 attempts" in table["error"] and "no answer" in table["error"], table
    assert fault.fired == 3  # each attempt was sent and went unanswered
    assert elapsed < 20  # 3 attempts of 1 s plus start-up; 600 s before the fix
    assert stored_cursor(tmp_path / "offsets.json", "incident") is None


@pytest.mark.parametrize("stop", ["sigterm", "max_seconds"])
def test_a_stop_is_honoured_while_waiting_for_a_silent_answer(
    stop: str, emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    """Issue 14.2: a run waiting for ServiceNow stops on SIGTERM / --max-seconds, long before its retry budget."""
    emulator.state.generate("incident", 50, at=NOW - timedelta(hours=1), spread_seconds=60, seed=1)
    fault = _silent_after_first_answer(emulator)
    config = _config(
        tmp_path, emulator, kafka_bootstrap, [{"name": "incident", "topic": unique_topic}],
        servicenow={"timeout_seconds": 30, "retry": {"max_attempts": 4}},  # a budget of 2 minutes
    )
    bound = ["--max-seconds", "3"] if stop == "max_seconds" else []
    proc = start_sncli("--json", "--config", str(config), "source", "poll", *bound)
    wait_for(lambda: fault.fired >= 1, 30, "page request", proc)
    asked = time.monotonic()
    if stop == "sigterm":
        proc.send_signal(signal.SIGTERM)
    out, err = finish(proc, within=20)

    assert time.monotonic() - asked < 10, err[-2000:]
    assert proc.returncode == 0, err[-3000:]
    table = json.loads(out)["tables"]["incident"]
    assert table["stopped"] == ("signal" if stop == "sigterm" else "max_seconds"), table
    assert (table["records"], table["error"]) == (0, None)
    assert fault.fired == 1  # stopped while waiting for the first attempt, no retry started
    assert stored_cursor(tmp_path / "offsets.json", "incident") is None


def test_a_page_is_stored_before_the_next_pages_retries_when_they_fail_fast(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    """Issue 14.4: page N's cursor waited for page N+1's retry budget; a run killed meanwhile re-sent page N."""
    emulator.state.generate("incident", 250, at=NOW - timedelta(hours=1), spread_seconds=600, seed=1)
    # The clock request and page 1 are answered; page 2 is refused at once, with Retry-After: 30.
    fault = emulator.state.faults.add(
        Fault(kind="status", status=503, method="GET", table="incident", skip=2, times=None, retry_after=30)
    )
    config = _config(
        tmp_path, emulator, kafka_bootstrap, [{"name": "incident", "topic": unique_topic}], page_size=100,
        servicenow={"retry": {"max_attempts": 3, "max_elapsed_seconds": 120}},
    )
    proc = start_sncli("--config", str(config), "source", "poll")
    wait_for(lambda: fault.fired >= 1, 30, "refused page 2", proc)
    offsets = tmp_path / "offsets.json"
    page_1_end = keyset(emulator.state.records("incident"))[99]
    # Page 1 is acknowledged within moments of page 2's refusal; page 2's retry waits 30 s.
    deadline = time.monotonic() + 10
    while stored_cursor(offsets, "incident") != page_1_end and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    stored = stored_cursor(offsets, "incident")
    proc.kill()  # the CronJob's deadline, mid-retry
    proc.communicate(timeout=30)

    assert fault.fired == 1  # still in page 2's first retry wait
    assert stored == page_1_end  # a next run starts at page 2: page 1 is not sent again
