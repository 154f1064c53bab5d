"""Which offset each partition may commit, given records that finish out of order.

Lanes write records in parallel, so offset 7 can be written before offset 5.
Kafka only stores one number per partition (the next offset to read), so the
only safe commit is the lowest offset that is *not* finished yet: everything
below it was written, skipped or acknowledged by the DLQ. A record that never
finishes (the DLQ was down) pins the commit below itself for good, which is
exactly what "nothing committed past an unwritten record" needs.

Pure bookkeeping, no locks and no I/O: the drain serialises calls.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

Partition = tuple[str, int]  # (topic, partition)


@dataclass
class _Lane:
    pending: deque[int] = field(default_factory=deque)  # offsets in the order they were read
    unfinished: set[int] = field(default_factory=set)  # the pending offsets not finished yet
    finished: set[int] = field(default_factory=set)  # finished but not yet at the front
    next_offset: int | None = None  # the commit when nothing is pending: last read + 1


class CommitTracker:
    """Per-partition low watermark of finished work."""

    def __init__(self) -> None:
        self._parts: dict[Partition, _Lane] = {}

    def add(self, tp: Partition, offset: int) -> None:
        """Record that ``offset`` was read and is now in flight; offsets must increase per partition."""
        lane = self._parts.setdefault(tp, _Lane())
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        if lane.next_offset is not None and offset < lane.next_offset:
            raise ValueError(f"{tp}: offset {offset} read after {lane.next_offset - 1}; forget() the partition first")
        lane.pending.append(offset)
        lane.unfinished.add(offset)
        lane.next_offset = offset + 1

    def done(self, tp: Partition, offset: int) -> None:
        """Record that ``offset`` is finished (written, skipped, or acknowledged in the DLQ)."""
        lane = self._parts.get(tp)
        if lane is None or offset not in lane.unfinished:
            raise ValueError(f"{tp}: offset {offset} is not in flight")
        lane.unfinished.discard(offset)
        lane.finished.add(offset)
        while lane.pending and lane.pending[0] in lane.finished:
            lane.finished.discard(lane.pending.popleft())

    def committable(self, tp: Partition) -> int | None:
        """The offset to commit: the first unfinished one, else one past the last read; None if none read."""
        lane = self._parts.get(tp)
        if lane is None:
            return None
        if lane.pending:
            return lane.pending[0]
        return lane.next_offset

    def committable_all(self) -> dict[Partition, int]:
        out: dict[Partition, int] = {}
        for tp in self._parts:
            offset = self.committable(tp)
            if offset is not None:
                out[tp] = offset
        return out

    def in_flight(self, tp: Partition | None = None) -> int:
        """How many records are read but not finished (one partition, or all)."""
        if tp is not None:
            lane = self._parts.get(tp)
            return 0 if lane is None else len(lane.unfinished)
        return sum(len(lane.unfinished) for lane in self._parts.values())

    def forget(self, tp: Partition) -> None:
        """Drop a partition (revoked, or re-assigned and read again from its committed offset)."""
        self._parts.pop(tp, None)

    def partitions(self) -> list[Partition]:
        return list(self._parts)
