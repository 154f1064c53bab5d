"""Which DLQ records a tool acts on (pure): the filters, and pending versus history.

The filters (``--table``, ``--error-class``, ``--since``, ``--topic``) are the
same for inspect, export and replay. Inspect and export also choose a
:class:`View`: only the records still pending for a replay group, or the full
history, each marked pending or not (:class:`ReplayProgress`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sncli.dlq.record import ERROR_CLASSES, DlqEntry, format_timestamp, ms_to_datetime, parse_iso
from sncli.errors import UsageError

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.ASCII)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Filters:
    """Which DLQ records a tool acts on; ``since_text`` keeps the option as typed, for messages."""

    table: str | None = None
    error_class: str | None = None
    since: datetime | None = None
    topic: str | None = None  # the original (source) topic
    since_text: str | None = None

    def matches(self, entry: DlqEntry) -> bool:
        if self.table is not None and entry.table != self.table:
            return False
        if self.error_class is not None and entry.error_class != self.error_class:
            return False
        if self.topic is not None and (entry.origin is None or entry.origin.topic != self.topic):
            return False
        if self.since is not None:
            when = entry.dead_lettered_at or ms_to_datetime(entry.kafka_timestamp_ms)
            if when is None or when < self.since:
                return False
        return True

    @property
    def empty(self) -> bool:
        return self.table is None and self.error_class is None and self.since is None and self.topic is None

    def describe(self) -> str:
        """A stable text of the filters as given (``--since 2h`` stays ``since=2h``)."""
        parts = []
        if self.topic is not None:
            parts.append(f"topic={self.topic}")
        if self.table is not None:
            parts.append(f"table={self.table}")
        if self.error_class is not None:
            parts.append(f"class={self.error_class}")
        if self.since is not None:
            parts.append(f"since={self.since_text or format_timestamp(self.since)}")
        return ",".join(parts)


def make_filters(
    table: str | None, error_class: str | None, since: str | None, *, now: datetime, topic: str | None = None
) -> Filters:
    """Validate the CLI filters (a bad one is a usage error, exit 2)."""
    if error_class is not None and error_class not in ERROR_CLASSES:
        raise UsageError(f"--error-class must be one of {', '.join(ERROR_CLASSES)}, got {error_class!r}")
    return Filters(
        table=table,
        error_class=error_class,
        since=None if since is None else parse_since(since, now=now),
        topic=topic,
        since_text=None if since is None else since.strip(),
    )


def parse_since(text: str, *, now: datetime) -> datetime:
    """``2h`` / ``30m`` / ``7d`` ago, or an ISO / ``YYYY-MM-DD HH:MM:SS`` time (UTC unless it says otherwise)."""
    value = text.strip()
    relative = _RELATIVE.fullmatch(value)
    if relative:
        return now - timedelta(seconds=float(relative.group(1)) * _UNITS[relative.group(2)])
    parsed = parse_iso(value)
    if parsed is None:
        raise UsageError(f"--since must be like 2h, 7d, 2024-05-01 or 2024-05-01T12:00:00Z, got {text!r}")
    return parsed


# --------------------------------------------------------------------------- pending or history


def replay_group(sink_group: str, explicit: str | None = None) -> str:
    """The consumer group replay progress is committed in: one per DLQ, whatever the filters.

    Here, not with replay (:mod:`sncli.sink.replay`): inspect and export read its progress too.
    """
    return explicit or f"{sink_group}-dlq-replay"


@dataclass(frozen=True)
class ReplayProgress:
    """How far a replay group got in each DLQ partition: the records below it are history.

    A replay finishes every record it reads before its commit passes it: the record
    was written to ServiceNow (fixed), or produced again at the DLQ's end, failed
    again with ``sncli.replay.count`` raised or carried forward unchanged (a copy
    that now stands for it). Either way a record below the group's commit is no
    longer pending, and every copy made for it lies past the end that replay read
    to, so at or past the commit. A replay killed after a copy was acknowledged but
    before its commit leaves both pending until the next replay (which re-reads
    the original: at-least-once, as the sink).
    """

    group: str
    committed: Mapping[int, int]  # partition -> the offset the next replay starts at (absent: nothing replayed)

    def start(self, partition: int) -> int:
        return self.committed.get(partition, 0)

    def pending(self, entry: DlqEntry) -> bool:
        return entry.offset >= self.start(entry.partition)


@dataclass(frozen=True)
class View:
    """Which DLQ records a listing (inspect, export) shows.

    ``replay_group`` None: every record, not marked (no replay group is asked).
    Otherwise only the records still pending for that group's replays, or with
    ``history`` every record, each marked pending or not.
    """

    replay_group: str | None = None
    history: bool = False


def mark_pending(entries: Iterable[DlqEntry], progress: ReplayProgress, *, history: bool) -> Iterator[DlqEntry]:
    """The entries marked pending or not; without ``history`` only the pending ones."""
    for entry in entries:
        pending = progress.pending(entry)
        if pending or history:
            yield replace(entry, pending=pending)
