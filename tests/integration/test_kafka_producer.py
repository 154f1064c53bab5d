"""PageProducer on real brokers: acknowledged pages, broker-side rejections, a broker that dies."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
import pytest

from sncli.config import KafkaSettings
from sncli.kafka.admin import ensure_topics
from sncli.kafka.errors import ProduceError
from sncli.kafka.producer import PageProducer
from tests.fixtures.kafka import PrivateTansu, read_all

pytestmark = pytest.mark.integration


def test_a_page_is_acknowledged_and_reads_back_intact(kafka_bootstrap: str, unique_topic: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    ensure_topics(kafka, {unique_topic: 3})
    producer = PageProducer(kafka)
    base_ts = 1_700_000_000_000
    page = []
    for i in range(2_000):
        sys_id = f"{i:032x}"
        value = orjson.dumps({"sys_id": sys_id, "n": str(i), "pad": "x" * 1000})
        headers = [("sn.table", b"incident"), ("sn.sys_id", sys_id.encode()), ("sn.extracted_at", b"2024")]
        page.append((sys_id.encode(), value, headers, base_ts + i))
    for key, value, headers, ts in page:
        producer.send(unique_topic, key, value, headers, ts)
    producer.send(unique_topic, b"tomb", None, [], None)  # a tombstone, broker timestamp
    assert producer.flush() == len(page) + 1
    assert producer.pending == 0

    records = read_all(kafka_bootstrap, unique_topic, expected=len(page) + 1)
    assert len(records) == len(page) + 1
    by_key = {r.key: r for r in records}
    for key, value, headers, ts in page:
        got = by_key[key]
        assert got.value == value
        assert got.headers == headers
        assert got.timestamp_ms == ts
    tomb = by_key[b"tomb"]
    assert tomb.value is None
    assert tomb.timestamp_ms is not None and tomb.timestamp_ms > base_ts
    # Same key -> same partition (the source's per-key order relies on it).
    assert len({r.partition for r in records}) > 1


def test_consecutive_pages_are_counted_separately(kafka_bootstrap: str, unique_topic: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    ensure_topics(kafka, {unique_topic: 1})
    producer = PageProducer(kafka)
    for size in (5, 17, 1):
        for i in range(size):
            producer.send(unique_topic, None, str(i).encode(), None, None)  # headers may be None
        assert producer.flush() == size
    assert producer.flush() == 0  # an empty batch
    assert len(read_all(kafka_bootstrap, unique_topic, expected=23)) == 23


def test_backpressure_when_the_local_queue_is_full(kafka_bootstrap: str, unique_topic: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    ensure_topics(kafka, {unique_topic: 1})
    # A queue of 50 records: send must wait for acknowledgements instead of failing.
    producer = PageProducer(kafka, queue_buffering_max_messages=50)
    for i in range(500):
        producer.send(unique_topic, None, str(i).encode(), [], None)
    assert producer.flush() == 500
    values = [r.value for r in read_all(kafka_bootstrap, unique_topic, expected=500)]
    assert values == [str(i).encode() for i in range(500)]


STRICT_SCHEMA = """{"type": "object", "properties": {"value": {"type": "object",
  "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}"""


def test_a_record_the_broker_rejects_fails_the_flush_with_the_broker_error(
    private_tansu: Callable[..., PrivateTansu],
) -> None:
    broker = private_tansu(schemas={"strict": STRICT_SCHEMA})
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    ensure_topics(kafka, {"strict": 1})
    producer = PageProducer(kafka, delivery_timeout_ms=5_000)
    producer.send("strict", None, b'{"n": 1}', [], None)
    assert producer.flush() == 1

    producer.send("strict", None, b'{"n": 2}', [], None)
    producer.send("strict", None, b'{"no": "n"}', [], None)  # invalid for the topic's schema
    with pytest.raises(ProduceError) as info:
        producer.flush()
    message = str(info.value)
    assert "strict" in message
    assert "validate record" in message  # the broker's own error, not a generic one
    assert info.value.failed >= 1
    with pytest.raises(ProduceError, match="create a new one"):
        producer.send("strict", None, b'{"n": 3}', [], None)

    fresh = PageProducer(kafka, delivery_timeout_ms=5_000)
    fresh.send("strict", None, b'{"n": 4}', [], None)
    assert fresh.flush() == 1
    values = [orjson.loads(r.value or b"null")["n"] for r in read_all(broker.bootstrap, "strict")]
    assert values == [1, 4]


def test_broker_down_fails_the_flush_within_the_delivery_timeout(
    private_tansu: Callable[..., PrivateTansu],
) -> None:
    broker = private_tansu()
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    ensure_topics(kafka, {"pages": 1})
    producer = PageProducer(kafka, delivery_timeout_ms=3_000)
    producer.send("pages", None, b"first page", [], None)
    assert producer.flush() == 1

    broker.stop()
    started = time.monotonic()
    for i in range(100):
        producer.send("pages", None, f"lost {i}".encode(), [], None)
    with pytest.raises(ProduceError) as info:
        producer.flush()
    elapsed = time.monotonic() - started
    assert elapsed < 3.0 + 5.0  # delivery timeout + flush margin: bounded, never a hang
    assert "pages" in str(info.value)
    assert info.value.failed == 100 and info.value.acked == 0


def test_unreachable_bootstrap_fails_the_flush_in_bounded_time() -> None:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:9")  # nothing listens on the discard port
    producer = PageProducer(kafka, delivery_timeout_ms=1_500)
    started = time.monotonic()
    producer.send("nowhere", b"k", b"v", [], None)
    with pytest.raises(ProduceError) as info:
        producer.flush()
    assert time.monotonic() - started < 1.5 + 5.0
    message = str(info.value)
    assert "nowhere" in message and "127.0.0.1:9" in message


def test_flush_timeout_shorter_than_delivery_reports_outstanding_records(
    private_tansu: Callable[..., PrivateTansu],
) -> None:
    broker = private_tansu()
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    ensure_topics(kafka, {"slow": 1})
    broker.stop()
    producer = PageProducer(kafka, delivery_timeout_ms=30_000)
    producer.send("slow", None, b"v", [], None)
    with pytest.raises(ProduceError, match="still unacknowledged"):
        producer.flush(timeout=0.5)
    with pytest.raises(ProduceError, match="create a new one"):
        producer.send("slow", None, b"v", [], None)
    started = time.monotonic()
    producer.close(timeout=10)  # a failed producer drops its queue instead of waiting
    assert time.monotonic() - started < 2


def test_send_page_queues_parallel_lists_and_flush_counts_them(kafka_bootstrap: str, unique_topic: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    ensure_topics(kafka, {unique_topic: 2})
    # A small queue: the page does not fit at once, so send_page has to wait for room midway.
    producer = PageProducer(kafka, queue_buffering_max_messages=100)
    keys = [f"{i:032x}".encode() for i in range(1_000)]
    values = [orjson.dumps({"n": i}) for i in range(1_000)]
    headers = [[("sn.sys_id", k)] for k in keys]
    timestamps = [1_700_000_000_000 + i for i in range(1_000)]
    producer.send_page(unique_topic, keys, values, headers, timestamps)
    assert producer.flush() == 1_000 and producer.pending == 0
    producer.send_page(unique_topic, keys[:7], values[:7], headers[:7], timestamps[:7])
    assert producer.flush() == 7  # counted per batch
    records = read_all(kafka_bootstrap, unique_topic, expected=1_007)
    assert sorted((r.key, r.value, r.timestamp_ms) for r in records) == sorted(
        list(zip(keys, values, timestamps, strict=True)) + list(zip(keys[:7], values[:7], timestamps[:7], strict=True))
    )
    assert all(r.headers == [("sn.sys_id", r.key)] for r in records)
    with pytest.raises(ValueError, match="differ in length"):
        producer.send_page(unique_topic, keys, values[:-1], headers, timestamps)


def test_send_page_with_a_record_the_broker_rejects_fails_the_flush(
    private_tansu: Callable[..., PrivateTansu],
) -> None:
    # Delivery reports come only for failures (delivery.report.only.error): the
    # rejected record must still be reported and fail the flush.
    broker = private_tansu(schemas={"strict": STRICT_SCHEMA})
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    ensure_topics(kafka, {"strict": 1})
    producer = PageProducer(kafka, delivery_timeout_ms=5_000)
    good = [orjson.dumps({"n": i}) for i in range(50)]
    producer.send_page("strict", [b"k"] * 50, good, [[] for _ in good], [0] * 50)
    assert producer.flush() == 50
    bad = [*good[:10], b'{"no": "n"}', *good[10:20]]
    producer.send_page("strict", [b"k"] * len(bad), bad, [[] for _ in bad], [0] * len(bad))
    with pytest.raises(ProduceError, match="validate record") as info:
        producer.flush()
    assert info.value.failed >= 1 and info.value.acked == len(bad) - info.value.failed
    with pytest.raises(ProduceError, match="create a new one"):
        producer.send_page("strict", [b"k"], [good[0]], [[]], [0])
