"""Kafka stops in the middle of a poll: exit 1, no cursor past what Kafka acknowledged, nothing lost after.

Uses the S3-backed broker (``kafka_broker_s3``), whose log survives a restart, so
the test can check that everything up to the stored cursor really is in Kafka.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from sncli.emulator.server import ServiceNowEmulator
from sncli.source.cycle import RunSummary, run_poll
from tests.fixtures.kafka import read_all
from tests.fixtures.services import KafkaBroker
from tests.integration.test_source_support import keyset, make_settings, stored_cursor

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def test_broker_stopped_mid_run_then_restarted_loses_nothing(
    emulator: ServiceNowEmulator, kafka_broker_s3: KafkaBroker, tmp_path: Path
) -> None:
    topic = f"down-{uuid.uuid4().hex[:8]}"
    emulator.state.generate("incident", 3_000, at=NOW - timedelta(hours=1), spread_seconds=600, seed=1,
                            field_count=8, record_bytes=200)
    emulator.state.update_settings(read_latency_ms=40)
    offsets = tmp_path / "o.json"
    settings = make_settings(
        emulator.url, kafka_broker_s3.bootstrap, offsets, [{"name": "incident", "topic": topic}], page_size=100,
        # Fail a page within seconds when the broker is gone (the default is 30 s).
        kafka_client={"message.timeout.ms": 3000, "socket.timeout.ms": 2000},
    )
    expected = keyset(emulator.state.records("incident"))

    result: dict[str, RunSummary] = {}
    runner = threading.Thread(target=lambda: result.setdefault("first", run_poll(settings)))
    runner.start()
    deadline = time.monotonic() + 30
    while stored_cursor(offsets, "incident") is None or stored_cursor(offsets, "incident") < expected[500]:
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.02)
    kafka_broker_s3.stop()
    runner.join(60)
    assert not runner.is_alive()
    first = result["first"]
    kafka_broker_s3.start()

    assert first.exit_code == 1, first.to_json()
    assert "not acknowledged" in (first.tables["incident"].error or "")
    cursor = stored_cursor(offsets, "incident")
    assert cursor is not None and cursor < expected[-1]
    assert first.tables["incident"].cursor_after == type(first.tables["incident"].cursor_after)(*cursor)
    # Everything up to the stored cursor was acknowledged, so it is in Kafka (durable storage).
    acked = expected[: expected.index(cursor) + 1]
    in_kafka = {
        (v["sys_updated_on"], v["sys_id"])
        for v in (orjson.loads(r.value) for r in read_all(kafka_broker_s3.bootstrap, topic, timeout=60))
    }
    assert set(acked) <= in_kafka

    second = run_poll(settings)
    assert second.exit_code == 0, second.to_json()
    final = [orjson.loads(r.value) for r in read_all(kafka_broker_s3.bootstrap, topic, timeout=60,
                                                     expected=len(expected))]
    got = [(v["sys_updated_on"], v["sys_id"]) for v in final]
    assert set(got) == set(expected)  # nothing lost
    assert stored_cursor(offsets, "incident") == expected[-1]


def test_broker_down_before_the_run_fails_fast_and_stores_nothing(
    emulator: ServiceNowEmulator, kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    emulator.state.generate("incident", 10, at=NOW - timedelta(hours=1), spread_seconds=10, seed=2)
    offsets = tmp_path / "o.json"
    settings = make_settings(emulator.url, kafka_broker.bootstrap, offsets,
                             [{"name": "incident", "topic": f"down-{uuid.uuid4().hex[:8]}"}])
    kafka_broker.stop()
    try:
        started = time.monotonic()
        summary = run_poll(settings)
        elapsed = time.monotonic() - started
    finally:
        kafka_broker.start()
    assert summary.exit_code == 1
    assert kafka_broker.bootstrap in (summary.tables["incident"].error or "")
    assert not offsets.exists()
    assert elapsed < 30
