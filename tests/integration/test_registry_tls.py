"""Schema Registry behind HTTPS with a private CA, client certificates and basic auth (issue 15 §5).

The registry client sncli uses (and ``doctor``'s probe, which is the same
client) must take the CA bundle, the client certificate and the basic auth from
``kafka.schema_registry``. The server here is a TLS front that requires all
three and answers ``GET /subjects``.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sncli.config import SchemaRegistry
from sncli.kafka.serde import registry_client

pytestmark = pytest.mark.integration

USER_INFO = "reg-user:reg-pass"
ROOT = Path(__file__).resolve().parents[2]


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None,
          issuer_key: ec.EllipticCurvePrivateKey | None, *, ca: bool = False,
          ip: str | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        expected = "Basic " + base64.b64encode(USER_INFO.encode()).decode()
        if self.headers.get("Authorization") != expected:
            self._answer(401, {"error_code": 401, "message": "Unauthorized"})
        elif self.path.split("?")[0] == "/subjects":
            self._answer(200, ["servicenow.incident-value"])
        else:
            self._answer(404, {"error_code": 404, "message": "not found"})

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def tls_registry(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """(https URL, CA bundle, client certificate with its key next to it as .key)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("sncli test CA", ca_key, None, None, ca=True)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_path = _write(tmp_path / "ca.pem", ca)
    server = _write(tmp_path / "server.pem", _cert("127.0.0.1", server_key, ca.subject, ca_key, ip="127.0.0.1"),
                    server_key)
    client = _write(tmp_path / "client.pem", _cert("sncli", client_key, ca.subject, ca_key), client_key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server, server.with_suffix(".key"))
    context.load_verify_locations(ca_path)
    context.verify_mode = ssl.CERT_REQUIRED  # mTLS: no client certificate, no answer
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}", ca_path, client
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def registry_settings(url: str, ca: Path, client: Path) -> dict[str, Any]:
    return {"url": url, "basic_auth_user_info": USER_INFO,
            "tls": {"ca_bundle": str(ca), "client_cert": str(client), "client_key": str(client.with_suffix(".key"))}}


def test_the_registry_client_uses_the_ca_bundle_client_certificate_and_basic_auth(
    tls_registry: tuple[str, Path, Path],
) -> None:
    url, ca, client = tls_registry
    registry = SchemaRegistry.model_validate(registry_settings(url, ca, client))
    assert registry_client(registry).get_subjects() == ["servicenow.incident-value"]
    without_cert = SchemaRegistry.model_validate({**registry_settings(url, ca, client), "tls": {"ca_bundle": str(ca)}})
    with pytest.raises(Exception):  # noqa: B017 (the TLS handshake fails; the exception type is httpx's)
        registry_client(without_cert).get_subjects()


@pytest.mark.e2e
def test_doctor_probes_the_registry_like_a_run_and_warns_about_unverified_tls(
    tmp_path: Path, tls_registry: tuple[str, Path, Path], snow_url: str, kafka_bootstrap: str
) -> None:
    url, ca, client = tls_registry
    config = {
        "servicenow": {"instance_url": snow_url, "tls": {"verify": False},
                       "auth": {"type": "basic", "username": "admin", "password": "admin"},
                       "retry": {"max_attempts": 2, "initial_backoff_ms": 10, "max_backoff_ms": 50}},
        "kafka": {"bootstrap_servers": kafka_bootstrap, "schema_registry": registry_settings(url, ca, client)},
        "offsets": {"store": "file", "path": str(tmp_path / "offsets.json")},
    }
    path = tmp_path / "sncli.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "sncli", "--json", "doctor", "--config", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ})
    report = json.loads(proc.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    # Was: "ok" for tls.verify false (exit 0), and "fail" for this registry (a bare GET without CA or auth).
    assert checks["schema registry"]["status"] == "ok", checks["schema registry"]
    assert checks["transport security"]["status"] == "warn"
    assert "servicenow.tls.verify is false" in checks["transport security"]["detail"]
    assert proc.returncode == 3 and report["exit_code"] == 3
    assert "reg-pass" not in proc.stdout + proc.stderr
