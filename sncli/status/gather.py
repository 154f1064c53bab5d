"""Reading what ``sncli status`` shows (I/O): offsets store, Pushgateway, DLQ, the sink group's commits.

Each part is read on its own: a part that cannot be read is reported as a
problem (and needs attention), the others are still shown. Nothing is written
or committed anywhere, no run lock is taken: status can run beside a poll.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import TypeVar

from sncli.config import Settings
from sncli.errors import SncliError
from sncli.offsets.model import OFFSET_VERSION, StoredOffset, poll_key
from sncli.status.model import (
    DlqStatus,
    Policy,
    SinkLagStatus,
    StatusReport,
    TableStatus,
    assess,
    delete_cursor_key,
)
from sncli.status.pushed import LastRun, PushgatewayUnreadable, read_last_runs

log = logging.getLogger(__name__)
T = TypeVar("T")


def _attempt(what: str, problems: list[str], job: Callable[[], T]) -> T | None:
    try:
        return job()
    except (SncliError, PushgatewayUnreadable, OSError) as exc:
        problems.append(f"{what} ({exc})")
        return None


def _tables(settings: Settings, stored: dict[str, StoredOffset] | None, runs: list[LastRun],
            now: datetime) -> list[TableStatus]:
    """The source tables with their cursors, then the tables only a sink writes to (their runs)."""
    from sncli.offsets.admin import current_fingerprint

    out = []
    keys = stored or {}
    for name in settings.source.table_names():
        offset = keys.get(poll_key(name))
        delete_key = delete_cursor_key(name, keys)
        delete = keys.get(delete_key) if delete_key else None
        fingerprint = lag = None
        if offset is not None:
            same = offset.version == OFFSET_VERSION and offset.fingerprint == current_fingerprint(settings, name)
            fingerprint = "ok" if same else "mismatch"
            lag = int((now - offset.timestamp_datetime()).total_seconds())
        out.append(TableStatus(name, offset.timestamp if offset else None, offset.sys_id if offset else None, lag,
                               fingerprint, delete.timestamp if delete else None,
                               tuple(r for r in runs if r.table == name), cursor_known=stored is not None))
    polled = set(settings.source.table_names())
    for name in sorted({r.table for r in runs} - polled):
        out.append(TableStatus(name, None, None, None, None, None, tuple(r for r in runs if r.table == name),
                               polled=False))
    return out


def _dlq(settings: Settings, problems: list[str]) -> list[DlqStatus]:
    from sncli.dlq.reader import read_view
    from sncli.dlq.select import View, replay_group

    view = View(replay_group=replay_group(settings.sink.group_id))

    def pending(topic: str) -> dict[str, int]:
        return dict(Counter(entry.error_class or "?" for entry in read_view(settings.kafka, topic, view)))

    out = []
    for topic in dict.fromkeys([settings.sink.dlq_topic, settings.source_dlq_topic]):
        out.append(DlqStatus(topic, _attempt(f"DLQ {topic}", problems, partial(pending, topic))))
    return out


def _sink(settings: Settings, problems: list[str]) -> list[SinkLagStatus]:
    from sncli.kafka.lag import group_lag

    topics = [t.topic for t in settings.sink.topics]
    if not topics:
        return []
    lags = _attempt(f"the lag of group {settings.sink.group_id}", problems,
                    lambda: group_lag(settings.kafka, settings.sink.group_id, topics))
    tables = {t.topic: t.table for t in settings.sink.topics}
    if lags is None:
        return [SinkLagStatus(topic, tables[topic], True, None) for topic in topics]
    return [SinkLagStatus(lag.topic, tables[lag.topic], lag.exists, lag.lag, len(lag.partitions)) for lag in lags]


def gather_status(settings: Settings, policy: Policy, now: datetime) -> StatusReport:
    """Read every part and judge the whole (see :mod:`sncli.status.model`)."""
    from sncli.offsets.store import open_store

    problems: list[str] = []
    stored = _attempt("the offsets store", problems, lambda: open_store(settings).load_all())
    runs: list[LastRun] = []
    gateway = settings.metrics.pushgateway
    if gateway:
        runs = _attempt("the Pushgateway", problems, lambda: read_last_runs(gateway, settings.metrics.job)) or []
    tables = _tables(settings, stored, runs, now)
    has_sink = bool(settings.sink.topics)
    dlq = _dlq(settings, problems) if has_sink or settings.source.tables else []
    sink = _sink(settings, problems)
    reasons = assess(tables, dlq, sink, problems, policy)
    return StatusReport(now, tables, dlq, sink, settings.sink.group_id if has_sink else None, problems, reasons)
