"""One bounded drain: Kafka -> ServiceNow, dead-lettering failures, committing only finished work.

The main thread reads (consumer.poll), resolves each record (pure), and hands
writes to the keyed worker pool (:mod:`sncli.sink.pool`), whose workers apply
them (:mod:`sncli.sink.writer`). Each record is in the
:class:`~sncli.sink.commits.CommitTracker` from the moment it is read until it
is written, skipped, or *acknowledged* by the DLQ; commits (every few seconds,
on revoke, and at the end) take the tracker's per-partition low watermark, so
no commit ever passes a record that is not finished. A DLQ write that fails
leaves its record unfinished forever: the run stops with exit 1 and the commit
stays below it.

The run is bounded by the partitions' ends as learned from fetch responses
(:mod:`sncli.kafka.consumer`; never a bare ListOffsets answer), by
``--max-messages`` / ``--max-seconds``, or by a stop request (SIGTERM).
``--max-messages`` caps what is read; the records read are then written.
``--max-seconds`` is a deadline for the whole run, the wait for queued writes
included: past it, and on a stop request, the writes not started are dropped and
the running ones make no further attempt (one already sent runs to its answer,
bounded by ``servicenow.timeout_seconds``). What is given up stays unfinished, so
no commit passes it and the next run reads it again.

Giving a write up is how a revoke ends too (:mod:`sncli.sink.assignment`): every
write carries its partition's *cancel* event (:mod:`sncli.sink.partitions`).

:class:`SinkRun` is the engine; ``sink drain`` and ``dlq replay`` are two front
ends that differ only in what they read (the sink topics as a group member /
the DLQ by assignment) and how a message becomes a :class:`Job`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from confluent_kafka import Consumer, Message

from sncli.config import Settings, SinkTopic
from sncli.dlq.record import DeadLetterReason, Origin, dlq_headers
from sncli.dlq.signing import DlqSigner
from sncli.dlq.writer import DlqWriter
from sncli.errors import ExitCode
from sncli.kafka.admin import existing_topics
from sncli.kafka.conf import consumer_config
from sncli.kafka.consumer import EndTracker, Polled, reset_policy, track
from sncli.kafka.errors import KafkaError
from sncli.metrics import RunMetrics, push_per_table, push_started
from sncli.servicenow.client import ServiceNowClient
from sncli.servicenow.errors import CallAbandoned
from sncli.sink.assignment import Assignment, HoldUntilEnds, RunHooks
from sncli.sink.calls import calls_report, describe_limits, open_client, pool_threads
from sncli.sink.decode import make_decoder
from sncli.sink.job import DrainOptions, DrainSummary, Job, Prepare, Tally, record_of, select_topics, sink_tables
from sncli.sink.partitions import Partitions, TopicPart
from sncli.sink.pool import KeyedPool
from sncli.sink.resolve import Plan, RecordError, Skip, ValueDecoder, Write, lane_key, resolve
from sncli.sink.writer import Breaker, SystemicError, WriteFailed, apply_write

log = logging.getLogger(__name__)

COMMIT_INTERVAL_SECONDS = 2.0  # bounds the rework after a crash; a commit costs one round trip
STALL_SECONDS = 120.0


@dataclass
class _Watch:
    """What the read loop watches for a join timeout or a stall."""

    started: float
    join_timeout: float
    last_progress: float
    last_error: str | None = None


def topic_part(msg: Message) -> TopicPart:
    """Where a consumed message comes from."""
    topic, partition = msg.topic(), msg.partition()
    assert topic is not None and partition is not None  # set on every message poll() returns
    return topic, partition


@dataclass(frozen=True)
class _Item:
    job: Job
    write: Write
    topic: SinkTopic
    generation: int
    cancel: threading.Event  # its partition's, for this assignment: set = make no further attempt


def run_drain(
    settings: Settings,
    options: DrainOptions,
    *,
    stop: threading.Event | None = None,
    metrics: RunMetrics | None = None,
    consumer_overrides: dict[str, Any] | None = None,
) -> DrainSummary:
    """Drain once and push the run's metrics; raises SncliError only when the run could not start."""
    topics = {t.topic: t for t in select_topics(settings, options.topics)}

    def prepare(msg: Any) -> Job:
        record = record_of(msg)
        return Job((record.topic, record.partition), record.offset, record, topics[record.topic])

    run = SinkRun(
        settings,
        options,
        group_id=settings.sink.group_id,
        read_topics=list(topics),
        mode="subscribe",
        prepare=prepare,
        stop=stop,
        metrics=metrics,
        consumer_overrides=consumer_overrides,
    )
    return run.run_and_push("sink_drain", sink_tables(topics.values()))


class SinkRun:
    """The engine: read, resolve, write in a keyed pool, dead-letter, commit; one bounded pass."""

    def __init__(
        self,
        settings: Settings,
        options: DrainOptions,
        *,
        group_id: str,
        read_topics: list[str],
        mode: Literal["subscribe", "assign"],
        prepare: Prepare,
        stop: threading.Event | None = None,
        metrics: RunMetrics | None = None,
        consumer_overrides: dict[str, Any] | None = None,
        wait_for_ends: bool = False,
    ) -> None:
        """``wait_for_ends``: hold records back until every partition's end is known.

        For a run that writes into the topic it reads (dlq replay): a record it
        dead-letters again must land past the end seen at start, never extend it.
        """
        self.settings = settings
        self.wait_for_ends = wait_for_ends
        self._ends = EndTracker()
        self._gate = HoldUntilEnds(self._ends) if wait_for_ends else None
        self.options = options
        self.group_id = group_id
        self.read_topics = read_topics
        # A dry run never joins the group: that would rebalance a live drain.
        self.mode: Literal["subscribe", "assign"] = "assign" if options.dry_run else mode
        self.prepare = prepare
        self.stop = stop or threading.Event()
        self.metrics = metrics or RunMetrics()
        self.consumer_overrides = consumer_overrides or {}
        self.workers = options.workers or settings.sink.workers
        self.summary = DrainSummary(dry_run=options.dry_run, topics=sorted(read_topics), group_id=group_id,
                                    plan=[] if options.dry_run else None)
        self.decode: ValueDecoder = make_decoder(settings.kafka)
        self._lock = threading.Lock()  # _fatal
        self._tally = Tally(self.metrics)
        self._parts = Partitions()
        self._deadline: float | None = None  # --max-seconds, on the monotonic clock
        self._cut_short: str | None = None  # why the wait for queued writes was cut: max_seconds | signal
        self._fatal: str | None = None
        self._backlog: list[Message] = []  # records fetched while finishing, read when reading resumes
        self._assignment: Assignment | None = None  # exists while run() runs, with the consumer
        self._pool: KeyedPool[_Item] | None = None
        self._dlq_writer: DlqWriter | None = None
        self._client: ServiceNowClient | None = None
        self._next_commit = 0.0
        self._breaker = Breaker(self.workers)

    @property
    def assignment(self) -> Assignment:
        assert self._assignment is not None, "the assignment exists while run() runs"
        return self._assignment

    def run_and_push(self, command: str, tables: list[str]) -> DrainSummary:
        """Run, then push the metrics, one group per table (a dry run pushes nothing: it did nothing)."""
        exit_code = int(ExitCode.FAILED)
        metrics = self.settings.metrics
        if not self.options.dry_run:
            push_started(metrics.pushgateway, metrics.job, command, tables)
        try:
            summary = self.run()
            exit_code = summary.exit_code
            return summary
        finally:
            if not self.options.dry_run:
                push_per_table(metrics.pushgateway, metrics.job, self.metrics, command,
                               dict.fromkeys(tables, exit_code), exit_code)

    # ------------------------------------------------------------------ run

    def run(self) -> DrainSummary:
        started = time.monotonic()
        if self.options.max_seconds is not None:
            self._deadline = started + self.options.max_seconds
        present = existing_topics(self.settings.kafka)
        for name in self.read_topics:
            if name not in present:
                log.warning("topic %s does not exist yet; nothing to read from it", name)
        wanted = [t for t in self.read_topics if t in present]
        if not wanted:
            self.summary.duration_seconds = time.monotonic() - started
            return self.summary

        config = consumer_config(self.settings.kafka, self.group_id, **self.consumer_overrides)
        session_ms = int(config.get("session.timeout.ms", 45_000))
        hooks = RunHooks(stopping=lambda: self._cut_reason("end") is not None, serve=self._serve, fail=self._fail)
        self._assignment = Assignment(Consumer(config), self._parts, self._ends, reset_policy=reset_policy(config),
                                      request_timeout=self.settings.servicenow.timeout_seconds, hooks=hooks)
        try:
            if not self.options.dry_run:
                for line in describe_limits(self.settings, self.workers):
                    log.info("sink: %s", line)
                self._client = open_client(self.settings, self.workers, self.metrics)
                self._dlq_writer = DlqWriter(self.settings.kafka, self.settings.sink.dlq_topic,
                                             signer=DlqSigner.of(self.settings.sink))
                self._pool = KeyedPool(pool_threads(self.settings, self.workers), self.settings.sink.max_pending,
                                       self._write, name="sink-worker")
            self.assignment.start(wanted, present, self.mode)
            join_timeout = max(60.0, 2.5 * session_ms / 1000.0)
            stopped_by = self._loop(started, join_timeout=join_timeout)
            while self._settle(stopped_by):
                # A rebalance while the last writes finished handed this run partitions it has
                # not read to their end yet: they are part of this run, read them too.
                log.info("reading partitions assigned while finishing")
                self.assignment.resume_all()
                stopped_by = self._loop(started, join_timeout=join_timeout)
            self._finish(stopped_by)
        finally:
            self._close()
        self.summary.duration_seconds = time.monotonic() - started
        self.summary.servicenow = calls_report(self._client, self.summary.duration_seconds)
        return self.summary

    def _loop(self, started: float, *, join_timeout: float) -> str:
        """Read until the ends, a bound, a stop or an error; returns why it stopped (``stopped_by``)."""
        backlog, self._backlog = self._backlog, []
        for early in backlog:
            # Not read past a bound: they were never tracked, so no commit covers them.
            if self._fatal is None and not self.stop.is_set() and self._bound_hit() is None:
                self._read(early)
        watch = _Watch(started, join_timeout, last_progress=time.monotonic())
        next_commit = time.monotonic() + COMMIT_INTERVAL_SECONDS
        while True:
            now = time.monotonic()
            stopped_by = self._stopped_by(now, watch)
            if stopped_by is not None:
                return stopped_by
            if not self.options.dry_run and now >= next_commit:
                self.assignment.commit(final=False)
                next_commit = now + COMMIT_INTERVAL_SECONDS
            msg = self.assignment.consumer.poll(0.1)
            if self._dlq_writer is not None:
                self._dlq_writer.poll(0)
            if msg is not None and not self._take(msg, watch):
                return "error"

    def _stopped_by(self, now: float, watch: _Watch) -> str | None:
        """Why reading must stop now (error | signal | end | max_messages | max_seconds), or None."""
        if self._fatal is not None:
            return "error"
        if self._pool is not None and self._pool.crash is not None:
            self._fail(f"a sink worker crashed: {self._pool.crash!r}")
            return "error"
        if self.stop.is_set():
            return "signal"
        assignment = self.assignment
        if assignment.assigned_once and not assignment.rebalancing and (
            not self._ends.assigned or self._ends.all_finished()
        ):
            return "end"
        max_messages = self.options.max_messages
        if max_messages is not None and self.summary.messages >= max_messages:
            return "max_messages"
        if self._past_deadline():
            return "max_seconds"
        hint = f" (last error: {watch.last_error})" if watch.last_error else ""
        if not assignment.assigned_once and now - watch.started > watch.join_timeout:
            raise KafkaError(f"no partitions assigned to group {self.group_id} within {watch.join_timeout:.0f}s{hint}")
        if assignment.assigned_once and now - watch.last_progress > STALL_SECONDS:
            self._fail(f"no progress from Kafka for {STALL_SECONDS:.0f}s{hint}")
            return "error"
        return None

    def _take(self, msg: Message, watch: _Watch) -> bool:
        """Handle one polled message: a record is read, an end pauses its partition; False on a fatal error."""
        kind = track(self.assignment.consumer, self._ends, msg)
        if kind is Polled.ERROR:
            err = msg.error()
            assert err is not None  # track() calls a message with an error ERROR
            watch.last_error = err.str()
            if err.fatal():
                self._fail(f"Kafka consumer error: {watch.last_error}")
                return False
            log.warning("Kafka consumer: %s", watch.last_error)
            return True
        watch.last_progress = time.monotonic()
        if self._gate is not None and not self._gate.passed:
            released = self._gate.admit(msg, record=kind is Polled.DATA)
            for early in released or ():
                if self._bound_hit() is None:
                    self._read(early)
            if released is None or kind is Polled.DATA:
                return True  # held back, or read just now with the others held
        if kind is Polled.DATA:
            self._read(msg)
        else:
            tp = topic_part(msg)
            if self._ends.finished(tp):
                self.assignment.pause(tp)
        return True

    def _finish(self, stopped_by: str) -> None:
        summary = self.summary
        summary.stopped_by = stopped_by
        if summary.plan:
            # Partitions are consumed concurrently; a plan an operator reads should not change
            # order from one dry run to the next.
            summary.plan.sort(key=lambda e: (e["topic"], e["partition"], e["offset"]))
        if self._pool is not None:
            self._pool.close(abandon=True)  # idle already (see _settle); drops nothing that was started
            if self._pool.crash is not None:
                self._fail(f"a sink worker crashed: {self._pool.crash!r}")
            if self.stop.is_set() and summary.stopped_by != "signal":
                summary.stopped_by = "signal"  # asked to stop while finishing: queued records were left
            elif self._cut_short == "max_seconds":
                summary.stopped_by = "max_seconds"  # the deadline passed while queued writes were waiting
        if self._dlq_writer is not None:
            missing = self._dlq_writer.flush()
            if missing:
                self._fail(f"{missing} DLQ records not acknowledged by Kafka{self._dlq_writer.broker_hint}")
        if not self.options.dry_run:
            self.assignment.commit(final=True)
            unsaved = self._parts.unsaved()
            if unsaved:
                lost = ", ".join(f"{t}[{p}] (up to {o})" for (t, p), o in sorted(unsaved.items()))
                self._fail(f"partitions were lost in a rebalance before their progress was committed: {lost}; "
                           "the records written for them will be read and written again by the next run")
        self._tally.fill(summary)
        summary.committed = self._parts.committed_by_topic()
        if self._fatal is not None:
            summary.error = self._fatal
            summary.stopped_by = "error"
            summary.exit_code = int(ExitCode.FAILED)
        elif summary.dlq or summary.refused:
            summary.exit_code = int(ExitCode.PARTIAL)
        else:
            summary.exit_code = int(ExitCode.OK)

    def _settle(self, stopped_by: str) -> bool:
        """Let the queued writes finish (or drop them on a stop); True when reading must go on.

        Meanwhile the group is served (a rebalance may happen), DLQ acknowledgements
        are taken and progress is committed every few seconds.
        """
        if self._pool is None:
            return False
        self.assignment.pause_all()
        self.assignment.finishing = True
        self._next_commit = time.monotonic() + COMMIT_INTERVAL_SECONDS
        cut = self._cut_reason(stopped_by)
        if cut is not None:
            self._give_up(cut)
        try:
            self._pool.wait_idle(abandon=cut is not None, tick=self._finishing_tick)
        finally:
            self.assignment.finishing = False
        if stopped_by != "end" or self._fatal is not None or self.stop.is_set() or self._cut_short is not None:
            return False
        return self.assignment.rebalancing or (bool(self._ends.assigned) and not self._ends.all_finished())

    def _finishing_tick(self) -> bool:
        """While queued writes finish: serve DLQ acks, keep the group membership, commit progress."""
        if self._dlq_writer is not None:
            self._dlq_writer.poll(0)
        try:
            msg = self.assignment.consumer.poll(0)  # partitions are paused: this serves the group (rebalances)
        except Exception as exc:
            log.debug("poll while finishing: %s", exc)
            msg = None
        if msg is not None and track(self.assignment.consumer, self._ends, msg) is Polled.DATA:
            self._backlog.append(msg)  # read once reading resumes; never dropped (commits would pass it)
        if time.monotonic() >= self._next_commit:
            self.assignment.commit(final=False)
            self._next_commit = time.monotonic() + COMMIT_INTERVAL_SECONDS
        cut = self._cut_reason("end")
        if cut is None:
            return False
        self._give_up(cut)
        return True  # drop what is queued; the running writes end at their current attempt

    def _cut_reason(self, stopped_by: str) -> str | None:
        """Why queued writes must not be waited for (a stop, an error, the deadline), or None."""
        if self._fatal is not None or stopped_by == "error":
            return "error"
        if self.stop.is_set() or stopped_by == "signal":
            return "signal"
        if stopped_by == "max_seconds" or self._past_deadline():
            return "max_seconds"
        return None

    def _give_up(self, why: str) -> None:
        """Make every write make no further attempt; what is left stays uncommitted for the next run."""
        if self._cut_short is None:
            self._cut_short = why
            if why != "error":
                log.warning("%s: finishing the HTTP calls under way, leaving the other writes for the next run",
                            "stop requested" if why == "signal" else "--max-seconds reached")
        self._parts.cancel()

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _bound_hit(self) -> str | None:
        """The bound that ends reading (max_messages | max_seconds), or None."""
        limit = self.options.max_messages
        if limit is not None and self.summary.messages >= limit:
            return "max_messages"
        return "max_seconds" if self._past_deadline() else None

    def _close(self) -> None:
        assignment = self._assignment
        if assignment is not None:
            assignment.closing = True
        self._give_up("error" if self._cut_short is None else self._cut_short)
        if self._pool is not None:
            self._pool.close(abandon=True, timeout=5.0)
        if assignment is not None:
            try:
                assignment.consumer.close()
            except Exception as exc:
                log.warning("closing the Kafka consumer: %s", exc)
        if self._client is not None:
            self._client.close()

    # ------------------------------------------------------------------ reading

    def _read(self, msg: Any) -> None:
        tp = (msg.topic(), msg.partition())
        offset = msg.offset()
        self.summary.messages += 1
        generation, cancel = self._parts.read(tp, offset)
        try:
            job = self.prepare(msg)
        except Exception as exc:  # a bug in a front end: stop without committing past it
            log.exception("preparing %s[%d]@%d failed", tp[0], tp[1], offset)
            self._fail(f"cannot prepare {tp[0]}[{tp[1]}]@{offset}: {exc!r}")
            return
        if job is None:
            self._done(tp, offset, generation)
            return
        if job.carry is not None:
            self._carry(job, generation)
            return
        topic = job.topic
        if topic is None:
            failure = DeadLetterReason("record", f"topic {job.record.topic} is not in sink.topics", attempts=0)
            self.summary.add_plan(job, None, RecordError("record", failure.message))
            self._dead_letter(job, failure, generation, op="none")
            return
        try:
            plan: Plan = resolve(job.record, topic, self.decode)
        except RecordError as exc:
            self.summary.add_plan(job, None, exc)
            self._dead_letter(job, DeadLetterReason(exc.error_class, exc.message, table=topic.table, attempts=0),
                              generation, op="none")
            return
        except KafkaError as exc:  # not the record's fault (the Schema Registry is down): stop here
            self._fail(f"cannot decode {tp[0]}[{tp[1]}]@{offset}: {exc}")
            return
        except Exception as exc:  # anything else one record's bytes provoke is that record's problem
            failure = DeadLetterReason("decode", f"cannot decode or resolve the value: {type(exc).__name__}: {exc}",
                              table=topic.table, attempts=0)
            self.summary.add_plan(job, None, RecordError("decode", failure.message))
            self._dead_letter(job, failure, generation, op="none")
            return
        self.summary.add_plan(job, plan, None)
        if isinstance(plan, Skip):
            self._tally.skipped(plan.table, "none", plan.reason)
            self._done(tp, offset, generation)
            return
        if self.options.dry_run:
            self._done(tp, offset, generation)
            return
        assert self._pool is not None
        item = _Item(job, plan, topic, generation, cancel)
        # False: stopping. The record stays unfinished, so nothing is committed past it.
        self._pool.submit(lane_key(job.record, plan), item, keep_waiting=self._keep_waiting)

    def _keep_waiting(self) -> bool:
        if self._dlq_writer is not None:
            self._dlq_writer.poll(0)
        return self._fatal is None and not self.stop.is_set() and not self._past_deadline()

    # ------------------------------------------------------------------ writing (worker threads)

    def _write(self, item: _Item) -> None:
        job = item.job
        # Checked and counted under the lock a revoke cancels under: once the revoke has seen
        # no running write, none of its partitions starts.
        if self._fatal is not None or not self._parts.start_write(job.tp, item.generation, item.cancel):
            return
        try:
            assert self._client is not None  # set before the pool that calls this is started
            outcome = apply_write(self._client, item.write, item.topic, cancel=item.cancel)
        except CallAbandoned as exc:
            # Neither written nor failed: it stays unfinished, so no commit passes it.
            log.debug("gave up %s[%d]@%d: %s", job.tp[0], job.tp[1], job.offset, exc)
            return
        except WriteFailed as exc:
            self._dead_letter(job, exc.failure, item.generation, op=item.write.op.lower())
            self._count_failure(exc.failure.error_class == "retries_exhausted", exc.failure.message)
            return
        except SystemicError as exc:
            self._fail(str(exc))
            return
        finally:
            self._parts.end_write(job.tp)
        self._count_failure(False, "")
        if outcome.outcome == "written":
            self._tally.written(item.write.table, outcome.op)
        else:
            self._tally.skipped(item.write.table, outcome.op, outcome.reason or "skipped")
        self._done(job.tp, job.offset, item.generation)

    def _count_failure(self, exhausted: bool, message: str) -> None:
        if self._breaker.record(exhausted):
            self._fail(f"ServiceNow failed {self._breaker.threshold} records in a row after all retries "
                       f"(last: {message[:300]}); stopping instead of dead-lettering the rest")

    def _dead_letter(self, job: Job, failure: DeadLetterReason, generation: int, *, op: str) -> None:
        if self.options.dry_run:
            self._done(job.tp, job.offset, generation)
            return
        assert self._dlq_writer is not None
        record = job.record
        origin = Origin(record.topic, record.partition, record.offset)
        headers = dlq_headers(record.headers, failure, origin, now=datetime.now(UTC), replay_count=job.replay_count)

        def acked(error: str | None) -> None:
            self._parts.dead_letter_acked(job.tp)
            if error is not None:
                self._fail(f"could not dead-letter {record.topic}[{record.partition}]@{record.offset} "
                           f"({failure.error_class}: {failure.message[:200]}): {error}")
                return
            self._tally.dead_lettered(failure.table or "", op, failure.error_class)
            self._done(job.tp, job.offset, generation)

        log.warning("dead-lettering %s[%d]@%d: %s: %s", record.topic, record.partition, record.offset,
                    failure.error_class, failure.message)
        self._parts.dead_letter_sent(job.tp)
        self._dlq_writer.send(record.key, record.value, headers, acked)

    def _carry(self, job: Job, generation: int) -> None:
        """Re-produce a record unchanged at the DLQ's end; it counts as finished once acknowledged."""
        self._tally.carried()
        if self.options.dry_run:
            self._done(job.tp, job.offset, generation)
            return
        assert self._dlq_writer is not None
        msg = job.carry

        def acked(error: str | None) -> None:
            if error is not None:
                self._fail(f"could not carry {job.tp[0]}[{job.tp[1]}]@{job.offset} forward: {error}")
                return
            self._done(job.tp, job.offset, generation)

        # As read, signature included: re-signing would vouch for a record nobody checked.
        self._dlq_writer.send(msg.key(), msg.value(), list(msg.headers() or []), acked, sign=False)

    def _done(self, tp: TopicPart, offset: int, generation: int) -> None:
        self._parts.done(tp, offset, generation)

    def _serve(self, timeout: float) -> None:
        """Take the DLQ's acknowledgements for up to ``timeout`` seconds (or just wait, in a dry run)."""
        if self._dlq_writer is not None:
            self._dlq_writer.poll(timeout)
        else:
            time.sleep(timeout)

    def _fail(self, message: str) -> None:
        with self._lock:
            first = self._fatal is None
            if first:
                self._fatal = message
        if first:
            log.error("run failed: %s", message)
