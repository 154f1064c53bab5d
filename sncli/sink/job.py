"""What a sink run is given and what it returns: its options, a :class:`Job` per message, its summary.

The two front ends of :class:`~sncli.sink.drain.SinkRun` (``sink drain`` and
``dlq replay``) differ only in what they read and in how they turn a consumed
message into a :class:`Job` (their :data:`Prepare`).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sncli.config import Settings, SinkTopic
from sncli.errors import UsageError
from sncli.metrics import RunMetrics
from sncli.sink.partitions import TopicPart
from sncli.sink.resolve import InRecord, Plan, RecordError, Skip, Write


@dataclass
class DrainOptions:
    topics: list[str] = field(default_factory=list)  # empty: every sink.topics entry
    max_messages: int | None = None
    max_seconds: float | None = None
    workers: int | None = None
    dry_run: bool = False


@dataclass
class DrainSummary:
    """The run's result: what ``--json`` prints and what the exit code is derived from."""

    messages: int = 0
    written: dict[str, int] = field(default_factory=dict)  # by op: post / patch / delete
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    dlq: dict[str, int] = field(default_factory=dict)  # by error class
    committed: dict[str, dict[str, int]] = field(default_factory=dict)  # topic -> partition -> offset
    duration_seconds: float = 0.0
    exit_code: int = 0
    stopped_by: str = "end"  # end | max_messages | max_seconds | signal | error
    error: str | None = None
    dry_run: bool = False
    topics: list[str] = field(default_factory=list)
    group_id: str = ""
    carried_forward: int = 0  # dlq replay: records not selected, re-queued unchanged at the DLQ's end
    refused: dict[str, int] = field(default_factory=dict)  # dlq replay: not written, by reason (unsigned, ...)
    plan: list[dict[str, Any]] | None = None
    servicenow: dict[str, Any] | None = None  # the run's calls: count, 429s, concurrency, rate limit (calls.py)

    def add_plan(self, job: Job, plan: Plan | None, error: RecordError | None) -> None:
        """A dry run's entry for one record: what it would do (or why it would go to the DLQ)."""
        if self.plan is None:
            return
        record = job.record
        entry: dict[str, Any] = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        if job.tp[0] != record.topic:
            entry.update(dlq_partition=job.tp[1], dlq_offset=job.offset)
        if error is not None:
            entry.update(operation="DLQ", error_class=error.error_class, error=error.message)
        elif isinstance(plan, Skip):
            entry.update(operation="SKIP", table=plan.table, sys_id=plan.sys_id, reason=plan.reason)
        elif isinstance(plan, Write):
            entry.update(operation=plan.op, table=plan.table, sys_id=plan.sys_id, fields=sorted(plan.body))
        self.plan.append(entry)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "messages": self.messages,
            "written": dict(sorted(self.written.items())),
            "written_total": sum(self.written.values()),
            "skipped": self.skipped,
            "skipped_by_reason": dict(sorted(self.skipped_by_reason.items())),
            "dlq": dict(sorted(self.dlq.items())),
            "dlq_total": sum(self.dlq.values()),
            "committed": self.committed,
            "duration_seconds": round(self.duration_seconds, 3),
            "exit_code": self.exit_code,
            "stopped_by": self.stopped_by,
            "error": self.error,
            "dry_run": self.dry_run,
            "topics": self.topics,
            "group_id": self.group_id,
        }
        if self.carried_forward:
            data["carried_forward"] = self.carried_forward
        if self.refused:
            data["refused"] = dict(sorted(self.refused.items()))
        if self.plan is not None:
            data["plan"] = self.plan
        if self.servicenow is not None:
            data["servicenow"] = self.servicenow
        return data


@dataclass(frozen=True)
class Job:
    """One consumed message, prepared by the front end (drain or DLQ replay).

    ``tp``/``offset`` are where it was consumed (what commits track); ``record`` is
    what resolve and the DLQ see: for a replay, the original topic, position, key,
    value and headers the record had before it was dead-lettered.
    """

    tp: TopicPart
    offset: int
    record: InRecord
    topic: SinkTopic | None  # None: no sink.topics entry applies (a replay of a removed topic)
    replay_count: int = 0  # written with a failure (0 = a first failure: no header)
    carry: Any = None  # a consumed message to re-produce unchanged to the DLQ (a replay passing it over)


#: Turns a consumed message into a Job, or None when there is nothing to do for it.
Prepare = Callable[[Any], Job | None]


def select_topics(settings: Settings, names: list[str]) -> list[SinkTopic]:
    """The sink.topics entries to drain (all when ``names`` is empty); an unknown name is a usage error."""
    configured = settings.sink.topics
    if not configured:
        raise UsageError("sink.topics is empty: nothing to drain")
    if not names:
        return list(configured)
    known = {t.topic: t for t in configured}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"--topic {', '.join(unknown)}: not in sink.topics (known: {', '.join(sorted(known))})")
    return [known[n] for n in dict.fromkeys(names)]


def sink_tables(topics: Iterable[SinkTopic]) -> list[str]:
    """Every table the topics may write: their own and those their headers may route to."""
    chosen = list(topics)
    return sorted({t.table for t in chosen} | {name for t in chosen for name in t.allowed_tables})


def record_of(msg: Any) -> InRecord:
    """A consumed message (confluent_kafka.Message) as resolve sees it."""
    timestamp_type, timestamp_ms = msg.timestamp()
    return InRecord(
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        key=msg.key(),
        value=msg.value(),
        headers=tuple(msg.headers() or ()),
        timestamp_ms=timestamp_ms if timestamp_type else None,
    )


class Tally:
    """What the run did, counted from any thread, in the summary and the run's metrics at once."""

    def __init__(self, metrics: RunMetrics) -> None:
        self.metrics = metrics
        self._lock = threading.Lock()
        self._written: Counter[str] = Counter()  # by op
        self._skipped: Counter[str] = Counter()  # by reason
        self._dlq: Counter[str] = Counter()  # by error class
        self._carried = 0

    def written(self, table: str, op: str) -> None:
        self.metrics.sink_records.labels(table=table, op=op, outcome="written").inc()
        with self._lock:
            self._written[op] += 1

    def skipped(self, table: str, op: str, reason: str) -> None:
        self.metrics.sink_records.labels(table=table, op=op, outcome="skipped").inc()
        with self._lock:
            self._skipped[reason] += 1

    def dead_lettered(self, table: str, op: str, error_class: str) -> None:
        """The DLQ acknowledged a record."""
        self.metrics.dlq_records.labels(**{"class": error_class}).inc()
        self.metrics.sink_records.labels(table=table, op=op, outcome="dlq").inc()
        with self._lock:
            self._dlq[error_class] += 1

    def carried(self) -> None:
        """A replay re-queues a record it passes over."""
        with self._lock:
            self._carried += 1

    def fill(self, summary: DrainSummary) -> None:
        with self._lock:
            summary.written = dict(self._written)
            summary.skipped = sum(self._skipped.values())
            summary.skipped_by_reason = dict(self._skipped)
            summary.dlq = dict(self._dlq)
            summary.carried_forward += self._carried
