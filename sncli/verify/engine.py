"""One ``sncli verify`` run: each selected table compared, optionally repaired and compared again.

Per table (one after the other: the topic read is the heavy part and has the
machine to itself):

1. the range: from ``--since`` (default: the table's ``start``) up to the
   stored poll cursor, or ``--until``; no cursor and no ``--until`` = cannot
   verify (exit 1);
2. the topic, read once into the latest message per record
   (:mod:`sncli.verify.kafka_read`);
3. the records changed after the bound listed and taken out of Kafka's
   counts (``pending``; listed again after the counts, for the records changed
   meanwhile); the first windows at the Kafka side's quantiles; counts compared and
   differing windows cut down (:func:`sncli.verify.search.search`), leaves
   diffed by sys_id; Kafka's unexplained records looked up by sys_id;
4. with ``--repair``, differences re-sent (:mod:`sncli.verify.repair`), then
   steps 2-3 again: the report is the second check's, with what was repaired.

Nothing here stores or moves any offset: the poll cursor is only read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from sncli.config import SysIdKey, source_fingerprint
from sncli.errors import SncliError, UsageError
from sncli.metrics import RunMetrics
from sncli.offsets.model import check_offset, normalize_timestamp, poll_key
from sncli.offsets.store import open_store
from sncli.source.outcome import describe_error
from sncli.source.runkit import finish_metrics, make_client, select_tables
from sncli.source.windows import to_epoch, to_sn
from sncli.verify.kafka_read import read_topic
from sncli.verify.report import TableReport, VerifyReport, record_metrics
from sncli.verify.search import RECHECK_ROUNDS, SearchPolicy, compare
from sncli.verify.sn_side import PAST_BOUND_MAX_ROWS, ServiceNowSide
from sncli.verify.spans import Bound

if TYPE_CHECKING:
    from sncli.config import Settings, SourceTable
    from sncli.offsets.store import OffsetStore
    from sncli.servicenow.client import ServiceNowClient

log = logging.getLogger("sncli.verify")


@dataclass(frozen=True)
class VerifyRequest:
    tables: list[str]
    since: str | None = None
    until: str | None = None
    repair: bool = False
    policy: SearchPolicy = field(default_factory=SearchPolicy)


class Progress(Protocol):
    """Where a run says what it is doing (a status line on a terminal, JSON lines elsewhere)."""

    def update(self, table: str, phase: str, done: int | None = None) -> None: ...


class _Quiet:
    def update(self, table: str, phase: str, done: int | None = None) -> None:
        return None


def _text(value: str, what: str) -> str:
    try:
        return normalize_timestamp(value)
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}") from None


def check_request(settings: Settings, request: VerifyRequest) -> list[SourceTable]:
    """The tables to verify; a usage error (exit 2) before any work for what cannot be verified."""
    tables = select_tables(settings, request.tables)
    for what, value in (("--since", request.since), ("--until", request.until)):
        if value is not None:
            _text(value, what)
    for table in tables:
        if table.timestamp_field != "sys_updated_on":
            raise UsageError(f"{table.name}: verify compares the messages' timestamps (sys_updated_on) with "
                             f"the table's; timestamp_field {table.timestamp_field} is not supported")
    return tables


def compared_range(store: OffsetStore, settings: Settings, table: SourceTable,
                   request: VerifyRequest) -> tuple[int, Bound]:
    """``since`` (epoch seconds) and the bound: ``--until`` (exclusive), else the stored poll cursor."""
    since = to_epoch(_text(request.since or table.start, "--since"))
    if request.until is not None:
        return since, Bound(to_epoch(_text(request.until, "--until")))
    stored = store.load(poll_key(table.name))
    if stored is None:
        raise SncliError(f"{table.name}: no poll cursor is stored, so there is nothing the topic should hold "
                         f"yet; give --until to compare a range anyway")
    check_offset(stored, source_fingerprint(settings, table))
    return since, Bound(to_epoch(stored.timestamp), stored.sys_id)


def run_verify(settings: Settings, request: VerifyRequest, progress: Progress | None = None) -> VerifyReport:
    tables = check_request(settings, request)
    started = time.monotonic()
    metrics = RunMetrics()
    report = VerifyReport()
    store = open_store(settings)
    client = make_client(settings, metrics, threads=8)
    try:
        for table in tables:
            report.tables[table.name] = verify_and_repair(settings, client, store, metrics, table, request,
                                                          progress or _Quiet())
    finally:
        client.close()
    report.duration_seconds = time.monotonic() - started
    record_metrics(metrics, report)
    codes = {name: int(t.exit_code) for name, t in report.tables.items()}
    finish_metrics(settings, metrics, "verify", codes, int(report.exit_code))
    return report


def verify_and_repair(settings: Settings, client: ServiceNowClient, store: OffsetStore, metrics: RunMetrics,
                      table: SourceTable, request: VerifyRequest, progress: Progress) -> TableReport:
    try:
        since, bound = compared_range(store, settings, table, request)
    except SncliError as exc:
        return TableReport(table.name, table.topic, error=str(exc))
    first = verify_table(settings, client, table, since, bound, request.policy, progress)
    if not request.repair or not first.differences:
        return first
    # Imported here: only a repair produces (it loads the source's produce path).
    from sncli.verify.repair import repair_table

    progress.update(table.name, "repairing", first.differences)
    try:
        done = repair_table(settings, client, metrics, table, first)
    except Exception as exc:
        first.error = f"repair failed: {describe_error(exc)[0]}"
        return first
    second = verify_table(settings, client, table, since, bound, request.policy, progress)
    second.repair = done
    second.before_repair = first.counts()
    second.requests += first.requests
    return second


def verify_table(settings: Settings, client: ServiceNowClient, table: SourceTable, since: int, bound: Bound,
                 policy: SearchPolicy, progress: Progress) -> TableReport:
    """Compare one table with its topic over ``[since, bound]``; failures become the report's error."""
    report = TableReport(table.name, table.topic, since=since, bound=_bound_text(bound))
    side = ServiceNowSide(client, table)
    try:
        _compare(settings, table, since, bound, policy, progress, side, report)
    except Exception as exc:
        report.error = describe_error(exc)[0]
        log.warning("%s: could not verify: %s", table.name, report.error, extra={"table": table.name})
    report.requests = side.requests
    return report


def _compare(settings: Settings, table: SourceTable, since: int, bound: Bound, policy: SearchPolicy,
             progress: Progress, side: ServiceNowSide, report: TableReport) -> None:
    name = table.name
    progress.update(name, "reading the topic", 0)
    latest = read_topic(settings.kafka, table.topic, keyed_by_sys_id=isinstance(table.key, SysIdKey),
                        progress=_every(lambda n: progress.update(name, "reading the topic", n)))
    report.kafka_messages, report.kafka_alive, report.unidentified = latest.messages, latest.alive, latest.unidentified
    progress.update(name, "listing what changed after the bound", 0)
    done = compare(latest, since, bound, side, policy, on_phase=lambda phase, n: progress.update(name, phase, n))
    if not done.past_complete:
        log.warning("%s: more than %d records changed after %s; only the first %d were taken out of the counts, "
                    "so a missing record may be hidden (run verify soon after a poll, or with --exact)",
                    name, PAST_BOUND_MAX_ROWS, _bound_text(bound), PAST_BOUND_MAX_ROWS, extra={"table": name})
    elif not done.settled:
        log.warning("%s: records kept changing after %s while the windows were counted (%d looks); a missing "
                    "record may be hidden (run verify again, or with --exact)",
                    name, _bound_text(bound), RECHECK_ROUNDS, extra={"table": name})
    report.windows = done.result.visited
    report.sn_records = sum(v.sn for v in done.result.top())
    report.findings = done.findings
    report.pending_complete = done.past_complete and done.settled
    report.extra_keys = {sys_id: done.index.key_of(sys_id) for sys_id in report.findings.extra}


def _bound_text(bound: Bound) -> str:
    return f"{to_sn(bound.ts)} (sys_id <= {bound.tail})" if bound.tail else f"{to_sn(bound.ts)} (excluded)"


def _every(call: Callable[[int], None], seconds: float = 1.0) -> Callable[[int], None]:
    """``call`` at most once every ``seconds`` (the progress of a million-message read)."""
    last = [0.0]

    def maybe(value: int) -> None:
        now = time.monotonic()
        if now - last[0] >= seconds:
            last[0] = now
            call(value)

    return maybe

