"""The Kafka side of a verify: the latest message of each record, as the topic says it (pure: no I/O).

A message is mapped to the record it is about by its sys_id: the message key
itself on a table keyed by ``sys_id`` (no header to parse: the fast path of a
million-message read), else the ``sn.sys_id`` header every sncli message
carries, tombstones included (a message without one is not sncli's and is
counted as ``unidentified``).

Which message is the latest:

- keyed by ``sys_id``: every message of a record is in one partition, so the
  last one read is the last one written (a topic's latest message per key,
  what compaction keeps);
- keyed by fields: a record's messages move between keys (and partitions)
  when its key fields change, so the one with the newest timestamp (the
  record's ``sys_updated_on``; a tombstone's is its delete time) wins, the
  later read on a tie.

A record is *alive* when its latest message has a value; a tombstone (null
value: sncli never writes an empty one) means deleted. Only the alive ones and
their timestamp (whole seconds) take part in the window counts.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field

from sncli.verify.spans import Span

#: Stored for a record whose latest message is a tombstone.
DELETED = -1


@dataclass
class KafkaLatest:
    """Latest message per sys_id while the topic is read (``record`` is called once per message)."""

    by_time: bool = False  # fields-keyed: the newest timestamp wins (module doc)
    latest: dict[bytes, int] = field(default_factory=dict)  # sys_id -> timestamp in ms, or DELETED
    keys: dict[bytes, bytes] = field(default_factory=dict)  # fields-keyed: sys_id -> the latest message's key
    stamps: dict[bytes, int] = field(default_factory=dict)  # fields-keyed: sys_id -> newest timestamp, any kind
    messages: int = 0
    unidentified: int = 0

    def record(self, sys_id: bytes | None, key: bytes | None, ts_ms: int, alive: bool) -> None:
        """One message, in the order of its partition."""
        self.messages += 1
        if not sys_id:
            self.unidentified += 1
            return
        if self.by_time:
            current = self.stamps.get(sys_id)
            if current is not None and current > ts_ms:
                return
            self.stamps[sys_id] = ts_ms
            if key is not None:
                self.keys[sys_id] = key
        self.latest[sys_id] = ts_ms if alive else DELETED

    @property
    def alive(self) -> int:
        """Records whose latest message has a value."""
        return sum(1 for ts in self.latest.values() if ts != DELETED)

    def index(self, excluding: Collection[str] = ()) -> KafkaIndex:
        """The alive records sorted by timestamp (seconds), for counting and listing windows.

        ``excluding``: sys_ids left out of the windows (records ServiceNow changed
        after the compared range: their older version here is not a difference);
        :meth:`KafkaIndex.latest_of` still answers for them.
        """
        left_out = {sid.encode() for sid in excluding}
        alive = sorted(((ts // 1000, sid) for sid, ts in self.latest.items() if ts != DELETED and sid not in left_out))
        times = array("q", (t for t, _ in alive))
        ids = [sid.decode("utf-8", "replace") for _, sid in alive]
        return KafkaIndex(times, ids, self)


@dataclass
class KafkaIndex:
    """Alive records in ``(timestamp, sys_id)`` order: ``times[i]`` (seconds) and ``ids[i]``."""

    times: array[int]
    ids: list[str]
    source: KafkaLatest

    def __len__(self) -> int:
        return len(self.ids)

    def _range(self, span: Span) -> tuple[int, int]:
        start = bisect_left(self.times, span.lo)
        stop = bisect_left(self.times, span.hi)
        if span.tail:
            stop = bisect_right(self.ids, span.tail, bisect_left(self.times, span.hi),
                                bisect_right(self.times, span.hi))
        return start, stop

    def count(self, span: Span) -> int:
        start, stop = self._range(span)
        return max(0, stop - start)

    def within(self, span: Span) -> Iterator[tuple[str, int]]:
        """``(sys_id, timestamp)`` of the alive records in ``span``."""
        start, stop = self._range(span)
        for i in range(start, stop):
            yield self.ids[i], self.times[i]

    def _slot(self, sys_id: str, ts: int) -> tuple[int, bool]:
        """Where ``(ts, sys_id)`` is or would go in the order, and whether it is there."""
        start, stop = bisect_left(self.times, ts), bisect_right(self.times, ts)
        i = bisect_left(self.ids, sys_id, start, stop)
        return i, i < stop and self.ids[i] == sys_id

    def remove(self, sys_ids: Collection[str]) -> None:
        """Take these records out of the windows (found changed after the bound once the index was made)."""
        for sys_id in sys_ids:
            if (ts := self.latest_of(sys_id)) is not None:
                i, there = self._slot(sys_id, ts)
                if there:
                    del self.times[i]
                    del self.ids[i]

    def add(self, sys_ids: Collection[str]) -> None:
        """Put these records back into the windows (at their latest alive message), where they are not."""
        for sys_id in sys_ids:
            if (ts := self.latest_of(sys_id)) is not None:
                i, there = self._slot(sys_id, ts)
                if not there:
                    self.times.insert(i, ts)
                    self.ids.insert(i, sys_id)

    def latest_of(self, sys_id: str) -> int | None:
        """The timestamp (seconds) of the record's latest message when it is alive; None if absent or deleted."""
        ts = self.source.latest.get(sys_id.encode())
        return None if ts is None or ts == DELETED else ts // 1000

    def key_of(self, sys_id: str) -> bytes:
        """The key of the record's latest message (its sys_id on a table keyed by sys_id)."""
        raw = sys_id.encode()
        return self.source.keys.get(raw, raw)
