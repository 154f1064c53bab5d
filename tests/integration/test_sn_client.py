"""ServiceNowClient against real HTTP servers on 127.0.0.1: TLS, proxy, and (below) the emulator's faults."""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import ssl
import threading
from collections.abc import Iterator
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
from sncli.servicenow.client import ServiceNowClient
from sncli.servicenow.errors import TransportError

pytestmark = pytest.mark.integration


class FakeTime:
    """Injected clock and sleep: sleeping advances the clock and is recorded, so retries take no real time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


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


def test_client_certificate_is_presented_for_mutual_tls(tmp_path: Path) -> None:
    server_cert, server_key = _self_signed(tmp_path, "server")
    client_cert, client_key = _self_signed(tmp_path, "client")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(server_cert, server_key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(client_cert)
    server = _Server(ctx)
    try:
        url = f"https://127.0.0.1:{server.port}"
        mtls = {"ca_bundle": str(server_cert), "client_cert": str(client_cert), "client_key": str(client_key)}
        with ServiceNowClient(sn_settings(url, tls=mtls)) as client:
            assert len(client.list_page("incident", query="", limit=1).records) == 1
        t = FakeTime()
        no_cert = sn_settings(url, tls={"ca_bundle": str(server_cert)}, retry={"max_attempts": 2})
        with ServiceNowClient(no_cert, clock=t.clock, sleep=t.sleep) as client, pytest.raises(TransportError):
            client.list_page("incident", query="", limit=1)
        assert len(server.seen) == 1
    finally:
        server.stop()


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
