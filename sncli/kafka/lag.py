"""How far a consumer group is behind on its topics, from fetch high watermarks (I/O; commits nothing).

Lag = high watermark - the group's committed offset, per partition. The high
watermark is taken from fetch responses only (the fetch-cached watermark of a
partition's first record, or its partition-EOF offset; :mod:`sncli.kafka.consumer`),
never from a ListOffsets(latest) answer, which the local broker gets wrong on
multi-record batches. So each partition is read from the group's
commit until one record or an EOF event says where its end is: one fetch per
partition, bounded by ``timeout``. A partition whose end is not learned in time
has an unknown lag (None), never a guessed one.

The group's commits are read by an OffsetFetch with the group's id; the
consumer is assigned, never subscribed, and does not commit, so the group is
neither joined nor moved.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from sncli.config import KafkaSettings
from sncli.kafka.admin import existing_topics
from sncli.kafka.consumer import COMMITTED_TIMEOUT_SECONDS, EndTracker, Polled, consumer_config, track
from sncli.kafka.errors import KafkaError

#: How long the ends of all partitions are waited for.
LAG_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    committed: int | None  # None: the group never committed this partition
    end: int | None  # the true high watermark; None: not learned in time
    start: int = 0  # where an uncommitted partition's unread records begin (its first record's offset)

    @property
    def lag(self) -> int | None:
        if self.end is None:
            return None
        return max(0, self.end - (self.committed if self.committed is not None else self.start))


@dataclass(frozen=True)
class TopicLag:
    topic: str
    exists: bool
    partitions: list[PartitionLag] = field(default_factory=list)

    @property
    def lag(self) -> int | None:
        """The unread records of the topic; None when any partition's end is unknown."""
        lags = [p.lag for p in self.partitions]
        return None if any(v is None for v in lags) else sum(v for v in lags if v is not None)


def group_lag(
    kafka: KafkaSettings, group: str, topics: list[str], *, timeout: float = LAG_TIMEOUT_SECONDS
) -> list[TopicLag]:
    """The lag of ``group`` on each topic (a missing topic: ``exists`` False, no partitions)."""
    present = existing_topics(kafka)
    wanted = [TopicPartition(t, p) for t in topics for p in range(present.get(t, 0))]
    ends: dict[tuple[str, int], tuple[int | None, int]] = {}
    committed: dict[tuple[str, int], int | None] = {}
    if wanted:
        consumer = Consumer(_config(kafka, group))
        try:
            committed = _committed(consumer, group, wanted)
            ends = _ends(consumer, wanted, committed, timeout)
        finally:
            consumer.close()
    out = []
    for topic in topics:
        parts = [
            PartitionLag(p, committed.get((topic, p)), *ends.get((topic, p), (None, 0)))
            for p in range(present.get(topic, 0))
        ]
        out.append(TopicLag(topic, topic in present, parts))
    return out


def _config(kafka: KafkaSettings, group: str) -> dict[str, Any]:
    config = consumer_config(kafka, group, enable_auto_commit=False)
    # Only the first fetch of each partition matters: keep it small.
    config.update({"fetch.max.bytes": 1_048_576, "max.partition.fetch.bytes": 65_536,
                   "client.id": f"sncli-lag-{uuid.uuid4().hex[:8]}"})
    return config


def _committed(consumer: Consumer, group: str, wanted: list[TopicPartition]) -> dict[tuple[str, int], int | None]:
    try:
        found = consumer.committed(wanted, timeout=COMMITTED_TIMEOUT_SECONDS)
    except KafkaException as exc:
        raise KafkaError(f"reading the commits of group {group}: {exc.args[0] if exc.args else exc}") from None
    return {(tp.topic, tp.partition): (tp.offset if tp.error is None and tp.offset >= 0 else None) for tp in found}


def _start(committed: int | None) -> int:
    return OFFSET_BEGINNING if committed is None else committed


def _ends(
    consumer: Consumer, wanted: list[TopicPartition], committed: dict[tuple[str, int], int | None], timeout: float
) -> dict[tuple[str, int], tuple[int | None, int]]:
    """(true end, first readable offset) per partition, from one fetch of each."""
    tracker = EndTracker()
    keys = [(tp.topic, tp.partition) for tp in wanted]
    tracker.assign(keys)
    consumer.assign([TopicPartition(t, p, _start(committed.get((t, p)))) for t, p in keys])
    first: dict[tuple[str, int], int] = {}  # where an uncommitted partition's unread records begin
    deadline = time.monotonic() + timeout
    while any(tracker.needs_end(key) for key in keys) and time.monotonic() < deadline:
        msg: Any = consumer.poll(0.2)
        if msg is None:
            continue
        kind = track(consumer, tracker, msg)
        if kind is not Polled.ERROR:
            first.setdefault((msg.topic(), msg.partition()), msg.offset())
    found = tracker.ends()
    return {key: (found.get(key), first.get(key, 0)) for key in keys}
