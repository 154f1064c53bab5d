"""Kafka stops in the middle of a poll: exit 1, no cursor past what Kafka acknowledged, nothing lost after.

Uses the S3-backed broker (``kafka_broker_s3``), whose log survives a restart, so
the test can check that everything up to the stored cursor really is in Kafka.

The broker is killed while pages are in flight. Tansu 0.6.0 on S3 storage writes a
partition's watermark.json before the batch object, so a kill between the two PUTs
(4 of 17 kills when measured) leaves a partition whose high watermark lies past its
last stored record: moto's log shows the last ``PUT .../watermark.json`` with no
``PUT .../records/<offset>.batch`` after it (watermark 235, records up to 208). That
batch was never acknowledged, but no fetch reaches the end of such a partition until
a later batch exists, and read_all timed out. So the test seals every partition
(tests/fixtures/kafka.py ``seal_partitions``) before reading.
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
from sncli.source.cycle import run_poll
from sncli.source.outcome import RunSummary
from tests.fixtures.kafka import is_seal, read_all, seal_partitions
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
    # Sealing only appends a marker after the log; it cannot supply a missing record.
    assert seal_partitions(kafka_broker_s3.bootstrap, topic) == 3
    acked = expected[: expected.index(cursor) + 1]
    in_kafka = {
        (v["sys_updated_on"], v["sys_id"])
        for v in (orjson.loads(r.value) for r in read_all(kafka_broker_s3.bootstrap, topic, timeout=60)
                  if not is_seal(r))
    }
    assert set(acked) <= in_kafka

    second = run_poll(settings)
    assert second.exit_code == 0, second.to_json()
    final = [orjson.loads(r.value) for r in read_all(kafka_broker_s3.bootstrap, topic, timeout=60,
                                                     expected=len(expected) + 3) if not is_seal(r)]
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


def test_tansu_s3_tail_hole_blocks_read_all_until_sealed(kafka_broker_s3: KafkaBroker, s3_endpoint: str) -> None:
    """The broker fault the mid-run test works around, made on purpose: a watermark past the stored batches.

    If a Tansu upgrade writes the batch before the watermark (or repairs it on start), the first
    assertion fails: then ``seal_partitions`` is no longer needed.
    """
    import boto3
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    bootstrap = kafka_broker_s3.bootstrap
    topic = f"hole-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(10)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for i in range(5):
        producer.produce(topic, f"v{i}".encode(), f"k{i}".encode())
    assert producer.flush(10) == 0

    # What a kill between Tansu's two PUTs leaves: watermark.json advanced, the batch object never written.
    kafka_broker_s3.stop()
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                      region_name="us-east-1")
    key = f"clusters/tansu_cluster/topics/{topic}/partitions/0000000000/watermark.json"
    watermark = orjson.loads(s3.get_object(Bucket="tansu", Key=key)["Body"].read())
    assert watermark["high"] == 5, watermark
    s3.put_object(Bucket="tansu", Key=key, Body=orjson.dumps({**watermark, "high": 8}))
    kafka_broker_s3.start()

    with pytest.raises(TimeoutError, match=r"read up to offset 5, fetched high watermark 8"):
        read_all(bootstrap, topic, timeout=3)
    assert seal_partitions(bootstrap, topic) == 1
    records = read_all(bootstrap, topic, timeout=15)
    assert [r.value for r in records if not is_seal(r)] == [f"v{i}".encode() for i in range(5)]
    assert [r.offset for r in records if is_seal(r)] == [8]  # written after the hole, which fetches skip
