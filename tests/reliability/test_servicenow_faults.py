"""``source poll`` against a misbehaving ServiceNow: nothing lost, no cursor past unwritten data, bounded retries.

Each case injects faults into the emulator and runs poll cycles. After every
run, whatever its exit code, the stored cursor must not be past data that is
not in Kafka; the faults are then lifted and the next run must finish (exit
0) with every record in Kafka. The request journal shows each page request was
tried at most ``retry.max_attempts`` times (+1 for a re-authenticated retry
after a 401), and that a 429 waited its ``Retry-After``.

Covered elsewhere (not repeated): client-level retry/backoff/Retry-After/POST
rules (tests/integration/test_sn_client.py), OAuth refresh rules
(tests/integration/test_sn_auth.py), short pages not ending a poll
(tests/integration/test_source_poll.py::test_short_pages_are_not_the_end), the
sink's ambiguous POST policies ``fail`` and ``lookup``
(tests/integration/test_sink_failures.py).
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from sncli.config import ServiceNowSettings, parse_settings
from sncli.emulator.faults import Fault
from sncli.emulator.server import ServiceNowEmulator
from sncli.servicenow.client import ServiceNowClient
from sncli.source.cycle import run_poll
from sncli.source.outcome import RunSummary
from tests.fixtures.kafka import read_all
from tests.reliability.support import keyset, source_config, stored_cursor

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
RECORDS = 2_000
PAGE = 100
MAX_ATTEMPTS = 4
OAUTH = {"type": "oauth", "grant_type": "password", "client_id": "sncli", "client_secret": "sncli-secret",
         "username": "admin", "password": "admin"}


@dataclass
class Case:
    faults: list[Fault]
    auth: str = "basic"
    during: Callable[[ServiceNowEmulator], None] | None = None  # runs on a thread while the first run runs
    reauth: int = 0  # extra attempts a request may take (a 401 answered by a token refresh)
    must_finish_first_run: bool = True  # the faults are within the retry budget
    retry_after: float | None = None
    timeout_seconds: float = 5


def _get(table: str = "incident", **kw: Any) -> Fault:
    return Fault(method="GET", table=table, **kw)


def _pages_seen(emulator: ServiceNowEmulator) -> int:
    return sum(1 for e in emulator.state.journal() if e.method == "GET" and "sysparm_query" in e.query)


def _expire_tokens_after_pages(pages: int) -> Callable[[ServiceNowEmulator], None]:
    def during(emulator: ServiceNowEmulator) -> None:
        deadline = time.monotonic() + 30
        while _pages_seen(emulator) < pages and time.monotonic() < deadline:
            time.sleep(0.005)
        emulator.state.tokens.expire_all()

    return during


CASES: dict[str, Case] = {
    "429 storm with Retry-After": Case(
        [_get(kind="status", status=429, retry_after=1, probability=0.3, seed=3, times=3)], retry_after=1),
    "429 storm with an HTTP-date Retry-After": Case(
        [_get(kind="status", status=429, retry_after=1, retry_after_http_date=True, skip=4, times=2)]),
    "bursts of 500/502/503": Case([
        _get(kind="status", status=500, skip=2, times=3),
        _get(kind="status", status=502, skip=8, times=3),
        _get(kind="status", status=503, skip=14, times=3),
    ]),
    "a 5xx burst longer than the retry budget": Case(
        [_get(kind="status", status=503, skip=6, times=MAX_ATTEMPTS + 2)], must_finish_first_run=False),
    "an OAuth token that expires mid-run": Case([], auth="oauth", during=_expire_tokens_after_pages(6), reauth=1),
    "401 once (OAuth)": Case([_get(kind="status", status=401, skip=5, times=1)], auth="oauth", reauth=1),
    "401 once (basic auth: fails, no refresh possible)": Case(
        [_get(kind="status", status=401, skip=5, times=1)], must_finish_first_run=False),
    "malformed JSON": Case([_get(kind="malformed", skip=3, times=2), _get(kind="malformed", skip=9, times=1)]),
    "truncated body": Case([_get(kind="truncated", skip=3, times=2), _get(kind="truncated", skip=12, times=1)]),
    "connection reset": Case([_get(kind="reset", skip=2, times=2), _get(kind="reset", skip=10, times=3)]),
    "short (ACL) pages everywhere": Case([_get(kind="short_page", probability=0.5, seed=5, times=None, records=13)]),
    "an answer slower than the timeout": Case([_get(kind="latency", latency_ms=1_500, skip=4, times=1)],
                                              timeout_seconds=1),
    "token endpoint 503 while refreshing": Case(
        [Fault(kind="status", status=503, path_prefix="/oauth_token.do", skip=1, times=2)],
        auth="oauth", during=_expire_tokens_after_pages(4), reauth=1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_source_poll_under_servicenow_faults_loses_nothing(
    name: str, emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    case = CASES[name]
    emulator.state.generate("incident", RECORDS, at=NOW - timedelta(hours=3), spread_seconds=RECORDS // 3,
                            field_count=6, record_bytes=120, seed=11)
    expected = keyset(emulator.state.records("incident"))
    topic = f"h9-sn-{uuid.uuid4().hex[:8]}"
    offsets = tmp_path / "offsets.json"
    auth = OAUTH if case.auth == "oauth" else None
    settings = parse_settings(source_config(
        emulator.url, kafka_bootstrap, offsets, [{"name": "incident", "topic": topic}], page_size=PAGE, auth=auth,
        timeout_seconds=case.timeout_seconds,
        retry={"max_attempts": MAX_ATTEMPTS, "initial_backoff_ms": 10, "max_backoff_ms": 200,
               "max_elapsed_seconds": 30}), {})
    faults = [Fault(**{k: v for k, v in asdict(f).items() if k not in ("fired", "seen")}) for f in case.faults]
    for fault in faults:
        emulator.state.faults.add(fault)

    failed_runs = 0
    for run in range(3):
        emulator.state.clear_journal()
        helper = None
        if run == 0 and case.during is not None:
            helper = threading.Thread(target=case.during, args=(emulator,), daemon=True)
            helper.start()
        summary = run_poll(settings)
        if helper is not None:
            helper.join(30)
        _check_no_cursor_past_unwritten(summary, offsets, expected, kafka_bootstrap, topic)
        _check_request_bounds(emulator, MAX_ATTEMPTS + case.reauth, case.retry_after)
        if run == 0:  # the faults really happened
            assert all(f.fired > 0 for f in faults), [f.to_dict() for f in faults]
            if case.reauth:
                assert any(e.status == 401 for e in emulator.state.journal())
        if summary.exit_code == 0:
            break
        failed_runs += 1
        assert summary.exit_code == 1, summary.to_json()
        assert summary.tables["incident"].error, summary.to_json()
        emulator.state.faults.clear()  # the outage ends; the next scheduled run must catch up
    if case.must_finish_first_run:
        assert failed_runs == 0, f"{name}: faults within the retry budget must not fail the run"
    else:
        assert failed_runs == 1, f"{name}: expected the first run to fail"
    assert summary.exit_code == 0, summary.to_json()

    counts = _in_kafka(kafka_bootstrap, topic, len(expected))
    assert set(counts) == set(expected)  # 0 lost
    assert sum(c - 1 for c in counts.values()) <= PAGE * failed_runs  # a failed run re-sends at most its page
    assert stored_cursor(offsets, "incident") == expected[-1]


def _in_kafka(bootstrap: str, topic: str, expected: int | None = None) -> Counter[tuple[str, str]]:
    records = read_all(bootstrap, topic, timeout=60, expected=expected)
    return Counter((v["sys_updated_on"], v["sys_id"]) for v in (orjson.loads(r.value or b"null") for r in records))


def _check_no_cursor_past_unwritten(
    summary: RunSummary, offsets: Path, expected: list[tuple[str, str]], bootstrap: str, topic: str
) -> None:
    cursor = stored_cursor(offsets, "incident")
    if cursor is None:
        return
    covered = [k for k in expected if k <= cursor]
    missing = set(covered) - set(_in_kafka(bootstrap, topic, len(covered)))
    assert not missing, f"cursor {cursor} is past {len(missing)} records that are not in Kafka ({summary.to_json()})"


def _check_request_bounds(emulator: ServiceNowEmulator, max_tries: int, retry_after: float | None) -> None:
    """Each page (one sysparm_query) was requested at most ``max_tries`` times; 429s waited Retry-After."""
    by_query: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
    for entry in emulator.state.journal():
        if entry.method == "GET" and "sysparm_query" in entry.query:
            by_query[entry.query["sysparm_query"]].append((entry.at, entry.status))
    assert by_query
    for query, tries in by_query.items():
        assert len(tries) <= max_tries, (query, tries)
        if retry_after is not None:
            for (at, status), (next_at, _) in itertools.pairwise(tries):
                if status == 429:
                    assert (next_at - at).total_seconds() >= retry_after * 0.95, (query, tries)


# --------------------------------------------------------------------------- sink: ambiguous POST, policy "retry"


def _sink_client(emulator: ServiceNowEmulator) -> ServiceNowClient:
    cfg = ServiceNowSettings.model_validate({
        "instance_url": emulator.url, "auth": {"type": "basic", "username": "admin", "password": "admin"},
        "rate_limit": None, "timeout_seconds": 1,
        "retry": {"max_attempts": MAX_ATTEMPTS, "initial_backoff_ms": 1, "max_backoff_ms": 5}})
    return ServiceNowClient(cfg)


def test_ambiguous_post_with_policy_retry_posts_again_within_its_bound(emulator: ServiceNowEmulator) -> None:
    """``ambiguous: retry`` re-POSTs after an answer that never came: at-least-once (a duplicate is the
    documented price), and never more than AMBIGUOUS_ROUNDS POSTs for one record."""
    from sncli.config import SinkTopic
    from sncli.sink.resolve import Write
    from sncli.sink.writer import AMBIGUOUS_ROUNDS, WriteFailed, apply_write

    topic = SinkTopic(topic="changes", table="incident", ambiguous="retry")
    client = _sink_client(emulator)
    try:
        # The first POST is applied, then the connection drops without an answer; the second is answered.
        emulator.state.faults.add(Fault(kind="timeout_after_write", close=True, method="POST", table="incident",
                                        times=1))
        outcome = apply_write(client, Write("POST", "incident", None, {"short_description": "once"}), topic)
        assert outcome.outcome == "written"
        posts = [e for e in emulator.state.journal() if e.method == "POST"]
        assert len(posts) == 2
        assert [r["short_description"] for r in emulator.state.records("incident")] == ["once", "once"]

        # Every answer lost: the record gives up after AMBIGUOUS_ROUNDS POSTs as an 'ambiguous' failure (DLQ).
        emulator.state.clear_journal()
        emulator.state.faults.add(Fault(kind="timeout_after_write", close=True, method="POST", table="incident",
                                        times=None))
        with pytest.raises(WriteFailed) as info:
            apply_write(client, Write("POST", "incident", None, {"short_description": "lost"}), topic)
        assert info.value.failure.error_class == "ambiguous"
        assert len([e for e in emulator.state.journal() if e.method == "POST"]) == AMBIGUOUS_ROUNDS
    finally:
        client.close()
