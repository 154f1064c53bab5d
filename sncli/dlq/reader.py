"""Reading the DLQ topic back, bounded, and a replay group's progress on it (I/O; commits nothing)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from sncli.config import KafkaSettings
from sncli.dlq.record import DlqEntry, parse_entry
from sncli.dlq.select import ReplayProgress, View, mark_pending
from sncli.dlq.writer import kafka_text
from sncli.kafka.admin import existing_topics
from sncli.kafka.conf import consumer_config
from sncli.kafka.consumer import COMMITTED_TIMEOUT_SECONDS, EndTracker, Polled, track
from sncli.kafka.errors import KafkaError

#: A bounded read gives up when no record or end-of-partition event arrived for this long.
READ_STALL_SECONDS = 60.0


def read_dlq(
    kafka: KafkaSettings,
    topic: str,
    *,
    start: Mapping[int, int] | None = None,
    stall_seconds: float = READ_STALL_SECONDS,
) -> Iterator[DlqEntry]:
    """Every record of the DLQ topic from the beginning (or ``start[partition]``) up to its end as seen at start.

    Reads by assignment (no group join, nothing committed). The end of each
    partition comes from fetch responses (partition EOF / fetch-cached high
    watermark, :mod:`sncli.kafka.consumer`), never a ListOffsets answer, so the
    read is complete also on a broker whose ListOffsets(latest) answer is wrong.
    A missing topic reads as empty.
    """
    partitions = existing_topics(kafka).get(topic)
    if not partitions:
        return
    consumer = Consumer(consumer_config(kafka, f"sncli-dlq-reader-{uuid.uuid4().hex[:12]}"))
    try:
        ends = EndTracker()
        ends.assign((topic, p) for p in range(partitions))
        first = start or {}
        consumer.assign([TopicPartition(topic, p, first.get(p, OFFSET_BEGINNING)) for p in range(partitions)])
        last_progress = time.monotonic()
        last_error: str | None = None
        while not ends.all_finished():
            msg: Any = consumer.poll(0.2)  # Any: its headers are ours (bytes values), not the library's wider type
            if msg is None:
                if time.monotonic() - last_progress > stall_seconds:
                    hint = f" (last error: {last_error})" if last_error else ""
                    raise KafkaError(f"reading {topic}: no progress for {stall_seconds:.0f}s{hint}")
                continue
            kind = track(consumer, ends, msg)
            if kind is Polled.ERROR:
                last_error = msg.error().str()
                continue
            last_progress = time.monotonic()
            if kind is Polled.DATA:
                timestamp_type, timestamp_ms = msg.timestamp()
                yield parse_entry(
                    msg.partition(), msg.offset(), timestamp_ms if timestamp_type else None,
                    msg.key(), msg.value(), msg.headers() or [],
                )
    finally:
        consumer.close()


def read_replay_progress(kafka: KafkaSettings, topic: str, group: str, partitions: int) -> ReplayProgress:
    """The replay group's committed offsets on ``topic`` (an OffsetFetch: no group join, nothing committed)."""
    # Never assigned nor subscribed: closing it cannot commit, whatever kafka.client says.
    consumer = Consumer(consumer_config(kafka, group, enable_auto_commit=False))
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)],
                                   timeout=COMMITTED_TIMEOUT_SECONDS)
    except KafkaException as exc:
        raise KafkaError(f"reading the progress of replay group {group} on {topic}: {kafka_text(exc)}") from None
    finally:
        consumer.close()
    committed: dict[int, int] = {}
    for tp in found:
        if tp.error is not None:
            raise KafkaError(f"reading the progress of replay group {group} on {topic}[{tp.partition}]: "
                             f"{tp.error.str()}")
        if tp.offset >= 0:  # negative: the group never committed this partition
            committed[tp.partition] = tp.offset
    return ReplayProgress(group, committed)


def read_view(kafka: KafkaSettings, topic: str, view: View) -> Iterator[DlqEntry]:
    """The DLQ records ``view`` selects; the pending view reads from the replay group's commit on."""
    if view.replay_group is None:
        yield from read_dlq(kafka, topic)
        return
    partitions = existing_topics(kafka).get(topic)
    if not partitions:
        return
    progress = read_replay_progress(kafka, topic, view.replay_group, partitions)
    start = None if view.history else dict(progress.committed)
    yield from mark_pending(read_dlq(kafka, topic, start=start), progress, history=view.history)
