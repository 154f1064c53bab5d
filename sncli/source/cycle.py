"""One bounded poll cycle over the selected tables: ``sncli source poll``.

Order of a cycle, and why:

1. Run locks for *every* selected table, before any work. If one is held the
   run exits 75 at once and does nothing (the simplest rule a scheduler can rely
   on: a 75 run changed nothing; the next scheduled run picks everything up).
2. ``HI`` = ServiceNow's clock (the ``Date`` of the cycle's first request) minus
   ``safety_lag_seconds``, the same for every table and every page of the cycle,
   so each table's cycle ends even while ServiceNow keeps writing.
3. Topics are created if missing (``kafka.topics.create``, with the table's
   ``partitions`` or ``kafka.topics.partitions``), or refused with a clear error
   when creation is turned off: producing to a missing topic would otherwise
   fail only after the delivery timeout.
4. Each table runs one range up to ``HI`` (:mod:`sncli.source.range_run`: the
   page loop of :mod:`sncli.source.poller`) on its own thread with its own
   producer; one table failing does not stop the others.
5. Metrics are pushed at the end whatever happened.

Exit code: 0 every table finished (caught up or stopped by a bound/signal: a
bounded stop is not a failure); 3 some tables failed, or records were
dead-lettered instead of produced (:mod:`sncli.source.deadletter`); when all failed, the
tables' common error code (2 for a refused stored offset, 1 for Kafka or
ServiceNow failures), else 1.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sncli.config import source_fingerprint
from sncli.errors import LockHeldError
from sncli.metrics import RunMetrics
from sncli.offsets import model as offsets_model
from sncli.offsets.lock import run_lock
from sncli.offsets.store import open_store
from sncli.source.cursor import Cursor, UpperBound, upper_bound
from sncli.source.outcome import (
    RunSummary,
    TableOutcome,
    combined_exit_code,
    complete_up_to,
    describe_error,
    lag_seconds,
    show,
)
from sncli.source.poller import Budget, Records, StopControl
from sncli.source.range_run import RangeRun
from sncli.source.runkit import (
    Background,
    check_source_settings,
    finish_metrics,
    make_client,
    new_producer,
    select_tables,
    start_metrics,
    start_topic_check,
)

if TYPE_CHECKING:
    from sncli.config import Settings, SourceTable
    from sncli.kafka.producer import PageProducer
    from sncli.offsets.lock import RunLock
    from sncli.offsets.store import OffsetStore
    from sncli.servicenow.client import ServiceNowClient

log = logging.getLogger("sncli.source")

#: Kept importable from here for ``sncli.doctor`` until its owner imports it from :mod:`sncli.source.runkit`.
__all__ = ["poll_table", "run_poll"]


# --------------------------------------------------------------------------- one table


def poll_table(
    *,
    settings: Settings,
    table: SourceTable,
    client: ServiceNowClient,
    store: OffsetStore | None,
    lock: RunLock | None,
    hi: UpperBound,
    stop: StopControl,
    budget: Budget,
    metrics: RunMetrics,
    outcome: TableOutcome,
    dry_run: bool = False,
    producer: PageProducer | None = None,
    topics: Background | None = None,
) -> None:
    """Poll one table up to ``hi`` (:class:`~sncli.source.range_run.RangeRun`); fills ``outcome``, raises nothing.

    ``topics``: the run's topic check, still running maybe; awaited before the
    first record is produced and before the table is reported done, so a topic
    that cannot be used fails the table even when it had nothing to send.
    """
    run = RangeRun(settings=settings, table=table, client=client, metrics=metrics, stop=stop, outcome=outcome,
                   key=offsets_model.poll_key(table.name), fingerprint=source_fingerprint(settings, table),
                   store=store, lock=lock, budget=budget)
    with run.guard(producer):
        run.load()
        start = outcome.cursor_before or Cursor.at_start(table.start)
        if dry_run or store is None:
            result = run.pages(hi, start, deliver=_count)
        else:
            run.open_kafka(producer)
            gate = None if topics is None else topics.wait
            if table.deletes == "audit" and not _deletes_caught_up(run, hi, gate):
                return  # records never run ahead of the deletes (sncli.source.deletes: order per key)
            result = run.pages(hi, start, gate=gate)
            if topics is not None:
                topics.wait()
        outcome.stopped = result.stopped or "caught_up"
        log.info(
            "%s: %d records in %d pages%s%s%s; cursor %s",
            table.name, result.records, result.pages,
            "" if outcome.deletes is None else f", {outcome.deletes} deletes before them",
            "" if result.stopped is None else f", stopped by {result.stopped}",
            f", {result.hidden} rows hidden by ACLs passed" if result.hidden else "",
            show(outcome.cursor_after), extra={"table": table.name},
        )


def _deletes_caught_up(run: RangeRun, hi: UpperBound, gate: Callable[[], None] | None) -> bool:
    """The table's deletes up to ``hi``, before its records; False (``outcome.stopped`` set) when stopped early."""
    table, outcome = run.table, run.outcome
    run.deletes_key = offsets_model.deletes_key(table.name)
    result = run.deletes(hi, Cursor.at_start(table.start), gate=gate)
    if result.stopped is None:
        return True
    outcome.stopped = result.stopped
    log.info("%s: %d deletes, stopped by %s before the records; deletes cursor %s", table.name, result.delivered,
             result.stopped, show(outcome.deletes_cursor), extra={"table": table.name})
    return False


def _count(records: Records, prepared: object) -> int:
    return 0  # --dry-run: counted as fetched, nothing produced


# --------------------------------------------------------------------------- the cycle


def run_poll(
    settings: Settings,
    *,
    tables: list[str] | None = None,
    max_records: int | None = None,
    max_seconds: float | None = None,
    dry_run: bool = False,
    stop: StopControl | None = None,
    metrics: RunMetrics | None = None,
) -> RunSummary:
    """One bounded poll cycle (see the module doc); a held lock gives exit code 75. Raises ConfigError."""
    selected = select_tables(settings, tables or [])
    check_source_settings(settings)
    names = [t.name for t in selected]
    started = time.monotonic()
    metrics = metrics or RunMetrics()  # the caller's, when it watches the counts (progress)
    summary = RunSummary(command="source_poll")
    summary.tables = {t.name: TableOutcome(t.name) for t in selected}
    stop = StopControl(max_seconds, parent=stop)
    try:
        with ExitStack() as stack:
            locks = {} if dry_run else _lock_all(stack, settings, names)
            if not dry_run:  # with the locks held: a run the lock refuses never overwrites the holder's start
                start_metrics(settings, "source_poll", names)
            _run_tables(settings, selected, locks, summary, metrics, stop, Budget(max_records), dry_run)
            summary.exit_code = combined_exit_code(list(summary.tables.values()))
            summary.duration_seconds = time.monotonic() - started
            codes = {name: (o.exit_code if o.error else combined_exit_code([o])) for name, o in summary.tables.items()}
            # Pushed while the tables' locks are held: counters are carried forward by reading
            # the gateway first (sncli.metrics), and no other poll of these tables pushes meanwhile.
            finish_metrics(settings, metrics, "source_poll", codes, summary.exit_code)
    except LockHeldError as exc:  # another run holds a table: nothing was done (exit 75)
        summary.exit_code = int(exc.exit_code)
        summary.error = str(exc)
        for outcome in summary.tables.values():
            outcome.stopped = "locked"
        summary.duration_seconds = time.monotonic() - started
        # Nothing was counted, so no counter is pushed: only the exit code and the duration.
        finish_metrics(settings, metrics, "source_poll", dict.fromkeys(names, summary.exit_code), summary.exit_code)
    return summary


def _lock_all(stack: ExitStack, settings: Settings, names: list[str]) -> dict[str, RunLock]:
    return {name: stack.enter_context(run_lock(settings, name)) for name in sorted(names)}


def _run_tables(
    settings: Settings,
    selected: list[SourceTable],
    locks: dict[str, RunLock],
    summary: RunSummary,
    metrics: RunMetrics,
    stop: StopControl,
    budget: Budget,
    dry_run: bool,
) -> None:
    client = make_client(settings, metrics, len(selected))
    clock0 = time.monotonic()
    server_now = datetime.now(UTC)  # replaced by ServiceNow's clock as soon as it answers
    producers: dict[str, PageProducer] = {}
    topics: Background | None = None
    try:
        try:
            if not dry_run:
                producers = {t.name: new_producer(settings) for t in selected}
                topics = start_topic_check(settings, selected)  # awaited before the first record is sent
            server_now = client.server_time(selected[0].name)
            clock0 = time.monotonic()
            hi = upper_bound(server_now, settings.source.safety_lag_seconds)
            summary.upper_bound = hi.value
            store = None
            if not dry_run:
                store = open_store(settings)
        except Exception as exc:
            message, code = describe_error(exc)
            log.error("cycle cannot start: %s", message)
            for outcome in summary.tables.values():
                outcome.error, outcome.exit_code = message, code
            return
        log.info("polling %s up to %s", ", ".join(t.name for t in selected), hi.value)
        threads = []
        for table in selected:
            thread = threading.Thread(
                target=poll_table,
                name=f"poll-{table.name}",
                kwargs={
                    "settings": settings, "table": table, "client": client, "store": store,
                    "lock": locks.get(table.name), "hi": hi, "stop": stop, "budget": budget, "metrics": metrics,
                    "outcome": summary.tables[table.name], "dry_run": dry_run,
                    "producer": producers.pop(table.name, None), "topics": topics,
                },
            )
            thread.start()
            threads.append(thread)
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)  # short joins keep the main thread responsive to signals
    finally:
        if topics is not None:
            # Finished whatever the tables did (one that failed early never awaited it): topics are
            # created as before, and a refusal nobody reported is at least logged.
            error = topics.settle()
            if error is not None and not any(o.error for o in summary.tables.values()):
                log.error("topic check: %s", describe_error(error)[0])
        # Lag is measured on ServiceNow's clock (the cursor's timestamps are in it), now.
        now = server_now + timedelta(seconds=time.monotonic() - clock0)
        for leftover in producers.values():  # the cycle could not start: never handed to a table
            leftover.close(0)
        for name, outcome in summary.tables.items():
            complete = complete_up_to(outcome, summary.upper_bound, _start_of(settings, name), stored=not dry_run)
            lag = None if complete is None else lag_seconds(now, complete)
            if lag is not None:
                metrics.offset_lag.labels(table=name).set(lag)
        client.close()


def _start_of(settings: Settings, name: str) -> Cursor:
    return Cursor.at_start(settings.source.table(name).start)
