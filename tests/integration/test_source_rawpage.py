"""The JSON source keeps each record's bytes as ServiceNow sent them (RawPage), on real Kafka and the emulator."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import requests

from sncli.emulator.faults import Fault
from sncli.emulator.server import ServiceNowEmulator
from sncli.servicenow.client import ServiceNowClient
from sncli.source.cycle import run_poll
from sncli.source.rawpage import RawPage, raw_page_decoder
from tests.fixtures.kafka import read_all
from tests.integration.test_source_support import make_settings

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def _as_sent(emulator: ServiceNowEmulator) -> dict[str, bytes]:
    """sys_id -> that record's JSON exactly as the emulator's Table API writes it."""
    params = {"sysparm_limit": "10000", "sysparm_exclude_reference_link": "true"}  # as sncli asks
    body = requests.get(f"{emulator.url}/api/now/table/incident", params=params, auth=("admin", "admin"),
                        timeout=30).content
    decoder = raw_page_decoder(["sys_id"])
    assert decoder is not None
    page = decoder(body)
    return {sys_id: bytes(value) for sys_id, value in zip(page.column("sys_id"), page.values, strict=True)}


def test_kafka_values_are_the_records_bytes_as_received(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    emulator.state.generate("incident", 2_500, at=NOW - timedelta(hours=1), spread_seconds=60, seed=5)
    emulator.state.insert("incident", {"short_description": 'caf\u00e9 "quoted" \\ back\nslash {"x": [1]}'},
                          at=NOW - timedelta(minutes=1))
    settings = make_settings(emulator.url, kafka_bootstrap, tmp_path / "o.json",
                             [{"name": "incident", "topic": unique_topic}], page_size=700)
    summary = run_poll(settings)
    assert summary.exit_code == 0, summary.to_json()
    sent = _as_sent(emulator)
    got = read_all(kafka_bootstrap, unique_topic, timeout=60, expected=len(sent))
    assert len(got) == len(sent) == 2_501
    for record in got:
        assert record.key is not None and record.value is not None
        sys_id = record.key.decode()
        assert record.value == sent[sys_id]  # byte for byte, not re-serialized
        assert record.header("sn.sys_id") == record.key
    odd = [orjson.loads(r.value or b"") for r in got]
    assert 'caf\u00e9 "quoted" \\ back\nslash {"x": [1]}' in {v.get("short_description") for v in odd}


def test_without_msgspec_the_poll_takes_the_decoded_path(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "msgspec", None)
    emulator.state.generate("incident", 300, at=NOW - timedelta(hours=1), spread_seconds=60, seed=6)
    settings = make_settings(emulator.url, kafka_bootstrap, tmp_path / "o.json",
                             [{"name": "incident", "topic": unique_topic}], page_size=100)
    summary = run_poll(settings)
    assert summary.exit_code == 0 and summary.tables["incident"].produced == 300
    got = read_all(kafka_bootstrap, unique_topic, timeout=60, expected=300)
    expected = {r["sys_id"]: r for r in emulator.state.records("incident")}
    assert {r.key: orjson.loads(r.value or b"") for r in got} == {k.encode(): v for k, v in expected.items()}


def test_a_malformed_page_is_retried_then_decoded(emulator: ServiceNowEmulator) -> None:
    emulator.state.generate("incident", 20, at=NOW - timedelta(hours=1), spread_seconds=60, seed=7)
    emulator.state.faults.add(Fault(kind="malformed", method="GET", times=1))
    settings = make_settings(emulator.url, "127.0.0.1:9", Path("unused.json"), [{"name": "incident", "topic": "t"}],
                             retry={"max_attempts": 3, "initial_backoff_ms": 1, "max_backoff_ms": 5})
    decoder = raw_page_decoder(["sys_id", "sys_updated_on"])
    assert decoder is not None
    with ServiceNowClient(settings.servicenow) as client:
        page = client.list_page_decoded("incident", decode=decoder, query="", limit=50)
    assert isinstance(page.records, RawPage) and len(page.records) == 20
    assert page.server_time is not None
    assert sorted(page.records.column("sys_id")) == sorted(r["sys_id"] for r in emulator.state.records("incident"))
