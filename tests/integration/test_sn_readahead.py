"""Pages sent ahead (ServiceNowClient.start_page_decoded) against real HTTP servers on 127.0.0.1.

A page sent ahead takes a different transport for its first attempt (urllib3's
connection, not requests), so everything the client promises is checked again
on it: the answer, TLS as configured, the proxy, retries of every fault kind
with the same attempt counts, gzip, keep-alive, the latency metric.
"""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sncli.emulator.faults import Fault
from sncli.emulator.server import ServiceNowEmulator
from sncli.metrics import RunMetrics
from sncli.servicenow.client import ServiceNowClient
from sncli.servicenow.errors import AuthError, RetriesExhaustedError, TransportError
from sncli.source.rawpage import decode_records
from tests.fixtures.fake_time import FakeTime
from tests.integration.test_sn_client import (
    _BIG_PAGE,
    _GzipChunked,
    _Server,
    calls,
    emu_client,
    mtls_server,
    settled,
    sn_settings,
    tls_server,
)

pytestmark = pytest.mark.integration
__all__ = ["mtls_server", "tls_server"]  # fixtures, imported to be used here


def start(client: ServiceNowClient, **kwargs: Any) -> Any:
    return client.start_page_decoded("incident", decode=decode_records, **{"query": "", "limit": 10, **kwargs})


def test_the_request_goes_out_when_started_and_the_answer_matches_list_page(emulator: ServiceNowEmulator) -> None:
    emulator.state.clock.freeze("2024-05-01 12:00:00")
    for i in range(3):
        emulator.state.insert("incident", {"number": f"INC{i}"})
    with emu_client(emulator) as client:
        pending = start(client, query="numberSTARTSWITHINC^ORDERBYnumber", fields=["sys_id", "number"], limit=2)
        assert pending.ready(5.0)  # answered before anything read it
        assert len(calls(settled(emulator), "GET")) == 1
        page = pending.result()
        direct = client.list_page_decoded("incident", decode=decode_records,
                                          query="numberSTARTSWITHINC^ORDERBYnumber", fields=["sys_id", "number"],
                                          limit=2)
    assert page.records == direct.records and [r["number"] for r in page.records] == ["INC0", "INC1"]
    assert page.server_time == direct.server_time is not None
    ahead, plain = (e.query for e in calls(settled(emulator), "GET"))
    assert ahead == plain  # the same Table API parameters either way
    assert ahead["sysparm_exclude_reference_link"] == "true" and ahead["sysparm_no_count"] == "true"


def test_ready_waits_for_the_answer_without_reading_it(emulator: ServiceNowEmulator) -> None:
    emulator.state.insert("incident", {"number": "INC1"})
    emulator.state.settings.read_latency_ms = 300
    metrics = RunMetrics()
    with ServiceNowClient(sn_settings(emulator.url), metrics=metrics) as client:
        pending = start(client)
        assert not pending.ready(0.05)  # still being answered
        assert pending.ready(5.0)
        time.sleep(0.3)  # the loop does other work; the measured latency is ServiceNow's, not this
        assert len(pending.result().records) == 1
    seconds = [s.value for m in metrics.registry.collect() for s in m.samples
               if s.name == "bridge_sn_api_latency_seconds_sum"]
    assert len(seconds) == 1 and 0.3 <= seconds[0] < 0.55


@pytest.mark.parametrize("kind", ["reset", "truncated", "malformed"])
def test_a_faulty_first_attempt_is_retried_once_through_the_request_loop(
    emulator: ServiceNowEmulator, kind: str
) -> None:
    emulator.state.insert("incident", {"short_description": "x"})
    emulator.state.faults.add(Fault(kind=kind, method="GET", times=1))
    t = FakeTime()
    with emu_client(emulator, t) as client:
        page = start(client).result()
    assert len(page.records) == 1
    assert len(calls(settled(emulator), "GET")) == 2 and len(t.sleeps) == 1


def test_a_503_then_a_429_with_retry_after_count_as_attempts_1_and_2(emulator: ServiceNowEmulator) -> None:
    emulator.state.insert("incident", {"short_description": "x"})
    emulator.state.faults.add(Fault(kind="status", status=503, method="GET", times=1))
    emulator.state.faults.add(Fault(kind="status", status=429, method="GET", times=1, retry_after=7))
    t = FakeTime()
    with emu_client(emulator, t) as client:
        assert len(start(client).result().records) == 1
    assert len(calls(settled(emulator), "GET")) == 3
    assert len(t.sleeps) == 2 and t.sleeps[1] >= 7.0


def test_malformed_forever_exhausts_the_same_attempts_as_a_direct_fetch(emulator: ServiceNowEmulator) -> None:
    emulator.state.faults.add(Fault(kind="malformed", method="GET", times=None))
    with emu_client(emulator) as client, pytest.raises(RetriesExhaustedError) as caught:
        start(client).result()
    assert caught.value.attempts == 4 and len(calls(settled(emulator), "GET")) == 4


def test_a_401_on_the_first_attempt_refreshes_the_token_once(emulator: ServiceNowEmulator) -> None:
    emulator.state.insert("incident", {"short_description": "x"})
    oauth = {"type": "oauth", "client_id": "sncli", "client_secret": "sncli-secret", "username": "admin",
             "password": "admin"}
    with ServiceNowClient(sn_settings(emulator.url, auth=oauth)) as client:
        client.auth.authorization()  # a token before the fault is armed
        emulator.state.faults.add(Fault(kind="status", status=401, method="GET", path_prefix="/api/now/table",
                                        times=1))
        assert len(start(client).result().records) == 1
        emulator.state.faults.add(Fault(kind="status", status=401, method="GET", path_prefix="/api/now/table",
                                        times=None))
        with pytest.raises(AuthError):
            start(client).result()
    tokens = [e for e in settled(emulator) if e.path.startswith("/oauth_token")]
    assert len(tokens) == 3  # the first token, one refresh per 401-answered page


def test_a_refused_connection_surfaces_from_result_and_is_retried(emulator: ServiceNowEmulator) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    t = FakeTime()
    client = ServiceNowClient(sn_settings(f"http://127.0.0.1:{port}"), clock=t.clock, sleep=t.sleep)
    with client:
        pending = start(client)  # never raises here: the loop reads answers only where it can handle failures
        assert pending.answered(0.0)  # the first attempt is over...
        assert not pending.ready(0.0)  # ...and result() would wait: its retries
        with pytest.raises(RetriesExhaustedError) as caught:
            pending.result()
    assert caught.value.attempts == 4 and "connect" in str(caught.value)


# ------------------------------------------------------------------ TLS and proxy, as configured


def test_tls_verification_is_on_by_default_and_not_retried(tls_server: tuple[_Server, Path]) -> None:
    server, _ = tls_server
    t = FakeTime()
    client = ServiceNowClient(sn_settings(f"https://127.0.0.1:{server.port}"), clock=t.clock, sleep=t.sleep)
    with client, pytest.raises(TransportError) as caught:
        start(client).result()
    assert caught.value.attempts == 1 and t.sleeps == []
    assert "tls" in str(caught.value).lower() or "certificate" in str(caught.value).lower()
    assert server.seen == []


def test_tls_verify_false_and_a_ca_bundle_both_work(tls_server: tuple[_Server, Path]) -> None:
    server, cert = tls_server
    url = f"https://127.0.0.1:{server.port}"
    for tls in ({"verify": False}, {"ca_bundle": str(cert)}, {"ca_bundle": str(cert.parent)}):
        if "ca_bundle" in tls and Path(str(tls["ca_bundle"])).is_dir():
            import subprocess

            subprocess.run(["openssl", "rehash", str(cert.parent)], check=True, capture_output=True)
        with ServiceNowClient(sn_settings(url, tls=tls)) as client:
            assert start(client).result().records == [{"sys_id": "a" * 32}], tls
    assert len(server.seen) == 3


def test_a_missing_ca_bundle_is_a_transport_error_at_once(tls_server: tuple[_Server, Path]) -> None:
    server, cert = tls_server
    t = FakeTime()
    settings = sn_settings(f"https://127.0.0.1:{server.port}", tls={"ca_bundle": str(cert) + ".missing"})
    client = ServiceNowClient(settings, clock=t.clock, sleep=t.sleep)
    with client, pytest.raises(TransportError) as caught:
        start(client).result()
    assert caught.value.attempts == 1 and t.sleeps == [] and "server.crt.missing" in str(caught.value)


def test_the_client_certificate_is_presented(mtls_server: tuple[_Server, dict[str, str]]) -> None:
    server, mtls = mtls_server
    with ServiceNowClient(sn_settings(f"https://127.0.0.1:{server.port}", tls=mtls)) as client:
        assert len(start(client).result().records) == 1
    assert len(server.seen) == 1


def test_with_a_proxy_the_page_goes_through_the_proxy() -> None:
    proxy = _Server()
    try:
        settings = sn_settings("http://instance.invalid", proxy=f"http://127.0.0.1:{proxy.port}")
        with ServiceNowClient(settings) as client:
            pending = start(client, query="active=true")
            assert proxy.seen == []  # nothing sent ahead past a proxy: fetched when read
            assert len(pending.result().records) == 1
        assert len(proxy.seen) == 1 and proxy.seen[0].startswith("http://instance.invalid/api/now/table/incident?")
    finally:
        proxy.stop()


# ------------------------------------------------------------------ bodies and connections


def test_a_chunked_gzip_body_is_decoded_and_the_connection_reused() -> None:
    accepted: list[int] = []

    class Counting(http.server.ThreadingHTTPServer):
        def get_request(self) -> Any:
            accepted.append(1)
            return super().get_request()

    httpd = Counting(("127.0.0.1", 0), _GzipChunked)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with ServiceNowClient(sn_settings(f"http://127.0.0.1:{httpd.server_address[1]}")) as client:
            pages = [start(client, limit=2_000).result() for _ in range(3)]
        assert all(p.records == _BIG_PAGE for p in pages)
        assert len(accepted) == 1  # each answer read to its end: one keep-alive connection for all three
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_server_that_closes_after_each_answer_costs_no_retry() -> None:
    server = _Server()  # HTTP/1.0: the server closes the connection after every answer
    try:
        t = FakeTime()
        client = ServiceNowClient(sn_settings(f"http://127.0.0.1:{server.port}"), clock=t.clock, sleep=t.sleep)
        with client:
            for _ in range(3):
                assert len(start(client).result().records) == 1
        assert len(server.seen) == 3 and t.sleeps == []
    finally:
        server.stop()


def test_a_cancelled_page_leaves_the_next_one_intact(emulator: ServiceNowEmulator) -> None:
    emulator.state.generate("incident", 50, seed=2)
    emulator.state.settings.read_latency_ms = 200
    with emu_client(emulator) as client:
        dropped = start(client, limit=50)
        dropped.cancel()  # a page read ahead, then dropped (a stop): its answer is never read
        emulator.state.settings.read_latency_ms = 0
        kept = [start(client, limit=50).result() for _ in range(2)]
    assert all(len(p.records) == 50 for p in kept)
