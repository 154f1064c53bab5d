"""Authentication against the emulator: OAuth grants, proactive refresh, one refresh under concurrency, 401 handling.

The client's clock is injected (FakeTime), so "90% of the token's lifetime has
passed" is a statement about that clock; the emulator expires tokens on the
real monotonic clock, which the real-time test uses.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from sncli.emulator.faults import Fault
from sncli.emulator.server import ServiceNowEmulator
from sncli.emulator.state import JournalEntry
from sncli.servicenow.auth import OAuthAuthenticator
from sncli.servicenow.client import ServiceNowClient
from sncli.servicenow.errors import AuthError, RetriesExhaustedError
from tests.fixtures.fake_time import FakeTime

pytestmark = pytest.mark.integration

TOKEN_PATH = "/oauth_token.do"
SECRETS = ("sncli-secret", "s3cr3t-Pa55word")


def oauth_settings(url: str, **auth: Any) -> Any:
    from sncli.config import ServiceNowSettings

    data: dict[str, Any] = {
        "type": "oauth",
        "grant_type": "password",
        "client_id": "sncli",
        "client_secret": "sncli-secret",
        "username": "admin",
        "password": "admin",
    }
    data.update(auth)
    return ServiceNowSettings.model_validate(
        {
            "instance_url": url,
            "auth": data,
            "timeout_seconds": 5,
            "rate_limit": None,
            "retry": {"max_attempts": 4, "initial_backoff_ms": 10, "max_backoff_ms": 100},
        }
    )


def basic_settings(url: str, password: str = "admin") -> Any:
    from sncli.config import ServiceNowSettings

    return ServiceNowSettings.model_validate(
        {"instance_url": url, "auth": {"type": "basic", "username": "admin", "password": password},
         "rate_limit": None}
    )


def settled(emulator: ServiceNowEmulator) -> list[JournalEntry]:
    """The journal once it stops growing: the emulator records a request just after answering it."""
    previous = -1
    journal = emulator.state.journal()
    deadline = time.monotonic() + 3
    while len(journal) != previous and time.monotonic() < deadline:
        previous = len(journal)
        time.sleep(0.05)
        journal = emulator.state.journal()
    return journal


def clear(emulator: ServiceNowEmulator) -> None:
    settled(emulator)
    emulator.state.clear_journal()


def tokens(journal: list[JournalEntry]) -> list[JournalEntry]:
    return [e for e in journal if e.path == TOKEN_PATH]


def table_calls(journal: list[JournalEntry]) -> list[JournalEntry]:
    return [e for e in journal if e.path.startswith("/api/now/table/")]


def oauth_client(emulator: ServiceNowEmulator, t: FakeTime, **auth: Any) -> ServiceNowClient:
    return ServiceNowClient(oauth_settings(emulator.url, **auth), clock=t.clock, sleep=t.sleep)


def test_password_grant_gives_a_bearer_token_that_is_reused(emulator: ServiceNowEmulator) -> None:
    emulator.state.insert("incident", {"short_description": "x"})
    t = FakeTime()
    with oauth_client(emulator, t) as client:
        for _ in range(5):
            assert len(client.list_page("incident", query="", limit=10).records) == 1
    journal = settled(emulator)
    assert [e.grant_type for e in tokens(journal)] == ["password"]
    calls = table_calls(journal)
    assert len(calls) == 5 and all(e.auth == "bearer" and e.status == 200 for e in calls)


def test_client_credentials_grant(emulator: ServiceNowEmulator) -> None:
    t = FakeTime()
    with oauth_client(emulator, t, grant_type="client_credentials", username=None, password=None) as client:
        client.list_page("incident", query="", limit=1)
    assert [e.grant_type for e in tokens(settled(emulator))] == ["client_credentials"]


def test_token_is_refreshed_before_it_expires_at_90_percent_of_its_ttl(emulator: ServiceNowEmulator) -> None:
    emulator.state.update_settings(token_ttl_seconds=100)
    t = FakeTime()
    with oauth_client(emulator, t) as client:
        client.list_page("incident", query="", limit=1)
        t.now = 89.9  # below 90%: the cached token is used
        client.list_page("incident", query="", limit=1)
        assert len(tokens(settled(emulator))) == 1
        t.now = 90.0  # 90% reached: refreshed before the request that would use it
        client.list_page("incident", query="", limit=1)
    journal = settled(emulator)
    assert [e.grant_type for e in tokens(journal)] == ["password", "refresh_token"]  # the refresh token first
    # Order: the refresh happened before the third table call, and no call was ever refused.
    paths = [e.path for e in journal]
    assert paths[-2:] == [TOKEN_PATH, "/api/now/table/incident"]
    assert all(e.status == 200 for e in journal)


def test_proactive_refresh_in_real_time_beats_the_server_side_expiry(emulator: ServiceNowEmulator) -> None:
    """Token valid 1 s on the emulator's clock: a call at ~0.93 s refreshes first, so nothing is ever refused."""
    emulator.state.update_settings(token_ttl_seconds=1)
    with ServiceNowClient(oauth_settings(emulator.url)) as client:
        client.list_page("incident", query="", limit=1)
        time.sleep(0.93)
        client.list_page("incident", query="", limit=1)
        time.sleep(0.93)
        client.list_page("incident", query="", limit=1)
    journal = settled(emulator)
    assert len(tokens(journal)) == 3
    assert [e.status for e in table_calls(journal)] == [200, 200, 200]


def test_eight_concurrent_threads_trigger_exactly_one_refresh(emulator: ServiceNowEmulator) -> None:
    emulator.state.update_settings(token_ttl_seconds=100)
    t = FakeTime()
    with oauth_client(emulator, t) as client:
        client.list_page("incident", query="", limit=1)
        clear(emulator)
        # A slow token endpoint keeps the refresh in flight while all threads arrive.
        emulator.state.faults.add(Fault(kind="latency", path_prefix=TOKEN_PATH, latency_ms=300, times=None))
        t.now = 95.0
        barrier = threading.Barrier(8)
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                barrier.wait()
                client.list_page("incident", query="", limit=1)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=30)
    assert errors == []
    journal = settled(emulator)
    assert len(tokens(journal)) == 1
    calls = table_calls(journal)
    assert len(calls) == 8 and all(e.status == 200 for e in calls)
    # Every call after the refresh used the one new token: no 401 anywhere.
    assert isinstance(client.auth, OAuthAuthenticator)
    assert client.auth.token_requests == 2


def test_a_401_forces_one_refresh_and_one_retry(emulator: ServiceNowEmulator) -> None:
    t = FakeTime()
    with oauth_client(emulator, t) as client:
        client.list_page("incident", query="", limit=1)
        clear(emulator)
        emulator.state.tokens.expire_all()  # revoked server-side, still fresh in the client's cache
        page = client.list_page("incident", query="", limit=1)
    assert page.records == []
    journal = settled(emulator)
    assert [(e.path, e.status) for e in journal] == [
        ("/api/now/table/incident", 401),
        (TOKEN_PATH, 200),
        ("/api/now/table/incident", 200),
    ]
    assert t.sleeps == []  # re-authenticating is not a backoff


def test_a_second_401_is_an_auth_error_not_a_loop(emulator: ServiceNowEmulator) -> None:
    t = FakeTime()
    with oauth_client(emulator, t) as client:
        client.list_page("incident", query="", limit=1)
        clear(emulator)
        emulator.state.faults.add(Fault(kind="status", status=401, method="GET", times=None))
        with pytest.raises(AuthError) as caught:
            client.list_page("incident", query="", limit=1)
    assert caught.value.status == 401
    assert "even with a new token" in str(caught.value)
    journal = settled(emulator)
    assert [(e.path, e.status) for e in journal] == [
        ("/api/now/table/incident", 401),
        (TOKEN_PATH, 200),
        ("/api/now/table/incident", 401),
    ]


def test_basic_auth_401_fails_at_once(emulator: ServiceNowEmulator) -> None:
    with ServiceNowClient(basic_settings(emulator.url, password="wrong")) as client, pytest.raises(AuthError) as caught:
        client.get("incident", "0" * 32)
    assert caught.value.status == 401 and caught.value.attempts == 1
    assert len(settled(emulator)) == 1
    assert "wrong" not in str(caught.value)


def test_refused_refresh_token_falls_back_to_the_main_grant(emulator: ServiceNowEmulator) -> None:
    emulator.state.update_settings(token_ttl_seconds=100)
    t = FakeTime()
    with oauth_client(emulator, t) as client:
        client.list_page("incident", query="", limit=1)
        emulator.state.tokens.reset()  # every refresh token the client holds is now unknown
        t.now = 95.0
        client.list_page("incident", query="", limit=1)
    journal = settled(emulator)
    assert [(e.grant_type, e.status) for e in tokens(journal)] == [
        ("password", 200),
        ("refresh_token", 401),
        ("password", 200),
    ]
    assert table_calls(journal)[-1].status == 200


def test_configured_refresh_token_grant_that_is_refused_is_an_auth_error(emulator: ServiceNowEmulator) -> None:
    t = FakeTime()
    client = oauth_client(
        emulator, t, grant_type="refresh_token", username=None, password=None, refresh_token="s3cr3t-Pa55word"
    )
    with client, pytest.raises(AuthError) as caught:
        client.list_page("incident", query="", limit=1)
    assert caught.value.endpoint == "oauth" and caught.value.status == 401
    assert "s3cr3t-Pa55word" not in str(caught.value)
    assert len(tokens(settled(emulator))) == 1  # no fallback exists, no loop


def test_bad_client_secret_is_an_auth_error_without_the_secret(
    emulator: ServiceNowEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    t = FakeTime()
    client = oauth_client(emulator, t, client_secret="s3cr3t-Pa55word")
    with client, pytest.raises(AuthError) as caught:
        client.list_page("incident", query="", limit=1)
    text = f"{caught.value} {caught.value!r} {caught.value.detail} {client.auth!r} " + caplog.text
    for secret in SECRETS:
        assert secret not in text
    assert "access_denied" in str(caught.value)
    assert table_calls(settled(emulator)) == []


def test_token_endpoint_5xx_is_retried(emulator: ServiceNowEmulator) -> None:
    emulator.state.faults.add(Fault(kind="status", status=503, path_prefix=TOKEN_PATH, times=2))
    t = FakeTime()
    with oauth_client(emulator, t) as client:
        client.list_page("incident", query="", limit=1)
    assert [e.status for e in tokens(settled(emulator))] == [503, 503, 200]
    assert len(t.sleeps) == 2


def test_token_endpoint_down_for_good_exhausts_retries(emulator: ServiceNowEmulator) -> None:
    emulator.state.faults.add(Fault(kind="status", status=500, path_prefix=TOKEN_PATH, times=None))
    t = FakeTime()
    with oauth_client(emulator, t) as client, pytest.raises(RetriesExhaustedError) as caught:
        client.list_page("incident", query="", limit=1)
    assert caught.value.endpoint == "oauth" and caught.value.attempts == 4
    assert len(tokens(settled(emulator))) == 4


def test_no_secret_or_token_in_logs_through_refreshes_and_failures(
    emulator: ServiceNowEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator.state.update_settings(token_ttl_seconds=100)
    t = FakeTime()
    with oauth_client(emulator, t, password="admin") as client:
        client.list_page("incident", query="", limit=1)
        emulator.state.tokens.expire_all()
        client.list_page("incident", query="", limit=1)
        emulator.state.faults.add(Fault(kind="status", status=503, method="GET", times=2))
        client.list_page("incident", query="", limit=1)
        assert isinstance(client.auth, OAuthAuthenticator)
        token = client.auth.authorization().split(" ", 1)[1]
    assert "retry" in caplog.text  # the retries were logged...
    for secret in ("sncli-secret", token):
        assert secret not in caplog.text  # ...without any credential
