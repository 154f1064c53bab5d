"""The sink's partition bookkeeping: what each partition read, what it may commit, what a revoke must wait for.

One :class:`Partitions` per run, shared by the reader (main thread), the write
workers and the DLQ's delivery callbacks; every method takes its one lock and
does no I/O, so the run decides what to do with the answers (commit, wait, fail).

Per partition it keeps:

- the :class:`~sncli.sink.commits.CommitTracker` lane: every record from the
  moment it is read until it is finished (written, skipped, or acknowledged by
  the DLQ); the commit is its low watermark;
- a *generation*, bumped when the partition is revoked: a record finished
  under an older generation is not marked done (its new owner reads it again);
- a *cancel* event, one per assignment: set on a revoke or when the run gives
  its writes up; a write carrying it makes no further HTTP attempt;
- how many writes have an HTTP call under way and how many DLQ records were
  sent but not acknowledged: what a revoke waits for before it returns;
- the offset last committed, and the partitions lost in a rebalance before
  their progress was committed (the run cannot report success then).

The invariant a revoke relies on: :meth:`start_write` checks the cancel event and
counts the write under the same lock :meth:`cancel` sets it under, so once a
revoke has cancelled and then seen no running write, none of its partitions
starts one.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable

from sncli.sink.commits import CommitTracker

TopicPart = tuple[str, int]


class Partitions:
    """Thread-safe per-partition state of one sink run (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tracker = CommitTracker()
        self._generation: dict[TopicPart, int] = {}
        self._cancels: dict[TopicPart, threading.Event] = {}  # the current assignment's, per partition
        self._running: Counter[TopicPart] = Counter()  # writes with an HTTP call under way
        self._dead_lettering: Counter[TopicPart] = Counter()  # DLQ records sent, not acknowledged yet
        self._committed: dict[TopicPart, int] = {}
        self._unsaved: dict[TopicPart, int] = {}  # lost partitions -> the commit that failed for them

    # ------------------------------------------------------------------ records

    def read(self, tp: TopicPart, offset: int) -> tuple[int, threading.Event]:
        """Track a record just read; its partition's generation and cancel event for its write."""
        with self._lock:
            self._tracker.add(tp, offset)
            return self._generation.get(tp, 0), self._cancels.setdefault(tp, threading.Event())

    def done(self, tp: TopicPart, offset: int, generation: int) -> None:
        """A record is finished; ignored when its partition was revoked since it was read."""
        with self._lock:
            if self._generation.get(tp, 0) != generation:
                return  # the partition was revoked meanwhile; its new owner re-reads this record
            self._tracker.done(tp, offset)

    def start_write(self, tp: TopicPart, generation: int, cancel: threading.Event) -> bool:
        """Count a write's HTTP calls as under way, unless its partition was cancelled or revoked."""
        with self._lock:
            if cancel.is_set() or self._generation.get(tp, 0) != generation:
                return False
            self._running[tp] += 1
            return True

    def end_write(self, tp: TopicPart) -> None:
        with self._lock:
            self._running[tp] -= 1

    def dead_letter_sent(self, tp: TopicPart) -> None:
        with self._lock:
            self._dead_lettering[tp] += 1

    def dead_letter_acked(self, tp: TopicPart) -> None:
        """The DLQ answered (acknowledged or failed) for a record sent by :meth:`dead_letter_sent`."""
        with self._lock:
            self._dead_lettering[tp] -= 1

    # ------------------------------------------------------------------ commits

    def uncommitted(self, only: Iterable[TopicPart] | None = None) -> dict[TopicPart, int]:
        """The finished prefix of each partition (of ``only``) that is not committed yet."""
        wanted = None if only is None else set(only)
        with self._lock:
            return {
                tp: offset
                for tp, offset in self._tracker.committable_all().items()
                if (wanted is None or tp in wanted) and self._committed.get(tp) != offset
            }

    def committed(self, offsets: dict[TopicPart, int]) -> None:
        """Kafka stored these offsets; a lost partition committed past its lost progress is healed."""
        with self._lock:
            self._committed.update(offsets)
            for tp, offset in offsets.items():
                if tp in self._unsaved and offset >= self._unsaved[tp]:
                    del self._unsaved[tp]  # read again after the rebalance and committed: healed

    def lost(self, progress: dict[TopicPart, int]) -> None:
        """Progress a revoke could not commit: the new owner writes those records again."""
        with self._lock:
            self._unsaved.update(progress)

    def unsaved(self) -> dict[TopicPart, int]:
        with self._lock:
            return dict(self._unsaved)

    def committed_by_topic(self) -> dict[str, dict[str, int]]:
        """What the run committed, as the summary shows it: topic -> partition (text) -> offset."""
        committed: dict[str, dict[str, int]] = {}
        with self._lock:
            for (topic, partition), offset in sorted(self._committed.items()):
                committed.setdefault(topic, {})[str(partition)] = offset
        return committed

    # ------------------------------------------------------------------ assignment

    def cancel(self, tps: Iterable[TopicPart] | None = None) -> None:
        """Set the cancel event of these partitions (all when None): their writes make no further attempt.

        A partition cancelled by name gets a fresh event when read again (a new assignment).
        """
        with self._lock:
            if tps is None:
                events = list(self._cancels.values())
            else:
                events = [e for tp in tps if (e := self._cancels.pop(tp, None)) is not None]
            for event in events:
                event.set()

    def in_flight(self, tps: Iterable[TopicPart]) -> int:
        """Records of these partitions read but not finished."""
        with self._lock:
            return sum(self._tracker.in_flight(tp) for tp in tps)

    def busy(self, tps: Iterable[TopicPart]) -> tuple[int, int]:
        """(writes with an HTTP call under way, DLQ records not acknowledged) of these partitions."""
        wanted = list(tps)
        with self._lock:
            return sum(self._running[tp] for tp in wanted), sum(self._dead_lettering[tp] for tp in wanted)

    def reassigned(self, tps: Iterable[TopicPart]) -> None:
        """Assigned (again): read from the committed offset, so forget what was tracked."""
        with self._lock:
            for tp in tps:
                self._tracker.forget(tp)

    def revoked(self, tps: Iterable[TopicPart]) -> None:
        """Lost: forget what was tracked and start a new generation, so late finishes are ignored."""
        with self._lock:
            for tp in tps:
                self._tracker.forget(tp)
                self._generation[tp] = self._generation.get(tp, 0) + 1
