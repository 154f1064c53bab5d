"""The local broker's watermark fault, measured, and the EOF-based end detection that survives it.

DESIGN.md §8: on Tansu 0.6.0, ListOffsets(latest) answers the last batch's base
offset + 1 once a partition holds multi-record batches. These tests pin that
fact down (so a broker upgrade that fixes it is noticed, not assumed) and show
that sncli.kafka.consumer finishes a drain exactly at the true end anyway.
"""

from __future__ import annotations

import time

import pytest

from sncli.config import KafkaSettings
from sncli.kafka.admin import ensure_topics
from sncli.kafka.consumer import EndTracker, Polled, consumer_config, rebalance_callbacks, start_positions, track
from sncli.kafka.producer import PageProducer
from tests.fixtures.kafka import read_all

pytestmark = pytest.mark.integration

TRUE_COUNT = 105
BATCH = 20  # records per flush, so the partition holds several multi-record batches


def _produce_in_batches(bootstrap: str, topic: str, partitions: int = 1) -> None:
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    ensure_topics(kafka, {topic: partitions})
    producer = PageProducer(kafka, delivery_timeout_ms=10_000)
    sent = 0
    while sent < TRUE_COUNT:
        n = min(BATCH, TRUE_COUNT - sent)
        for i in range(sent, sent + n):
            producer.send(topic, f"k{i}".encode(), f"v{i}".encode(), [], None)
        assert producer.flush() == n
        sent += n


def _is_tansu(bootstrap: str) -> bool:
    from confluent_kafka.admin import AdminClient

    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5)
    return str(metadata.cluster_id).startswith("tansu")


def test_list_offsets_latest_is_wrong_on_tansu_but_fetch_watermark_is_right(
    kafka_bootstrap: str, unique_topic: str
) -> None:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    _produce_in_batches(kafka_bootstrap, unique_topic)
    consumer = Consumer(consumer_config(KafkaSettings(bootstrap_servers=kafka_bootstrap), "wm-probe"))
    try:
        tp = TopicPartition(unique_topic, 0)
        _low, listed_high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
        consumer.assign([TopicPartition(unique_topic, 0, OFFSET_BEGINNING)])
        msg = None
        deadline = time.monotonic() + 10
        while msg is None and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
        assert msg is not None and msg.error() is None
        _low, fetched_high = consumer.get_watermark_offsets(tp, cached=True)
    finally:
        consumer.close()

    assert fetched_high == TRUE_COUNT, "the fetch response's high watermark is the true end"
    if _is_tansu(kafka_bootstrap):
        # The measured fault: base offset of the last batch (100, holding 100..104) + 1.
        last_batch_base = (TRUE_COUNT - 1) // BATCH * BATCH
        assert listed_high == last_batch_base + 1
    else:
        assert listed_high == TRUE_COUNT


def test_end_tracker_finishes_exactly_at_the_true_end(kafka_bootstrap: str, unique_topic: str) -> None:
    from confluent_kafka import Consumer

    _produce_in_batches(kafka_bootstrap, unique_topic, partitions=3)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    consumer = Consumer(consumer_config(kafka, f"g-{unique_topic}", session_timeout_ms=2000, heartbeat_interval_ms=500))
    tracker = EndTracker()
    consumer.subscribe([unique_topic], **rebalance_callbacks(tracker))
    data: list[tuple[int, int]] = []
    try:
        deadline = time.monotonic() + 30
        while not tracker.all_finished() and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if track(consumer, tracker, msg) is Polled.DATA:
                data.append((msg.partition(), msg.offset()))
        assert tracker.all_finished(), tracker.unfinished()
        ends = tracker.ends()
    finally:
        consumer.close()

    assert len(data) == TRUE_COUNT
    assert len(set(data)) == TRUE_COUNT
    per_partition = {p: sum(1 for q, _ in data if q == p) for p in range(3)}
    assert ends == {(unique_topic, p): per_partition[p] for p in range(3)}


def test_records_produced_after_the_end_was_learned_are_left_for_the_next_run(
    kafka_bootstrap: str, unique_topic: str
) -> None:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    _produce_in_batches(kafka_bootstrap, unique_topic)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    consumer = Consumer(consumer_config(kafka, f"g-{unique_topic}", max_partition_fetch_bytes=64))
    tracker = EndTracker()
    tracker.assign([(unique_topic, 0)])
    consumer.assign([TopicPartition(unique_topic, 0, OFFSET_BEGINNING)])
    kinds: list[Polled] = []
    late = PageProducer(kafka, delivery_timeout_ms=10_000)
    try:
        deadline = time.monotonic() + 20
        produced_late = False
        while not tracker.all_finished() and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            kinds.append(track(consumer, tracker, msg))
            if not produced_late and kinds[-1] is Polled.DATA:
                # The end is frozen at the first fetch; these must not extend the run.
                for i in range(10):
                    late.send(unique_topic, None, f"late{i}".encode(), [], None)
                assert late.flush() == 10
                produced_late = True
        assert tracker.all_finished()
    finally:
        consumer.close()

    assert kinds.count(Polled.DATA) == TRUE_COUNT
    assert tracker.ends() == {(unique_topic, 0): TRUE_COUNT}
    assert len(read_all(kafka_bootstrap, unique_topic)) == TRUE_COUNT + 10


def test_start_positions_take_the_groups_commits_and_the_reset_policy_elsewhere(
    kafka_bootstrap: str, unique_topic: str
) -> None:
    """Committed partitions start at their commit; the others where auto.offset.reset says, resolved at once."""
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, OFFSET_INVALID, Consumer, TopicPartition

    _produce_in_batches(kafka_bootstrap, unique_topic, partitions=2)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    group = f"g-{unique_topic}"
    committer = Consumer(consumer_config(kafka, group, session_timeout_ms=2000, heartbeat_interval_ms=500))
    try:
        committer.commit(offsets=[TopicPartition(unique_topic, 0, 7)], asynchronous=False)
    finally:
        committer.close()

    consumer = Consumer(consumer_config(kafka, group, session_timeout_ms=2000, heartbeat_interval_ms=500))
    try:
        parts = [TopicPartition(unique_topic, 0), TopicPartition(unique_topic, 1)]
        earliest = {p.partition: p.offset for p in start_positions(consumer, parts, "earliest")}
        latest = {p.partition: p.offset for p in start_positions(consumer, parts, "latest")}
        untouched = {p.partition: p.offset for p in start_positions(consumer, parts, "error")}

        consumer.assign(start_positions(consumer, parts, "earliest"))
        first: dict[int, int] = {}
        deadline = time.monotonic() + 30
        while len(first) < 2 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                first.setdefault(msg.partition(), msg.offset())
    finally:
        consumer.close()

    assert earliest == {0: 7, 1: OFFSET_BEGINNING}
    assert latest == {0: 7, 1: OFFSET_END}
    assert untouched == {0: OFFSET_INVALID, 1: OFFSET_INVALID}  # left to librdkafka
    assert first == {0: 7, 1: 0}  # read from the commit, and from the start where there is none
