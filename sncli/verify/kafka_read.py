"""Reading a table's topic once, from its first offset to its end, into :class:`KafkaLatest`.

A plain consumer with an explicit assignment (no group join, nothing
committed), reading every partition from its log start. Values are never
decoded: a message gives its key (or its ``sn.sys_id`` header on a table keyed
by fields), its timestamp and whether it has a value at all.

Where a partition ends: its partition-EOF event, which a broker's fetch
answer decides (right on every broker; a ListOffsets answer is not, see
:mod:`sncli.kafka.consumer`). Records produced while the read runs may be read
too, which only makes the Kafka side newer. Every wait is bounded: a read that
gets neither a message nor an EOF for ``stall_seconds`` fails (the broker is
away, or a partition has no leader), and so does a topic that does not exist.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from sncli.config import KafkaSettings
from sncli.errors import SncliError
from sncli.kafka.conf import consumer_config
from sncli.verify.view import DELETED, KafkaLatest

GROUP_ID = "sncli-verify"  # never joined nor committed: the partitions are assigned
BATCH = 10_000
#: consume() returns after BATCH messages or this long: short, so the last batch of a partition
#: (and a small topic) does not wait a whole second for messages that will not come.
CONSUME_WAIT_SECONDS = 0.05
STALL_SECONDS = 60.0
METADATA_TIMEOUT_SECONDS = 10.0
SYS_ID_HEADER = "sn.sys_id"
#: A whole-topic read wants few, large fetches, fetched again as soon as the application took the
#: last ones: with librdkafka's defaults (1 MiB per partition per fetch, and a 1 s pause of a
#: partition's fetching whenever its pre-fetch queue is full, fetch.queue.backoff.ms) reading 300 000
#: 1 KiB messages from the local broker took 1.6-2.6 s; with these 0.7 s. Memory stays bounded by
#: librdkafka's queued.max.messages.kbytes (64 MiB by default).
READ_TUNING: dict[str, object] = {
    "enable.partition.eof": True,
    "fetch.wait.max.ms": 100,
    "max.partition.fetch.bytes": 16 * 1024 * 1024,
    "fetch.max.bytes": 100 * 1024 * 1024,
    "fetch.queue.backoff.ms": 10,
}


class TopicReadError(SncliError):
    """The topic could not be read to its end: the table cannot be verified."""


def read_topic(
    kafka: KafkaSettings,
    topic: str,
    *,
    keyed_by_sys_id: bool,
    stall_seconds: float = STALL_SECONDS,
    progress: Callable[[int], None] | None = None,
) -> KafkaLatest:
    """Every message of ``topic`` folded into the latest per record (:mod:`sncli.verify.view`)."""
    consumer = Consumer(consumer_config(kafka, GROUP_ID, **READ_TUNING))
    try:
        partitions = _partitions(consumer, topic)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        view = KafkaLatest(by_time=not keyed_by_sys_id)
        # No cyclic garbage is made here, but every batch allocates 10 000 messages, and each collection
        # that follows walks the growing dict of every key read so far: about a tenth of the read's time
        # (300 000 messages: 0.77 s with the collector on, 0.68 s off), more the larger the topic.
        collecting = gc.isenabled()
        gc.disable()
        try:
            _drain(consumer, view, len(partitions), keyed_by_sys_id, stall_seconds, progress)
        finally:
            if collecting:
                gc.enable()
        return view
    finally:
        consumer.close()


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    try:
        metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_SECONDS)
    except Exception as exc:
        raise TopicReadError(f"topic {topic}: its metadata could not be read ({exc})") from None
    info = metadata.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        reason = info.error.str() if info is not None and info.error is not None else "no partitions"
        raise TopicReadError(f"topic {topic} cannot be read: {reason}")
    return sorted(info.partitions)


def _drain(
    consumer: Consumer,
    view: KafkaLatest,
    partitions: int,
    keyed_by_sys_id: bool,
    stall_seconds: float,
    progress: Callable[[int], None] | None,
) -> None:
    """Why this function is long: the read loop of a million messages, kept in one frame on purpose."""
    ended: set[int] = set()
    latest = view.latest
    last_seen = time.monotonic()
    eof = KafkaError._PARTITION_EOF
    while len(ended) < partitions:
        batch = consumer.consume(BATCH, CONSUME_WAIT_SECONDS)
        now = time.monotonic()
        if not batch:
            if now - last_seen > stall_seconds:
                raise TopicReadError(f"reading the topic stalled: nothing for {stall_seconds:.0f}s with "
                                     f"{partitions - len(ended)} partition(s) unfinished")
            continue
        last_seen = now
        data = 0
        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.code() == eof:
                    ended.add(msg.partition() or 0)
                elif err.fatal() or err.code() in _GIVE_UP:
                    raise TopicReadError(f"reading the topic failed: {err.str()}")
                continue
            data += 1
            if keyed_by_sys_id:
                # The hot path: the key is the sys_id; a message without a value is a tombstone.
                key = msg.key()
                if key:
                    latest[key] = msg.timestamp()[1] if len(msg) else DELETED
                else:
                    view.unidentified += 1
            else:
                _by_header(view, msg)
        if keyed_by_sys_id:
            view.messages += data
        if progress is not None:
            progress(view.messages)


# ``msg`` is Any: confluent's Message types key and value as optional generics; a polled one is bytes.
def _by_header(view: KafkaLatest, msg: Any) -> None:
    headers = msg.headers() or []
    sys_id = next((value for name, value in headers if name == SYS_ID_HEADER), None)
    view.record(sys_id if isinstance(sys_id, bytes) else None, msg.key(), msg.timestamp()[1], len(msg) > 0)


_GIVE_UP = frozenset({
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError._UNKNOWN_PARTITION,
})
