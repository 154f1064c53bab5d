"""Topic creation, refusal, and reachability against a real broker."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from sncli.config import KafkaSettings, TopicDefaults
from sncli.kafka.admin import delete_topics, ensure_topics, existing_topics, kafka_reachable
from sncli.kafka.errors import KafkaError
from tests.fixtures.kafka import PrivateTansu, new_topic_name

pytestmark = pytest.mark.integration


def test_creates_missing_topics_with_their_partition_counts(kafka_bootstrap: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topics=TopicDefaults(partitions=2))
    a, b = new_topic_name(), new_topic_name()
    created = ensure_topics(kafka, {a: 4, b: None})
    assert created == sorted([a, b])
    topics = existing_topics(kafka)
    assert topics[a] == 4
    assert topics[b] == 2  # None: the kafka.topics.partitions default
    assert ensure_topics(kafka, {a: 4, b: None}) == []  # idempotent
    assert ensure_topics(kafka, {a: 9}) == []  # an existing topic is never altered
    assert existing_topics(kafka)[a] == 4


def test_refuses_to_create_when_creation_is_off(kafka_bootstrap: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topics=TopicDefaults(create=False))
    missing = new_topic_name()
    with pytest.raises(KafkaError, match=f"topic {missing} does not exist and kafka.topics.create is false"):
        ensure_topics(kafka, {missing: 1})
    assert missing not in existing_topics(kafka)
    # Existing topics are fine with creation off.
    present = new_topic_name()
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), {present: 1})
    assert ensure_topics(kafka, {present: 1}) == []


def test_concurrent_creation_of_the_same_topic_is_tolerated(kafka_bootstrap: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    topic = new_topic_name()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: ensure_topics(kafka, {topic: 2}), range(4)))
    assert sum(len(r) for r in results) >= 1  # somebody created it, nobody failed
    assert existing_topics(kafka)[topic] == 2


def test_delete_topics_tolerates_missing_ones(kafka_bootstrap: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    topic = new_topic_name()
    ensure_topics(kafka, {topic: 1})
    delete_topics(kafka, [topic])
    deadline = time.monotonic() + 10
    while topic in existing_topics(kafka) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert topic not in existing_topics(kafka)
    delete_topics(kafka, [topic])  # already gone: no error


def test_unreachable_kafka_is_a_clear_bounded_error() -> None:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:9")
    started = time.monotonic()
    with pytest.raises(KafkaError, match=r"cannot reach Kafka at 127\.0\.0\.1:9 within 2s"):
        ensure_topics(kafka, {"x": 1}, timeout=2)
    assert time.monotonic() - started < 5
    ok, detail = kafka_reachable(kafka, timeout=2)
    assert not ok and "127.0.0.1:9" in detail


def test_reachable_reports_brokers_and_topics(kafka_bootstrap: str) -> None:
    ok, detail = kafka_reachable(KafkaSettings(bootstrap_servers=kafka_bootstrap), timeout=5)
    assert ok
    assert detail.startswith(f"{kafka_bootstrap}: 1 broker,")


def test_reachability_follows_the_broker(private_tansu: Callable[..., PrivateTansu]) -> None:
    broker = private_tansu()
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    assert kafka_reachable(kafka, timeout=5)[0]
    broker.stop()
    assert not kafka_reachable(kafka, timeout=2)[0]
