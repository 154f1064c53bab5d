"""The emulator's fault injector over real HTTP: what a client sees for each kind of fault."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import pytest
import requests

from sncli.emulator.faults import Fault
from sncli.emulator.server import ServiceNowEmulator

pytestmark = pytest.mark.integration

AUTH = ("admin", "admin")


def url(emu: ServiceNowEmulator, sys_id: str | None = None) -> str:
    base = f"{emu.url}/api/now/table/incident"
    return f"{base}/{sys_id}" if sys_id else base


@pytest.fixture
def session() -> requests.Session:
    s = requests.Session()
    s.auth = AUTH
    return s


@pytest.mark.parametrize("status", [500, 502, 503])
def test_status_fault_then_recovery(emulator: ServiceNowEmulator, session: requests.Session, status: int) -> None:
    emulator.state.faults.add(Fault("status", status=status, times=2))
    assert [session.get(url(emulator)).status_code for _ in range(3)] == [status, status, 200]
    assert session.get(url(emulator)).status_code == 200
    faults = [e.fault for e in emulator.state.journal()]
    assert faults == ["status", "status", None, None]


def test_status_fault_does_not_apply_the_write(emulator: ServiceNowEmulator, session: requests.Session) -> None:
    emulator.state.faults.add(Fault("status", status=503, method="POST"))
    r = session.post(url(emulator), json={"a": "1"})
    assert r.status_code == 503 and r.json()["status"] == "failure"
    assert emulator.state.count("incident") == 0


def test_429_with_retry_after_seconds_and_http_date(emulator: ServiceNowEmulator, session: requests.Session) -> None:
    emulator.state.clock.freeze("2026-02-02 02:02:02")
    emulator.state.faults.add(Fault("status", status=429, retry_after=3))
    emulator.state.faults.add(Fault("status", status=429, retry_after=7, retry_after_http_date=True))
    emulator.state.faults.add(Fault("status", status=429, retry_after="Wed, 21 Oct 2026 07:28:00 GMT"))
    first, second, third = (session.get(url(emulator)) for _ in range(3))
    assert (first.status_code, first.headers["Retry-After"]) == (429, "3")
    assert second.status_code == 429
    waited = parsedate_to_datetime(second.headers["Retry-After"]) - parsedate_to_datetime(second.headers["Date"])
    assert waited.total_seconds() == 7
    assert third.headers["Retry-After"] == "Wed, 21 Oct 2026 07:28:00 GMT"


def test_401_fault_even_with_good_credentials(emulator: ServiceNowEmulator, session: requests.Session) -> None:
    emulator.state.faults.add(Fault("status", status=401))
    r = session.get(url(emulator))
    assert r.status_code == 401 and r.json()["error"]["message"] == "User Not Authenticated"
    assert session.get(url(emulator)).status_code == 200


def test_fault_on_token_endpoint(emulator: ServiceNowEmulator) -> None:
    emulator.state.faults.add(Fault("status", status=503, path_prefix="/oauth_token.do"))
    form = {"grant_type": "client_credentials", "client_id": "sncli", "client_secret": "sncli-secret"}
    assert requests.post(f"{emulator.url}/oauth_token.do", data=form).status_code == 503
    assert requests.post(f"{emulator.url}/oauth_token.do", data=form).status_code == 200
    assert emulator.state.token_issue_count() == 1


def test_malformed_body_is_200_and_not_json(emulator: ServiceNowEmulator, session: requests.Session) -> None:
    emulator.state.faults.add(Fault("malformed", method="GET"))
    r = session.get(url(emulator))
    assert r.status_code == 200
    with pytest.raises(requests.JSONDecodeError):
        r.json()
    assert int(r.headers["Content-Length"]) == len(r.content)


def test_truncated_body_breaks_the_read(emulator: ServiceNowEmulator, session: requests.Session) -> None:
    emulator.state.generate("incident", 20)
    emulator.state.faults.add(Fault("truncated", method="GET"))
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        session.get(url(emulator))
    assert len(session.get(url(emulator)).json()["result"]) == 20


def test_latency_fault_and_global_latency(emulator: ServiceNowEmulator, session: requests.Session) -> None:
    emulator.state.faults.add(Fault("latency", latency_ms=300))
    started = time.monotonic()
    assert session.get(url(emulator)).status_code == 200
    assert time.monotonic() - started >= 0.3
    emulator.state.update_settings(write_latency_ms=250)
    started = time.monotonic()
    session.get(url(emulator))
    assert time.monotonic() - started < 0.25  # reads are not slowed by the write latency
    started = time.monotonic()
    assert session.post(url(emulator), json={"a": "1"}).status_code == 201
    assert time.monotonic() - started >= 0.25
    emulator.state.update_settings(read_latency_ms=200)
    started = time.monotonic()
    session.get(url(emulator))
    assert time.monotonic() - started >= 0.2


def test_configured_latency_counts_the_emulators_own_work(
    emulator: ServiceNowEmulator, session: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The latency is arrival-to-answer: slow work inside it does not make the answer later still."""
    emulator.state.generate("incident", 5)
    real_select = emulator.state.select

    def slow_select(*args: object, **kwargs: object) -> object:
        time.sleep(0.3)
        return real_select(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(emulator.state, "select", slow_select)
    emulator.state.update_settings(read_latency_ms=400)
    started = time.monotonic()
    assert len(session.get(url(emulator)).json()["result"]) == 5
    took = time.monotonic() - started
    assert 0.4 <= took < 0.65  # sleeping first, then working, took 0.7 s


def test_timeout_after_write_applies_the_write(emulator: ServiceNowEmulator, session: requests.Session) -> None:
    emulator.state.faults.add(Fault("timeout_after_write", method="POST", latency_ms=1500))
    with pytest.raises(requests.exceptions.ReadTimeout):
        session.post(url(emulator), json={"number": "INC1"}, timeout=0.5)
    assert [r["number"] for r in emulator.state.records("incident")] == ["INC1"]


def test_timeout_after_write_with_close_drops_the_answer(
    emulator: ServiceNowEmulator, session: requests.Session
) -> None:
    sid = emulator.state.insert("incident", {"state": "1"})["sys_id"]
    emulator.state.faults.add(Fault("timeout_after_write", method="PATCH", close=True))
    with pytest.raises(requests.exceptions.ConnectionError):
        session.patch(url(emulator, sid), json={"state": "2"}, timeout=5)
    assert emulator.state.get("incident", sid)["state"] == "2"  # type: ignore[index]
    assert emulator.state.journal()[-1].status == 0


def test_reset_drops_the_connection_without_applying(emulator: ServiceNowEmulator, session: requests.Session) -> None:
    emulator.state.faults.add(Fault("reset", method="POST"))
    with pytest.raises(requests.exceptions.ConnectionError):
        session.post(url(emulator), json={"a": "1"}, timeout=5)
    assert emulator.state.count("incident") == 0
    assert session.post(url(emulator), json={"a": "1"}).status_code == 201
    assert [(e.status, e.fault) for e in emulator.state.journal()] == [(0, "reset"), (201, None)]


def test_short_page_returns_fewer_records_than_the_limit(
    emulator: ServiceNowEmulator, session: requests.Session
) -> None:
    emulator.state.generate("incident", 50)
    emulator.state.faults.add(Fault("short_page", table="incident", records=3))
    emulator.state.faults.add(Fault("short_page", table="incident"))
    params = {"sysparm_limit": "10", "sysparm_query": "ORDERBYsys_updated_on^ORDERBYsys_id"}
    counts = [len(session.get(url(emulator), params=params).json()["result"]) for _ in range(3)]
    assert counts == [3, 5, 10]


def test_probability_faults_are_seeded(emulator: ServiceNowEmulator, session: requests.Session) -> None:
    def run() -> list[int]:
        emulator.state.faults.clear()
        emulator.state.faults.add(Fault("status", status=503, probability=0.5, seed=11, times=None))
        return [session.get(url(emulator)).status_code for _ in range(20)]

    first = run()
    assert first == run()
    assert 503 in first and 200 in first


def test_table_filter(emulator: ServiceNowEmulator, session: requests.Session) -> None:
    emulator.state.faults.add(Fault("status", status=500, table="problem", times=None))
    assert session.get(url(emulator)).status_code == 200
    assert session.get(f"{emulator.url}/api/now/v2/table/problem").status_code == 500


def test_row_acls_hide_rows_after_the_limit_as_servicenow_does(
    emulator: ServiceNowEmulator, session: requests.Session
) -> None:
    # 30 rows, one second each; rows 10..24 hidden: sysparm_limit counts them, the answer leaves them out.
    rows = emulator.state.generate("incident", 30, at="2024-01-01 00:00:00", spread_seconds=30)
    ordered = [r["sys_id"] for r in emulator.state.records("incident")]
    assert sorted(ordered) == sorted(rows)
    emulator.state.update_settings(hidden_rows={"incident": "sys_updated_on>=2024-01-01 00:00:10^"
                                                            "sys_updated_on<2024-01-01 00:00:25"})
    params = {"sysparm_limit": "10", "sysparm_query": "ORDERBYsys_updated_on^ORDERBYsys_id"}
    pages = [session.get(url(emulator), params={**params, "sysparm_offset": str(o)}) for o in (0, 10, 20)]
    assert [[r["sys_id"] for r in p.json()["result"]] for p in pages] == [ordered[:10], [], ordered[25:]]
    assert {p.headers["X-Total-Count"] for p in pages} == {"30"}  # the count is taken before the ACLs
    assert 'rel="next"' in pages[1].headers["Link"]  # an empty page is not the last one
    assert 'rel="next"' not in pages[2].headers["Link"]
    assert session.get(url(emulator, ordered[12])).status_code == 404
    assert session.get(url(emulator, ordered[9])).status_code == 200
