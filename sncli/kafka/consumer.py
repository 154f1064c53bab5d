"""Bounded reads: deciding when a partition is finished, on every broker.

A drain must stop at "the end as seen at start" and never stop early. The
obvious tool, ListOffsets(latest) (``get_watermark_offsets(cached=False)``), is
wrong on a broker that answers it from the last batch's *base* offset: once a
partition holds multi-record batches such a broker says 101 for 105 records
(the local test broker does: tests/integration/test_kafka_watermarks.py shows it).
Trusting it would end a drain with records unread.

Two signals are right on every broker, because they come from fetch responses:

* the high watermark a fetch response carries, which librdkafka caches
  (``get_watermark_offsets(cached=True)``) once the partition was fetched;
* the partition-EOF event (``enable.partition.eof=true``): the fetch position
  reached that high watermark.

:class:`EndTracker` (pure, no I/O) keeps per assigned partition the end learned
from the first fetch (frozen, so records produced during the run do not extend
it) and the position reached. A partition is finished when an EOF event arrived
for it, or its position reached the frozen end. Records at or past the frozen
end are reported as beyond the bound: the drain leaves them (and their offsets)
to the next run. :func:`track` feeds polled messages into a tracker.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from sncli.kafka.conf import consumer_config

__all__ = [
    "EndTracker",
    "PartitionEnd",
    "Polled",
    "consumer_config",
    "rebalance_callbacks",
    "reset_offset",
    "reset_policy",
    "start_positions",
    "track",
]

TopicPart = tuple[str, int]

#: How long the committed offsets of newly assigned partitions are waited for before
#: librdkafka is left to look them up itself (the same answer, 100 ms later).
COMMITTED_TIMEOUT_SECONDS = 10.0

# librdkafka's logical offsets (confluent_kafka.OFFSET_*), kept here so the mapping below is pure.
_OFFSET_BEGINNING, _OFFSET_END = -2, -1
_RESET_OFFSETS = {
    "smallest": _OFFSET_BEGINNING, "earliest": _OFFSET_BEGINNING, "beginning": _OFFSET_BEGINNING,
    "largest": _OFFSET_END, "latest": _OFFSET_END, "end": _OFFSET_END,
}


@dataclass
class PartitionEnd:
    """What the tracker knows about one assigned partition."""

    end: int | None = None  # high watermark from the first fetch response (frozen)
    position: int | None = None  # next offset to read, from the last message or EOF
    eof: bool = False

    @property
    def finished(self) -> bool:
        if self.eof:
            return True
        return self.end is not None and self.position is not None and self.position >= self.end


class EndTracker:
    """Per-partition end-of-run bookkeeping for a bounded drain (pure logic)."""

    def __init__(self) -> None:
        self._parts: dict[TopicPart, PartitionEnd] = {}

    # -------------------------------------------------------------- assignment

    def assign(self, partitions: Iterable[TopicPart]) -> None:
        """Start tracking these partitions (a re-assigned partition starts afresh)."""
        for tp in partitions:
            self._parts[tp] = PartitionEnd()

    def revoke(self, partitions: Iterable[TopicPart]) -> None:
        for tp in partitions:
            self._parts.pop(tp, None)

    @property
    def assigned(self) -> list[TopicPart]:
        return sorted(self._parts)

    # -------------------------------------------------------------- observations

    def needs_end(self, tp: TopicPart) -> bool:
        """True while the end of an assigned partition is unknown (ask the fetch-cached watermark)."""
        state = self._parts.get(tp)
        return state is not None and state.end is None and not state.eof

    def learn_end(self, tp: TopicPart, high_watermark: int) -> None:
        """Record the high watermark of the partition's first fetch response; later calls are ignored.

        Only pass fetch-cached watermarks here, never a ListOffsets answer (see module doc).
        Negative values (librdkafka's "not known yet") are ignored.
        """
        state = self._parts.get(tp)
        if state is not None and state.end is None and high_watermark >= 0:
            state.end = high_watermark

    def on_message(self, tp: TopicPart, offset: int) -> bool:
        """Note a received record; return True when it lies within this run's bound.

        False means: the partition is not assigned, was already finished, or the
        record is at or past the frozen end; the caller must neither process nor
        commit it (the next run reads it).
        """
        state = self._parts.get(tp)
        if state is None or state.finished:
            return False
        if state.end is not None and offset >= state.end:
            state.position = max(state.position or 0, state.end)
            return False
        state.position = offset + 1
        return True

    def on_eof(self, tp: TopicPart, offset: int) -> None:
        """The fetch position of ``tp`` reached the broker's high watermark ``offset``."""
        state = self._parts.get(tp)
        if state is None:
            return
        state.eof = True
        state.position = max(state.position or 0, offset)
        if state.end is None or offset < state.end:
            state.end = offset

    # -------------------------------------------------------------- questions

    def finished(self, tp: TopicPart) -> bool:
        state = self._parts.get(tp)
        return state is not None and state.finished

    def all_finished(self) -> bool:
        """True when at least one partition is assigned and every assigned one is finished."""
        return bool(self._parts) and all(state.finished for state in self._parts.values())

    def unfinished(self) -> list[TopicPart]:
        return sorted(tp for tp, state in self._parts.items() if not state.finished)

    def ends(self) -> dict[TopicPart, int | None]:
        """The end offset each partition is drained to (None while unknown)."""
        return {tp: state.end for tp, state in sorted(self._parts.items())}

    def state(self, tp: TopicPart) -> PartitionEnd | None:
        return self._parts.get(tp)


class Polled(enum.Enum):
    """What a polled message means for a bounded drain."""

    DATA = "data"  # a record within the bound: process it
    BEYOND_END = "beyond_end"  # a record past the bound or of an unassigned/finished partition: leave it
    EOF = "eof"  # a partition-EOF event (already applied to the tracker)
    ERROR = "error"  # any other consumer error event (msg.error()); the caller decides


# ``msg`` is Any: confluent's Message types topic/partition/offset as optional, a polled one has all three.
def track(consumer: Consumer, tracker: EndTracker, msg: Any) -> Polled:
    """Feed one message from ``consumer.poll()`` into ``tracker`` and classify it.

    The end of a partition is learned from librdkafka's fetch-cached high
    watermark the first time a record of it arrives (one call per partition).
    """
    err = msg.error()
    tp = (msg.topic(), msg.partition())
    if err is not None:
        if err.code() == KafkaError._PARTITION_EOF:
            tracker.on_eof(tp, msg.offset())
            return Polled.EOF
        return Polled.ERROR
    if tracker.needs_end(tp):
        _low, high = consumer.get_watermark_offsets(TopicPartition(tp[0], tp[1]), cached=True)
        tracker.learn_end(tp, high)
    return Polled.DATA if tracker.on_message(tp, msg.offset()) else Polled.BEYOND_END


def reset_policy(config: Mapping[str, Any]) -> str:
    """The ``auto.offset.reset`` a consumer built from ``config`` applies (librdkafka's default: largest)."""
    return str(config.get("auto.offset.reset", "largest"))


def reset_offset(policy: str) -> int | None:
    """The logical offset ``auto.offset.reset`` = ``policy`` starts a partition without a commit at.

    None for ``error`` (or anything unknown): such a partition is left to
    librdkafka, which then reports the error the policy asks for.
    """
    return _RESET_OFFSETS.get(policy.strip().lower())


def start_positions(consumer: Consumer, partitions: list[TopicPartition], policy: str) -> list[TopicPartition]:
    """``partitions`` with the offsets to read them from: the group's commit, else where ``policy`` says.

    Why not assign them with no offset and let librdkafka look: for a partition
    the group never committed, librdkafka resolves ``auto.offset.reset`` on a
    fixed 100 ms timer (librdkafka 2.16's offset reset path), so every drain of
    a new group, and every new partition, started 100 ms late. Asking for the commits here is the same OffsetFetch
    librdkafka would send (with ``read_committed`` it waits for stable offsets
    alike), and a logical offset given in the assignment is resolved at once.
    If the commits cannot be read, the partitions are returned as they are.
    """
    start = reset_offset(policy)
    if not partitions or start is None:
        return partitions
    try:
        committed = consumer.committed(partitions, timeout=COMMITTED_TIMEOUT_SECONDS)
    except Exception:  # the broker is slow or away: librdkafka looks the offsets up itself
        return partitions
    for tp in committed:
        if tp.error is not None:
            return partitions
        if tp.offset < 0:  # no commit (OFFSET_INVALID) or a logical one
            tp.offset = start
    return list(committed)


Rebalance = Callable[[Consumer, list[TopicPartition]], None]


def rebalance_callbacks(
    tracker: EndTracker,
    on_assign: Rebalance | None = None,
    on_revoke: Rebalance | None = None,
) -> dict[str, Rebalance]:
    """Keyword arguments for ``consumer.subscribe(topics, **...)`` that keep ``tracker`` in step.

    ``on_assign`` / ``on_revoke`` of the caller (e.g. to finish in-flight work
    and commit before losing a partition) run after / before the tracker update.
    """

    def _assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tracker.assign((p.topic, p.partition) for p in partitions)
        if on_assign is not None:
            on_assign(consumer, partitions)

    def _revoke(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if on_revoke is not None:
            on_revoke(consumer, partitions)
        tracker.revoke((p.topic, p.partition) for p in partitions)

    return {"on_assign": _assign, "on_revoke": _revoke, "on_lost": _revoke}
