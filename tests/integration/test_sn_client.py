"""ServiceNowClient against real HTTP servers on 127.0.0.1: TLS, proxy, and (below) the emulator's faults."""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sncli.config import ServiceNowSettings
from sncli.emulator.faults import Fault
from sncli.emulator.server import ServiceNowEmulator
from sncli.emulator.state import JournalEntry
from sncli.metrics import RunMetrics
from sncli.servicenow.backoff import BackoffPolicy
from sncli.servicenow.client import ServiceNowClient
from sncli.servicenow.errors import (
    AmbiguousWriteError,
    BadRequestError,
    CallAbandoned,
    ForbiddenError,
    MalformedResponseError,
    NotFoundError,
    RetriesExhaustedError,
    ServerError,
    TransportError,
)
from tests.fixtures.fake_time import FakeTime

pytestmark = pytest.mark.integration


def sn_settings(url: str, **overrides: Any) -> ServiceNowSettings:
    data: dict[str, Any] = {
        "instance_url": url,
        "auth": {"type": "basic", "username": "admin", "password": "admin"},
        "timeout_seconds": 5,
        "rate_limit": None,
        "retry": {"max_attempts": 4, "initial_backoff_ms": 100, "max_backoff_ms": 1000, "max_elapsed_seconds": 60},
    }
    data.update(overrides)
    return ServiceNowSettings.model_validate(data)


# ------------------------------------------------------------------ a tiny Table API over TLS


def _self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every GET with an empty Table API page and records the request line."""

    seen: list[str]

    def do_GET(self) -> None:
        self.server.seen.append(self.path)  # type: ignore[attr-defined]
        body = orjson.dumps({"result": [{"sys_id": "a" * 32}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Date", formatdate(usegmt=True))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server:
    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        self.httpd.seen = []  # type: ignore[attr-defined]
        self.httpd.daemon_threads = True
        if context is not None:
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def seen(self) -> list[str]:
        return self.httpd.seen  # type: ignore[attr-defined, no-any-return]

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[_Server, Path]]:
    cert, key = _self_signed(tmp_path, "server")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = _Server(ctx)
    yield server, cert
    server.stop()


def test_tls_verification_is_on_by_default_and_an_untrusted_cert_is_refused_without_retries(
    tls_server: tuple[_Server, Path],
) -> None:
    server, _ = tls_server
    t = FakeTime()
    client = ServiceNowClient(sn_settings(f"https://127.0.0.1:{server.port}"), clock=t.clock, sleep=t.sleep)
    with client, pytest.raises(TransportError) as caught:
        client.list_page("incident", query="", limit=1)
    assert caught.value.attempts == 1 and t.sleeps == []  # a TLS failure is not retried
    assert "tls" in str(caught.value).lower() or "certificate" in str(caught.value).lower()
    assert server.seen == []  # no request got through


def test_tls_verify_false_accepts_the_untrusted_cert(tls_server: tuple[_Server, Path]) -> None:
    server, _ = tls_server
    settings = sn_settings(f"https://127.0.0.1:{server.port}", tls={"verify": False})
    with ServiceNowClient(settings) as client:
        page = client.list_page("incident", query="", limit=1)
    assert page.records == [{"sys_id": "a" * 32}]
    assert len(server.seen) == 1


def test_tls_ca_bundle_trusts_the_cert(tls_server: tuple[_Server, Path]) -> None:
    server, cert = tls_server
    settings = sn_settings(f"https://127.0.0.1:{server.port}", tls={"ca_bundle": str(cert)})
    with ServiceNowClient(settings) as client:
        assert client.list_page("incident", query="", limit=1).records[0]["sys_id"] == "a" * 32


def test_a_missing_ca_bundle_file_is_a_transport_error_not_a_traceback(tls_server: tuple[_Server, Path]) -> None:
    server, cert = tls_server
    t = FakeTime()
    settings = sn_settings(f"https://127.0.0.1:{server.port}", tls={"ca_bundle": str(cert) + ".missing"})
    client = ServiceNowClient(settings, clock=t.clock, sleep=t.sleep)
    with client, pytest.raises(TransportError) as caught:
        client.list_page("incident", query="", limit=1)
    assert caught.value.attempts == 1 and "server.crt.missing" in str(caught.value)  # names the file


@pytest.fixture
def mtls_server(tmp_path: Path) -> Iterator[tuple[_Server, dict[str, str]]]:
    """A server that requires a client certificate, and the ``tls`` settings that present one."""
    server_cert, server_key = _self_signed(tmp_path, "server")
    client_cert, client_key = _self_signed(tmp_path, "client")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(server_cert, server_key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(client_cert)
    server = _Server(ctx)
    yield server, {"ca_bundle": str(server_cert), "client_cert": str(client_cert), "client_key": str(client_key)}
    server.stop()


def test_client_certificate_is_presented_for_mutual_tls(mtls_server: tuple[_Server, dict[str, str]]) -> None:
    server, mtls = mtls_server
    url = f"https://127.0.0.1:{server.port}"
    with ServiceNowClient(sn_settings(url, tls=mtls)) as client:
        assert len(client.list_page("incident", query="", limit=1).records) == 1
    t = FakeTime()
    no_cert = sn_settings(url, tls={"ca_bundle": mtls["ca_bundle"]}, retry={"max_attempts": 2})
    with ServiceNowClient(no_cert, clock=t.clock, sleep=t.sleep) as client, pytest.raises(TransportError):
        client.list_page("incident", query="", limit=1)
    assert len(server.seen) == 1


def test_proxy_setting_routes_requests_through_the_proxy() -> None:
    proxy = _Server()  # a plain HTTP server standing in for the proxy: it sees absolute-form request targets
    try:
        settings = sn_settings("http://instance.invalid", proxy=f"http://127.0.0.1:{proxy.port}")
        with ServiceNowClient(settings) as client:
            client.list_page("incident", query="active=true", limit=5)
        assert len(proxy.seen) == 1
        assert proxy.seen[0].startswith("http://instance.invalid/api/now/table/incident?")
        assert "sysparm_query=active%3Dtrue" in proxy.seen[0]
    finally:
        proxy.stop()


# ------------------------------------------------------------------ against the emulator

SYS_ID_RE = re.compile(r"[0-9a-f]{32}")


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


def wait_for(emulator: ServiceNowEmulator, count: int, timeout: float = 5.0) -> list[JournalEntry]:
    """The journal once it holds at least ``count`` entries (a hung answer is journaled when it ends)."""
    deadline = time.monotonic() + timeout
    journal = emulator.state.journal()
    while len(journal) < count and time.monotonic() < deadline:
        time.sleep(0.05)
        journal = emulator.state.journal()
    return settled(emulator)


def calls(journal: list[JournalEntry], method: str) -> list[JournalEntry]:
    return [e for e in journal if e.method == method and e.path.startswith("/api/now/table/")]


def emu_client(
    emulator: ServiceNowEmulator, t: FakeTime | None = None, seed: int = 1, **overrides: Any
) -> ServiceNowClient:
    t = t or FakeTime()
    return ServiceNowClient(
        sn_settings(emulator.url, **overrides), clock=t.clock, sleep=t.sleep, rng=random.Random(seed)
    )


def test_list_page_sends_the_table_api_parameters_and_reads_the_headers(emulator: ServiceNowEmulator) -> None:
    emulator.state.clock.freeze("2024-05-01 12:00:00")
    for i in range(3):
        emulator.state.insert("incident", {"number": f"INC{i}", "short_description": f"d^{i}"})
    with emu_client(emulator) as client:
        page = client.list_page(
            "incident", query="numberSTARTSWITHINC^ORDERBYnumber", fields=["sys_id", "number"], limit=2,
            display_value="all", exclude_reference_link=False, no_count=False, offset=0,
        )
        short = client.list_page("incident", query="numberSTARTSWITHINC", limit=10)
    assert [r["number"] for r in page.records] == [
        {"display_value": "INC0", "value": "INC0"},
        {"display_value": "INC1", "value": "INC1"},
    ]
    assert set(page.records[0]) == {"sys_id", "number"}
    assert page.total == 3
    assert page.server_time == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert "next" in page.links and "sysparm_offset=2" in page.links["next"]
    assert short.total is None  # sysparm_no_count=true by default
    query = calls(settled(emulator), "GET")[0].query
    assert query == {
        "sysparm_query": "numberSTARTSWITHINC^ORDERBYnumber",
        "sysparm_fields": "sys_id,number",
        "sysparm_limit": "2",
        "sysparm_display_value": "all",
        "sysparm_exclude_reference_link": "false",
        "sysparm_no_count": "false",
        "sysparm_offset": "0",
    }
    defaults = calls(settled(emulator), "GET")[1].query
    assert defaults["sysparm_exclude_reference_link"] == "true" and defaults["sysparm_no_count"] == "true"
    assert defaults["sysparm_display_value"] == "false" and "sysparm_offset" not in defaults


def test_crud_helpers(emulator: ServiceNowEmulator) -> None:
    with emu_client(emulator) as client:
        created = client.insert("incident", {"short_description": "printer", "priority": 2})
        sys_id = created["sys_id"]
        assert SYS_ID_RE.fullmatch(sys_id) and created["priority"] == "2"
        updated = client.update("incident", sys_id, {"priority": "1"})
        assert updated["priority"] == "1" and updated["short_description"] == "printer"
        got = client.get("incident", sys_id)
        assert got is not None and got["priority"] == "1"
        client.delete("incident", sys_id)
        assert client.get("incident", sys_id) is None
        with pytest.raises(NotFoundError) as caught:
            client.delete("incident", sys_id)
        assert caught.value.status == 404
        client.delete("incident", sys_id, missing_ok=True)
        with pytest.raises(NotFoundError):
            client.update("incident", sys_id, {"priority": "1"})
    assert emulator.state.records("incident") == []


def test_a_sys_id_or_table_from_data_cannot_address_another_path(emulator: ServiceNowEmulator) -> None:
    with emu_client(emulator) as client:
        for bad in ["../../sys_user/" + "a" * 32, "A" * 32, "a" * 31, ""]:
            with pytest.raises(BadRequestError):
                client.update("incident", bad, {"x": "1"})
        with pytest.raises(BadRequestError):
            client.list_page("incident/../sys_user", query="", limit=1)
    assert settled(emulator) == []  # refused before any request


def test_error_bodies_become_typed_errors(emulator: ServiceNowEmulator) -> None:
    emulator.state.update_settings(denied_tables={"secret_table"})
    with emu_client(emulator) as client, pytest.raises(ForbiddenError) as caught:
        client.list_page("secret_table", query="", limit=1)
    assert caught.value.status == 403 and caught.value.message == "User Not Authorized"
    assert caught.value.detail is not None and "secret_table" in caught.value.detail
    assert caught.value.endpoint == "table/secret_table" and caught.value.attempts == 1
    assert len(settled(emulator)) == 1  # a 4xx is not retried


def test_server_time_reads_the_date_header_even_from_a_denied_table(emulator: ServiceNowEmulator) -> None:
    emulator.state.clock.freeze("2024-02-29 23:59:58")
    emulator.state.update_settings(denied_tables={"sys_user"})
    with emu_client(emulator) as client:
        assert client.server_time() == datetime(2024, 2, 29, 23, 59, 58, tzinfo=UTC)


def test_5xx_backoff_is_bounded_by_max_attempts_and_jittered(emulator: ServiceNowEmulator) -> None:
    emulator.state.faults.add(Fault(kind="status", status=503, method="GET", times=None))
    t = FakeTime()
    retry = {"max_attempts": 5, "initial_backoff_ms": 100, "max_backoff_ms": 30_000}
    with emu_client(emulator, t, seed=11, retry=retry) as client, pytest.raises(RetriesExhaustedError) as caught:
        client.list_page("incident", query="", limit=1)
    assert caught.value.status == 503 and caught.value.attempts == 5
    assert len(calls(settled(emulator), "GET")) == 5  # exactly max_attempts requests
    policy = BackoffPolicy.from_ms(100, 30_000)
    rng = random.Random(11)
    assert t.sleeps == [policy.delay(n, rng) for n in range(1, 5)]  # full jitter, seeded
    assert all(0 <= s <= policy.ceiling(n) for n, s in enumerate(t.sleeps, start=1))
    assert len(set(t.sleeps)) == 4 and t.sleeps != sorted(policy.ceiling(n) for n in range(1, 5))


def test_5xx_backoff_is_bounded_by_max_elapsed_seconds(emulator: ServiceNowEmulator) -> None:
    emulator.state.faults.add(Fault(kind="status", status=500, method="GET", times=None))
    t = FakeTime()
    retry = {"max_attempts": 100, "initial_backoff_ms": 400, "max_backoff_ms": 400, "max_elapsed_seconds": 2}
    with emu_client(emulator, t, retry=retry) as client, pytest.raises(RetriesExhaustedError) as caught:
        client.get("incident", "a" * 32)
    assert "max_elapsed_seconds=2" in str(caught.value)
    assert sum(t.sleeps) <= 2.0
    attempts = caught.value.attempts
    assert 5 <= attempts < 100 and len(calls(settled(emulator), "GET")) == attempts


def test_transient_5xx_then_success(emulator: ServiceNowEmulator) -> None:
    emulator.state.faults.add(Fault(kind="status", status=502, method="GET", times=2))
    t = FakeTime()
    with emu_client(emulator, t) as client:
        assert client.list_page("incident", query="", limit=1).records == []
    assert [e.status for e in calls(settled(emulator), "GET")] == [502, 502, 200]
    assert len(t.sleeps) == 2


def test_retries_go_out_on_the_same_transport_as_the_first_attempt(emulator: ServiceNowEmulator) -> None:
    """One transport: every attempt of a call, retries included, is sent on the client's own connections."""
    emulator.state.faults.add(Fault(kind="status", status=503, method="PATCH", times=2))
    sys_id = "d" * 32
    emulator.state.bulk_insert("incident", [{"sys_id": sys_id, "state": "1"}])
    taken: list[object] = []
    with emu_client(emulator) as client:
        assert client._connections is not None
        get = client._connections.get

        def counting_get() -> Any:
            conn = get()
            taken.append(conn)
            return conn

        client._connections.get = counting_get  # type: ignore[method-assign]
        assert client.update("incident", sys_id, {"state": "2"})["state"] == "2"
    assert [e.status for e in calls(settled(emulator), "PATCH")] == [503, 503, 200]
    assert len(taken) == 3


def test_retry_after_seconds_is_honoured_in_full(emulator: ServiceNowEmulator) -> None:
    emulator.state.faults.add(Fault(kind="status", status=429, method="GET", times=1, retry_after=7))
    t = FakeTime()
    with emu_client(emulator, t, retry={"max_attempts": 3, "initial_backoff_ms": 100, "max_backoff_ms": 200}) as c:
        c.list_page("incident", query="", limit=1)
    assert t.sleeps == [7.0]  # not jittered, not capped by max_backoff_ms
    assert [e.status for e in calls(settled(emulator), "GET")] == [429, 200]


def test_retry_after_in_real_time(emulator: ServiceNowEmulator) -> None:
    emulator.state.faults.add(Fault(kind="status", status=429, method="GET", times=1, retry_after=1))
    with ServiceNowClient(sn_settings(emulator.url)) as client:
        started = time.monotonic()
        client.list_page("incident", query="", limit=1)
        waited = time.monotonic() - started
    assert 1.0 <= waited < 2.5
    journal = calls(settled(emulator), "GET")
    assert [e.status for e in journal] == [429, 200]


def test_retry_after_http_date_is_measured_on_the_servers_clock(emulator: ServiceNowEmulator) -> None:
    # The instance's clock is years off ours: only the answer's own Date header gives the right wait.
    emulator.state.clock.freeze("2019-06-01 08:00:00")
    emulator.state.faults.add(
        Fault(kind="status", status=429, method="GET", times=1, retry_after=2, retry_after_http_date=True)
    )
    t = FakeTime()
    with emu_client(emulator, t) as client:
        client.list_page("incident", query="", limit=1)
    assert t.sleeps == [2.0]
    assert [e.status for e in calls(settled(emulator), "GET")] == [429, 200]


def test_a_retry_after_beyond_the_elapsed_budget_fails_at_once_naming_the_429(emulator: ServiceNowEmulator) -> None:
    emulator.state.faults.add(Fault(kind="status", status=429, method="GET", times=None, retry_after=120))
    t = FakeTime()
    client = emu_client(emulator, t, retry={"max_elapsed_seconds": 10})
    with client, pytest.raises(RetriesExhaustedError) as caught:
        client.list_page("incident", query="", limit=1)
    assert caught.value.status == 429 and "Retry-After: 120" in str(caught.value)
    assert t.sleeps == [] and len(calls(settled(emulator), "GET")) == 1


def test_429_without_retry_after_uses_the_backoff(emulator: ServiceNowEmulator) -> None:
    emulator.state.faults.add(Fault(kind="status", status=429, method="GET", times=1))
    t = FakeTime()
    with emu_client(emulator, t) as client:
        client.list_page("incident", query="", limit=1)
    assert len(t.sleeps) == 1 and 0 <= t.sleeps[0] <= 0.1


def test_post_body_is_identical_on_every_retry(emulator: ServiceNowEmulator) -> None:
    emulator.state.faults.add(Fault(kind="status", status=503, method="POST", times=2))
    body = {"short_description": "naïve ^ body", "priority": 1, "nested": {"a": [1, 2]}, "empty": None}
    with emu_client(emulator) as client:
        created = client.insert("incident", body)
    posts = calls(settled(emulator), "POST")
    assert [e.status for e in posts] == [503, 503, 201]
    assert [e.body for e in posts] == [orjson.dumps(body)] * 3
    assert [r["sys_id"] for r in emulator.state.records("incident")] == [created["sys_id"]]


def test_post_429_is_retried(emulator: ServiceNowEmulator) -> None:
    emulator.state.faults.add(Fault(kind="status", status=429, method="POST", times=1, retry_after=1))
    t = FakeTime()
    with emu_client(emulator, t) as client:
        client.insert("incident", {"short_description": "x"})
    assert [e.status for e in calls(settled(emulator), "POST")] == [429, 201]
    assert t.sleeps == [1.0]


@pytest.mark.parametrize(("status", "error"), [(500, ServerError), (502, AmbiguousWriteError),
                                               (504, AmbiguousWriteError)])
def test_post_5xx_other_than_503_is_not_retried(emulator: ServiceNowEmulator, status: int,
                                                error: type[Exception]) -> None:
    emulator.state.faults.add(Fault(kind="status", status=status, method="POST", times=None))
    with emu_client(emulator) as client, pytest.raises(error) as caught:
        client.insert("incident", {"short_description": "x"})
    assert getattr(caught.value, "status", None) == status
    assert len(calls(settled(emulator), "POST")) == 1


@pytest.mark.parametrize("close", [False, True])
def test_ambiguous_post_timeout_after_write_is_reported_and_not_retried(
    emulator: ServiceNowEmulator, close: bool
) -> None:
    emulator.state.faults.add(Fault(kind="timeout_after_write", method="POST", times=None, latency_ms=1500,
                                    close=close))
    with emu_client(emulator, timeout_seconds=0.5) as client, pytest.raises(AmbiguousWriteError) as caught:
        client.insert("incident", {"short_description": "maybe"})
    assert caught.value.attempts == 1 and caught.value.status is None
    assert "may have been applied" in str(caught.value)
    posts = calls(wait_for(emulator, 1), "POST")
    assert len(posts) == 1  # never re-sent
    assert len(emulator.state.records("incident")) == 1  # and indeed ServiceNow did write it


def test_post_connection_reset_after_send_is_ambiguous(emulator: ServiceNowEmulator) -> None:
    emulator.state.faults.add(Fault(kind="reset", method="POST", times=None))
    with emu_client(emulator) as client, pytest.raises(AmbiguousWriteError):
        client.insert("incident", {"short_description": "x"})
    assert len(calls(settled(emulator), "POST")) == 1


def test_post_truncated_answer_is_ambiguous(emulator: ServiceNowEmulator) -> None:
    emulator.state.faults.add(Fault(kind="truncated", method="POST", times=None))
    with emu_client(emulator) as client, pytest.raises(AmbiguousWriteError):
        client.insert("incident", {"short_description": "x"})
    assert len(calls(settled(emulator), "POST")) == 1
    assert len(emulator.state.records("incident")) == 1


def test_post_malformed_answer_is_a_definite_error_and_not_retried(emulator: ServiceNowEmulator) -> None:
    emulator.state.faults.add(Fault(kind="malformed", method="POST", times=None))
    with emu_client(emulator) as client, pytest.raises(MalformedResponseError) as caught:
        client.insert("incident", {"short_description": "x"})
    assert caught.value.status == 200
    assert len(calls(settled(emulator), "POST")) == 1


def test_post_connect_error_is_retried_because_nothing_was_sent() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = FakeTime()
    client = ServiceNowClient(sn_settings(f"http://127.0.0.1:{port}"), clock=t.clock, sleep=t.sleep)
    with client, pytest.raises(RetriesExhaustedError) as caught:
        client.insert("incident", {"short_description": "x"})
    assert caught.value.attempts == 4 and len(t.sleeps) == 3
    assert "connect" in str(caught.value)


@pytest.mark.parametrize("kind", ["reset", "truncated", "malformed"])
def test_get_transport_faults_are_retried(emulator: ServiceNowEmulator, kind: str) -> None:
    emulator.state.insert("incident", {"short_description": "x"})
    emulator.state.faults.add(Fault(kind=kind, method="GET", times=1))
    t = FakeTime()
    with emu_client(emulator, t) as client:
        page = client.list_page("incident", query="", limit=10)
    assert len(page.records) == 1
    assert len(calls(settled(emulator), "GET")) == 2 and len(t.sleeps) == 1


def test_get_malformed_forever_exhausts_retries(emulator: ServiceNowEmulator) -> None:
    emulator.state.faults.add(Fault(kind="malformed", method="GET", times=None))
    with emu_client(emulator) as client, pytest.raises(RetriesExhaustedError) as caught:
        client.list_page("incident", query="", limit=10)
    assert "malformed" in str(caught.value) and caught.value.attempts == 4


def test_patch_timeout_after_write_is_retried_because_patch_is_idempotent(emulator: ServiceNowEmulator) -> None:
    sys_id = emulator.state.insert("incident", {"priority": "3"})["sys_id"]
    emulator.state.faults.add(Fault(kind="timeout_after_write", method="PATCH", times=1, latency_ms=1500))
    with emu_client(emulator, timeout_seconds=0.5) as client:
        updated = client.update("incident", sys_id, {"priority": "1"})
    assert updated["priority"] == "1"
    patches = calls(wait_for(emulator, 2), "PATCH")
    assert len(patches) == 2 and patches[0].body == patches[1].body


def test_rate_limit_spaces_requests(emulator: ServiceNowEmulator) -> None:
    t = FakeTime()
    with emu_client(emulator, t, rate_limit={"requests_per_second": 10, "burst": 2}) as client:
        for _ in range(5):
            client.list_page("incident", query="", limit=1)
    assert t.sleeps == pytest.approx([0.1, 0.1, 0.1])


def test_latency_is_observed_per_call_with_low_cardinality_labels(emulator: ServiceNowEmulator) -> None:
    emulator.state.faults.add(Fault(kind="status", status=503, method="GET", times=1))
    metrics = RunMetrics()
    settings = sn_settings(emulator.url, auth={"type": "oauth", "client_id": "sncli", "client_secret": "sncli-secret",
                                               "username": "admin", "password": "admin"})
    t = FakeTime()
    with ServiceNowClient(settings, metrics=metrics, clock=t.clock, sleep=t.sleep) as client:
        created = client.insert("incident", {"short_description": "x"})
        client.get("incident", created["sys_id"])  # the 503 + retry
        client.update("incident", created["sys_id"], {"short_description": "y"})
    counts: dict[tuple[str, str], float] = {}
    for metric in metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "bridge_sn_api_latency_seconds_count":
                counts[(sample.labels["endpoint"], sample.labels["method"])] = sample.value
            assert created["sys_id"] not in str(sample.labels)
    assert counts == {
        ("oauth", "POST"): 1,
        ("table/incident", "POST"): 1,
        ("table/incident", "GET"): 2,
        ("table/incident", "PATCH"): 1,
    }


# ------------------------------------------------------------------ list_page reads a page's body in one read


_BIG_PAGE = [{"sys_id": f"{i:032x}", "description": "é" * 300 + str(i)} for i in range(2_000)]


class _GzipChunked(http.server.BaseHTTPRequestHandler):
    """A large page, gzip-compressed and sent in small chunks (what a proxy or a real instance may do)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        import gzip

        body = gzip.compress(orjson.dumps({"result": _BIG_PAGE}))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Date", formatdate(usegmt=True))
        self.end_headers()
        for start in range(0, len(body), 1000):
            chunk = body[start:start + 1000]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_list_page_decodes_a_chunked_gzip_body() -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GzipChunked)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with ServiceNowClient(sn_settings(f"http://127.0.0.1:{httpd.server_address[1]}")) as client:
            first = client.list_page("incident", query="", limit=2_000)
            second = client.list_page("incident", query="", limit=2_000)  # same connection, next answer intact
        assert first.records == _BIG_PAGE and second.records == _BIG_PAGE
        assert first.server_time is not None
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_list_page_keeps_its_connection_alive(emulator: ServiceNowEmulator) -> None:
    emulator.state.generate("incident", 300, seed=3)
    opened: list[object] = []
    with emu_client(emulator) as client:
        assert client._connections is not None
        new = client._connections._new

        def counting_new() -> Any:
            conn = new()
            opened.append(conn)
            return conn

        client._connections._new = counting_new  # type: ignore[method-assign]
        for _ in range(5):
            assert len(client.list_page("incident", query="", limit=300).records) == 300
        client.get("incident", emulator.state.records("incident")[0]["sys_id"])
    # Each body was read to its end, so every call went out on the one kept-alive connection.
    assert len(opened) == 1


# ------------------------------------------------------------------ giving a call up (cancel)


def test_a_cancelled_call_ends_its_backoff_at_once_and_makes_no_further_attempt(
    emulator: ServiceNowEmulator,
) -> None:
    sys_id = "c" * 32
    emulator.state.bulk_insert("incident", [{"sys_id": sys_id, "state": "1"}])
    emulator.state.faults.add(Fault(kind="status", status=503, method="PATCH", times=None, retry_after=30))
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    started = time.monotonic()
    try:
        with ServiceNowClient(sn_settings(emulator.url)) as client, pytest.raises(CallAbandoned):
            client.update("incident", sys_id, {"state": "2"}, cancel=cancel)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 5  # not the 30 s Retry-After
    assert [e.status for e in emulator.state.journal() if e.method == "PATCH"] == [503]
    with ServiceNowClient(sn_settings(emulator.url)) as client, pytest.raises(CallAbandoned):
        client.update("incident", sys_id, {"state": "3"}, cancel=cancel)  # already set: nothing is sent
    assert len([e for e in emulator.state.journal() if e.method == "PATCH"]) == 1
    assert emulator.state.get("incident", sys_id)["state"] == "1"
