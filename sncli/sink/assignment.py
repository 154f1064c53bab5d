"""The consumer's side of the sink's partitions: start reading, commit, pause, and the assign / revoke callbacks.

Commits take the finished prefix of each partition from
:class:`~sncli.sink.partitions.Partitions`, so no commit ever passes a record
that is not finished.

A revoke ends a partition's writes the way a stop does: it lets the partition's
records finish for a while (``REVOKE_WAIT_SECONDS``), then sets the partition's
cancel event, waits until no write of the partition has an HTTP call under way,
commits what is finished, and only then returns, so the partition's new owner
never races a retry of the old one for the same key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from sncli.kafka.consumer import EndTracker, rebalance_callbacks, start_positions
from sncli.sink.partitions import Partitions, TopicPart

log = logging.getLogger(__name__)

#: How long a revoke lets its partitions' records finish before giving the rest up; then it waits
#: for the HTTP attempts already sent (at most this, or twice the request timeout: connect + read).
REVOKE_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class RunHooks:
    """What a revoke needs from its run."""

    stopping: Callable[[], bool]  # the run is stopping (a stop request, an error, its deadline): no grace
    serve: Callable[[float], None]  # take the DLQ's acknowledgements for up to this many seconds
    fail: Callable[[str], None]  # the run fails with this message (the first one wins)


class HoldUntilEnds:
    """Hold records back until every assigned partition's end is known (``SinkRun(wait_for_ends=True)``).

    For a run that writes into the topic it reads (dlq replay): a record it
    dead-letters again must land past the end seen at start, never extend it.
    """

    def __init__(self, ends: EndTracker) -> None:
        self._ends = ends
        self._held: list[Message] | None = []  # None once passed

    @property
    def passed(self) -> bool:
        """Every end was known once: records are no longer held."""
        return self._held is None

    def admit(self, msg: Message, *, record: bool) -> list[Message] | None:
        """Hold ``msg`` (when it is a ``record``); None while an end is unknown, else every record held, in order."""
        assert self._held is not None, "admit() after the gate passed"
        if record:
            self._held.append(msg)
        if any(self._ends.needs_end(tp) for tp in self._ends.assigned):
            return None
        held, self._held = self._held, None
        return held


class Assignment:
    """The partitions one run reads, on the consumer's side; the state is in :class:`Partitions`."""

    def __init__(
        self,
        consumer: Consumer,
        parts: Partitions,
        ends: EndTracker,
        *,
        reset_policy: str,
        request_timeout: float,
        hooks: RunHooks,
    ) -> None:
        """``reset_policy``: the consumer's auto.offset.reset ("" leaves new partitions to librdkafka)."""
        self.consumer = consumer
        self.parts = parts
        self.ends = ends
        self.reset_policy = reset_policy
        self.request_timeout = request_timeout
        self.hooks = hooks
        self.assigned_once = False
        self.rebalancing = False  # partitions revoked, the next assignment not received yet
        self.finishing = False  # waiting for queued writes with every partition paused
        self.closing = False

    def start(self, wanted: list[str], present: dict[str, int], mode: Literal["subscribe", "assign"]) -> None:
        """Subscribe as a group member, or (``assign``) read every partition without joining the group."""
        if mode == "assign":
            # Read every partition from the group's committed offset (else the earliest), never join.
            parts = [TopicPartition(t, p) for t in wanted for p in range(present[t])]
            self.ends.assign((tp.topic, tp.partition) for tp in parts)
            self.consumer.assign(start_positions(self.consumer, parts, self.reset_policy))
            self.assigned_once = True
            return
        self.consumer.subscribe(
            wanted, **rebalance_callbacks(self.ends, on_assign=self._on_assign, on_revoke=self._on_revoke)
        )

    def pause(self, tp: TopicPart) -> None:
        try:
            self.consumer.pause([TopicPartition(tp[0], tp[1])])
        except Exception as exc:  # the partition was revoked meanwhile: nothing to pause
            log.debug("pause %s: %s", tp, exc)

    def resume_all(self) -> None:
        try:
            assignment = self.consumer.assignment()
            if assignment:
                self.consumer.resume(assignment)
        except Exception as exc:
            log.debug("resuming: %s", exc)

    def pause_all(self) -> None:
        try:
            assignment = self.consumer.assignment()
            if assignment:
                self.consumer.pause(assignment)
        except Exception as exc:
            log.debug("pausing before finishing: %s", exc)

    def commit(self, *, final: bool, only: set[TopicPart] | None = None) -> bool:
        """Commit the finished prefix of each partition; False when Kafka refused it."""
        ready = self.parts.uncommitted(only)
        if not ready:
            return True
        try:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in sorted(ready.items())], asynchronous=False
            )
        except KafkaException as exc:
            text = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
            if final:
                self.hooks.fail(f"committing offsets failed: {text}")
            elif only is None:
                log.warning("committing offsets failed (will retry): %s", text)
            else:
                log.warning("committing offsets of revoked partitions failed: %s", text)
            return False
        self.parts.committed(ready)
        return True

    def _let_revoked_finish(self, revoked: set[TopicPart]) -> None:
        """A grace of up to REVOKE_WAIT_SECONDS for the revoked partitions' records to finish.

        What finishes here is committed and not written again by the new owner; a run that
        is stopping (a stop request, an error, its deadline) gives no grace.
        """
        deadline = time.monotonic() + REVOKE_WAIT_SECONDS
        while time.monotonic() < deadline and not self.hooks.stopping():
            if self.parts.in_flight(revoked) == 0:
                return
            self.hooks.serve(0.05)

    def _wait_for_revoked(self, revoked: set[TopicPart]) -> None:
        """Wait until the revoked partitions' HTTP calls under way have answered and their DLQ sends are acked.

        Called once their writes are given up. Bounded: an attempt already sent takes at
        most the request timeout (connect + read); a DLQ acknowledgement not in by then is
        left to the new owner (it reads the record again). A write still under way after
        the bound may land after the new owner's: the run fails rather than report success.
        """
        bound = max(REVOKE_WAIT_SECONDS, 2.0 * self.request_timeout)
        deadline = time.monotonic() + bound
        while True:
            running, dead_lettering = self.parts.busy(revoked)
            if running == 0 and dead_lettering == 0:
                return
            if time.monotonic() >= deadline:
                break
            self.hooks.serve(0.05)
        if running:
            self.hooks.fail(f"{running} writes of revoked partitions still under way after {bound:.0f}s; "
                       "they may land after the new owner's writes of the same keys")
        else:
            log.warning("%d DLQ records of revoked partitions not acknowledged within %.0fs; "
                        "the new owner handles those records again", dead_lettering, bound)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned_once = True
        self.rebalancing = False
        self.parts.reassigned((p.topic, p.partition) for p in partitions)
        if partitions:
            # A partition paused at its end before a rebalance stays paused in librdkafka;
            # assigned again, it must be read again from its committed offset.
            try:
                consumer.assign(start_positions(consumer, partitions, self.reset_policy))
                if self.finishing:
                    consumer.pause(partitions)  # read once the queued writes are done
                else:
                    consumer.resume(partitions)
            except Exception as exc:
                log.warning("resuming re-assigned partitions: %s", exc)
        log.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "no partitions")

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Before losing partitions: give their writes up, commit what is finished, forget them.

        When this returns, no write of these partitions is under way or will start: the
        new owner reads every unfinished record again, and no retry of this run can land
        after its write of the same key.
        """
        revoked = {(p.topic, p.partition) for p in partitions}
        if not revoked:
            return
        if not self.closing:
            self.rebalancing = True  # an empty assignment now is not the end of the run
            log.info("revoked %s", ", ".join(f"{t}[{p}]" for t, p in sorted(revoked)))
            self._let_revoked_finish(revoked)
        self.parts.cancel(revoked)  # queued writes are skipped, running ones make no further attempt
        if not self.closing:
            self._wait_for_revoked(revoked)
            progress = self.parts.uncommitted(revoked)
            if not self.commit(final=False, only=revoked):
                # Lost (session expired): the new owner writes these records again. Unless this
                # run gets them back and commits past them, it must not report success.
                self.parts.lost(progress)
        self.parts.revoked(revoked)
