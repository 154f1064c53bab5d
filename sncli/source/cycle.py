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
4. Each table runs its page loop (:mod:`sncli.source.poller`) on its own thread
   with its own producer; one table failing does not stop the others.
5. Metrics are pushed at the end whatever happened.

Exit code: 0 every table finished (caught up or stopped by a bound/signal: a
bounded stop is not a failure); 3 some tables failed; when all failed, the
tables' common error code (2 for a refused stored offset, 1 for Kafka or
ServiceNow failures), else 1.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

from sncli.config import source_fingerprint
from sncli.errors import ConfigError, ExitCode, LockHeldError, SncliError
from sncli.metrics import RunMetrics
from sncli.source.cursor import Cursor, UpperBound, page_query, parse_sn_time, upper_bound
from sncli.source.poller import (
    Budget,
    LoopResult,
    PendingFetch,
    Records,
    Send,
    Settle,
    StartFetch,
    StopControl,
    page_loop,
)
from sncli.source.rawpage import Decoder as RawDecoder
from sncli.source.rawpage import decode_records, raw_page_decoder
from sncli.source.record import (
    PageMessages,
    RecordShape,
    TimestampCache,
    build_page,
    decoded_fields,
    instance_name,
)

if TYPE_CHECKING:
    from sncli.config import Settings, SourceTable
    from sncli.kafka.producer import PageProducer
    from sncli.offsets.lock import RunLock
    from sncli.offsets.store import OffsetStore
    from sncli.servicenow.client import DecodedPage, ServiceNowClient
    from sncli.servicenow.readahead import PendingPage

log = logging.getLogger("sncli.source")


# --------------------------------------------------------------------------- results


def cursor_json(cursor: Cursor | None) -> dict[str, str] | None:
    return None if cursor is None else {"timestamp": cursor.timestamp, "sys_id": cursor.sys_id}


@dataclass
class TableOutcome:
    name: str
    records: int = 0
    pages: int = 0
    produced: int = 0
    cursor_before: Cursor | None = None
    cursor_after: Cursor | None = None
    stopped: str | None = None  # caught_up / max_records / max_seconds / signal
    error: str | None = None
    exit_code: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "pages": self.pages,
            "produced": self.produced,
            "cursor_before": cursor_json(self.cursor_before),
            "cursor_after": cursor_json(self.cursor_after),
            "stopped": self.stopped,
            "error": self.error,
        }


@dataclass
class RunSummary:
    command: str
    tables: dict[str, TableOutcome] = field(default_factory=dict)
    duration_seconds: float = 0.0
    exit_code: int = 0
    upper_bound: str | None = None
    error: str | None = None  # a failure before any table ran
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "command": self.command,
            "tables": {name: t.to_json() for name, t in sorted(self.tables.items())},
            "duration_seconds": round(self.duration_seconds, 3),
            "exit_code": self.exit_code,
        }
        if self.upper_bound is not None:
            data["upper_bound"] = self.upper_bound
        if self.error is not None:
            data["error"] = self.error
        data.update(self.extra)
        return data


def combined_exit_code(outcomes: list[TableOutcome]) -> int:
    failed = [o for o in outcomes if o.error is not None]
    if not failed:
        return int(ExitCode.OK)
    if len(failed) < len(outcomes):
        return int(ExitCode.PARTIAL)
    codes = {o.exit_code for o in failed}
    return codes.pop() if len(codes) == 1 else int(ExitCode.FAILED)


def describe_error(exc: BaseException) -> tuple[str, int]:
    if isinstance(exc, SncliError):
        return str(exc), int(exc.exit_code)
    return f"{type(exc).__name__}: {exc}", int(ExitCode.FAILED)


# --------------------------------------------------------------------------- shared run plumbing


@contextmanager
def stop_on_signals(stop: StopControl) -> Iterator[None]:
    """SIGTERM/SIGINT -> stop at the next page boundary (Kubernetes sends SIGTERM, then waits).

    A second signal restores the default handlers, so an operator can still kill a
    run that does not stop quickly. Only possible on the main thread; elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        log.warning("%s received: stopping at the next page boundary (send it again to stop at once)", name)
        stop.request("signal")
        for sig, old in previous.items():
            signal.signal(sig, old)

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def finish_metrics(
    settings: Settings,
    metrics: RunMetrics,
    command: str,
    table_codes: dict[str, int],
    exit_code: int,
) -> None:
    """Push the run's metrics, one Pushgateway group per table: {job, command, table}.

    Why per table and not one group for a multi-table run: every per-table series
    carries a ``table`` label, and the Pushgateway overwrites a series' label with
    the grouping label of the same name, so two tables' series in one group
    collapse into duplicates and the push is refused (HTTP 400). A group per table
    also gives each table its own ``sncli_last_success_timestamp_seconds``, which
    is what a staleness alert per table needs: a table that failed in a partial
    run keeps its previous success time. ``sncli_run_exit_code`` of a group is the
    table's own outcome (the run's code when the whole run stopped, e.g. 75).
    A Pushgateway that is down is logged, never fatal.
    """
    metrics.finish(exit_code)
    gateway = settings.metrics.pushgateway
    if not gateway:
        return
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import pushadd_to_gateway

    families = list(metrics.registry.collect())
    names = sorted(table_codes)
    for name in names:
        registry = CollectorRegistry()
        registry.register(_Families(_families_for(families, name, names, table_codes[name])))
        try:
            pushadd_to_gateway(gateway, job=settings.metrics.job, registry=registry,
                               grouping_key={"command": command, "table": name}, timeout=5.0)
        except Exception as exc:
            log.warning("could not push metrics to %s: %s", gateway, exc)
            return


class _Families:
    """A collector serving prepared metric families (a filtered view of the run's registry)."""

    def __init__(self, families: list[Any]) -> None:
        self._families = families

    def collect(self) -> list[Any]:
        return self._families


def _families_for(families: list[Any], table: str, tables: list[str], code: int) -> list[Any]:
    from prometheus_client.metrics_core import GaugeMetricFamily, Metric

    endpoints = {f"table/{t}": t for t in tables}
    first = tables[0]

    def keep(labels: dict[str, str]) -> bool:
        if "table" in labels:
            return labels["table"] == table
        if "endpoint" in labels:
            # Calls for a selected table go to its group; auxiliary ones (OAuth, sys_dictionary) to the first.
            return endpoints.get(labels["endpoint"], first) == table
        return True

    out: list[Any] = []
    for family in families:
        if family.name in ("sncli_run_exit_code", "sncli_last_success_timestamp_seconds"):
            continue
        samples = [s for s in family.samples if keep(s.labels)]
        if samples:
            copy = Metric(family.name, family.documentation, family.type, family.unit)
            copy.samples = samples
            out.append(copy)
    out.append(GaugeMetricFamily("sncli_run_exit_code", "Exit code of the last run.", value=code))
    if code == 0:
        out.append(GaugeMetricFamily("sncli_last_success_timestamp_seconds", "When a run last succeeded.",
                                     value=time.time()))
    return out


def set_offset_lag(metrics: RunMetrics, table: str, cursor: Cursor | None, now: datetime) -> None:
    if cursor is None:
        return
    try:
        lag = (now - parse_sn_time(cursor.timestamp)).total_seconds()
    except ValueError:
        return
    metrics.offset_lag.labels(table=table).set(max(0.0, lag))


def select_tables(settings: Settings, names: list[str]) -> list[SourceTable]:
    if not settings.source.tables:
        raise ConfigError("source.tables: no tables configured")
    if not names:
        return list(settings.source.tables)
    unique = list(dict.fromkeys(names))
    return [settings.source.table(n) for n in unique]


def check_source_settings(settings: Settings) -> None:
    """Settings a cursor cannot work with, refused before any work (exit 2)."""
    if settings.source.display_value == "true":
        raise ConfigError(
            "source.display_value: 'true' formats timestamps in the user's display format, which the "
            "cursor cannot compare; use 'false' or 'all'"
        )
    if settings.source.format == "avro" and not settings.kafka.schema_registry.url:
        raise ConfigError("source.format: 'avro' needs kafka.schema_registry.url")


def make_client(settings: Settings, metrics: RunMetrics, threads: int) -> ServiceNowClient:
    from sncli.servicenow.client import ServiceNowClient

    # Two connections per thread: the page being fetched ahead, and a spare for a retry.
    return ServiceNowClient(settings.servicenow, metrics=metrics, pool_size=max(4, 2 * threads + 2))


class Background:
    """One job on a daemon thread, started at once; ``wait()`` returns when it is done or re-raises its error.

    For start-up work that nothing needs until the first page is produced (topic
    creation: ~60 ms of admin round trips), so it overlaps with the first fetch.
    """

    def __init__(self, job: Callable[[], object], name: str) -> None:
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._job = job
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        try:
            self._job()
        except BaseException as exc:
            self._error = exc
        finally:
            self._done.set()

    def wait(self) -> None:
        self._done.wait()
        if self._error is not None:
            raise self._error

    def settle(self) -> BaseException | None:
        """Wait for the job and return its error instead of raising it (for clean-up paths)."""
        self._done.wait()
        return self._error


def start_topic_check(settings: Settings, tables: list[SourceTable]) -> Background:
    """``ensure_topics`` for the tables' topics, in the background (see :class:`Background`)."""
    from sncli.kafka.admin import ensure_topics

    topics = {t.topic: t.partitions for t in tables}
    return Background(lambda: ensure_topics(settings.kafka, topics), name="ensure-topics")


def new_producer(settings: Settings) -> PageProducer:
    """A producer, created as early as possible in a run.

    An idempotent producer needs its producer id before its first flush
    (:meth:`PageProducer.warm_up`, about 60 ms); created before the run's first
    ServiceNow requests, that wait overlaps with them instead of adding to the run.
    """
    from sncli.kafka.producer import PageProducer

    producer = PageProducer(settings.kafka)
    producer.warm_up()
    return producer


class KafkaPageOutput:
    """Produces a page to the table's topic and returns once every record is acknowledged.

    One per thread (owns its producer). ``prepare`` (run on the fetch thread,
    while the previous page is being acknowledged) turns records into messages;
    ``deliver`` sends them and raises ProduceError if any record was not
    acknowledged, so the caller never stores a cursor past it.
    """

    def __init__(
        self,
        settings: Settings,
        table: SourceTable,
        client: ServiceNowClient,
        metrics: RunMetrics,
        producer: PageProducer | None = None,
    ) -> None:
        self._topic = table.topic
        self._shape = RecordShape(
            table=table.name,
            instance=instance_name(settings.servicenow.instance_url),
            key=table.key,
            ts_field=table.timestamp_field,
        )
        self._cache = TimestampCache()
        self._encode_page: Callable[[Any], list[bytes]] | None = None
        self._producer = producer or new_producer(settings)
        if settings.source.format == "avro":
            from sncli.source.schema import AvroPageEncoder

            avro = AvroPageEncoder(settings, client, table)
            avro.prepare()
            self._encode_page = avro.encode_page
        self._produced = metrics.source_produced.labels(table=table.name)
        # JSON values: keep each record's bytes as received (sncli.source.rawpage) when msgspec is there.
        self.decoder = raw_page_decoder(decoded_fields(self._shape)) if self._encode_page is None else None

    def prepare(self, records: Records) -> PageMessages:
        return build_page(records, self._shape, extracted_at=datetime.now(UTC), cache=self._cache,
                          encode_page=self._encode_page)

    def send(self, records: Records, prepared: PageMessages | None) -> Settle:
        """Queue the page; the returned call waits for its acknowledgements (see :mod:`sncli.source.poller`)."""
        msgs = prepared if prepared is not None else self.prepare(records)
        self._producer.send_page(self._topic, msgs.keys, msgs.values, msgs.headers, msgs.timestamps)
        return self._settle

    def _settle(self) -> int:
        acked = self._producer.flush()
        self._produced.inc(acked)
        return acked

    def deliver(self, records: Records, prepared: PageMessages | None) -> int:
        return self.send(records, prepared)()

    def close(self) -> None:
        self._producer.close()


def make_fetch(
    client: ServiceNowClient,
    settings: Settings,
    table: SourceTable,
    hi: UpperBound,
    metrics: RunMetrics,
    decoder: RawDecoder | None = None,
) -> StartFetch:
    """The page requests of a table (sent ahead, see :mod:`sncli.servicenow.readahead`).

    With ``decoder`` pages come as RawPages (only for a JSON Kafka output), else as dicts.
    """
    fetched = metrics.source_records.labels(table=table.name)
    fields = list(table.fields) if table.fields is not None else None
    decode: Callable[[bytes], Records] = decoder if decoder is not None else decode_records

    def start(cursor: Cursor, limit: int) -> PendingFetch:
        query = page_query(cursor, hi, ts_field=table.timestamp_field, base_query=table.query)
        pending = client.start_page_decoded(table.name, decode=decode, query=query, fields=fields, limit=limit,
                                            display_value=settings.source.display_value)
        return _Counted(pending, fetched)

    return start


class _Counted:
    """A page request whose records are counted in ``bridge_source_records_total`` once read."""

    def __init__(self, pending: PendingPage[DecodedPage[Records]], counter: Any) -> None:
        self._pending = pending
        self._counter = counter

    def answered(self, timeout: float) -> bool:
        return self._pending.answered(timeout)

    def ready(self, timeout: float) -> bool:
        return self._pending.ready(timeout)

    def result(self) -> Records:
        records = self._pending.result().records
        self._counter.inc(len(records))
        return records

    def cancel(self) -> None:
        self._pending.cancel()


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
    """Poll one table up to ``hi``; fills ``outcome`` (raises nothing).

    ``topics``: the run's topic check, still running maybe; awaited before the
    first record is produced and before the table is reported done, so a topic
    that cannot be used fails the table even when it had nothing to send.
    """
    from sncli.offsets import model as offsets_model

    key = offsets_model.poll_key(table.name)
    fingerprint = source_fingerprint(settings, table)
    output: KafkaPageOutput | None = None
    try:
        stored = store.load(key) if store is not None else None
        if stored is not None:
            offsets_model.check_offset(stored, fingerprint)
            outcome.cursor_before = Cursor(stored.timestamp, stored.sys_id)
        outcome.cursor_after = outcome.cursor_before
        start = outcome.cursor_before or Cursor.at_start(table.start)

        send: Send | None = None
        commit: Callable[[Cursor], None]
        prepare: Callable[[Records], Any] | None = None
        if dry_run or store is None:
            commit = _no_commit
        else:
            output = KafkaPageOutput(settings, table, client, metrics, producer)
            producer = None  # owned (and closed) by the output now
            send, prepare = output.send, output.prepare
            if topics is not None:
                send = _after(topics.wait, send)

            def commit(cursor: Cursor) -> None:
                if lock is not None:
                    lock.ensure_held()
                store.save(offsets_model.StoredOffset.new(key, cursor.timestamp, cursor.sys_id, fingerprint))
                outcome.cursor_after = cursor

        def on_page(result: LoopResult) -> None:
            outcome.records, outcome.pages, outcome.produced = result.records, result.pages, result.delivered

        decoder = output.decoder if output is not None else None
        result = page_loop(
            start=start,
            start_fetch=make_fetch(client, settings, table, hi, metrics, decoder),
            send=send,
            deliver=_count if send is None else None,
            commit=commit,
            ts_field=table.timestamp_field,
            page_size=settings.source.page_size,
            stop=stop,
            budget=budget,
            prepare=prepare,
            on_page=on_page,
        )
        on_page(result)
        if topics is not None and output is not None:
            topics.wait()
        outcome.stopped = result.stopped or "caught_up"
        log.info(
            "%s: %d records in %d pages%s; cursor %s",
            table.name, result.records, result.pages,
            "" if result.stopped is None else f", stopped by {result.stopped}",
            _show(outcome.cursor_after), extra={"table": table.name},
        )
    except Exception as exc:
        outcome.error, outcome.exit_code = describe_error(exc)
        if isinstance(exc, SncliError):
            log.error("%s: %s", table.name, outcome.error, extra={"table": table.name})
        else:
            log.exception("%s: unexpected failure", table.name, extra={"table": table.name})
    finally:
        closing = output or producer
        if closing is not None:
            try:
                closing.close()
            except Exception as exc:  # never mask the table's own outcome
                log.warning("%s: closing the producer: %s", table.name, exc)


def _after(gate: Callable[[], None], send: Send) -> Send:
    def gated(records: Records, prepared: Any) -> Settle:
        gate()
        return send(records, prepared)

    return gated


def _no_commit(cursor: Cursor) -> None:
    return None


def _count(records: Records, prepared: Any) -> int:
    return 0  # --dry-run: counted as fetched, nothing produced


def _show(cursor: Cursor | None) -> str:
    if cursor is None:
        return "(none)"
    return f"{cursor.timestamp} {cursor.sys_id or '(start of second)'}"


# --------------------------------------------------------------------------- the cycle


def run_poll(
    settings: Settings,
    *,
    tables: list[str] | None = None,
    max_records: int | None = None,
    max_seconds: float | None = None,
    dry_run: bool = False,
    stop: StopControl | None = None,
) -> RunSummary:
    """One bounded poll cycle (see the module doc); a held lock gives exit code 75. Raises ConfigError."""
    selected = select_tables(settings, tables or [])
    check_source_settings(settings)
    names = [t.name for t in selected]
    started = time.monotonic()
    metrics = RunMetrics()
    summary = RunSummary(command="source_poll")
    summary.tables = {t.name: TableOutcome(t.name) for t in selected}
    stop = StopControl(max_seconds, parent=stop)
    try:
        with ExitStack() as stack:
            locks = {} if dry_run else _lock_all(stack, settings, names)
            _run_tables(settings, selected, locks, summary, metrics, stop, Budget(max_records), dry_run)
    except LockHeldError as exc:  # another run holds a table: nothing was done (exit 75)
        summary.exit_code = int(exc.exit_code)
        summary.error = str(exc)
        for outcome in summary.tables.values():
            outcome.stopped = "locked"
        summary.duration_seconds = time.monotonic() - started
        finish_metrics(settings, metrics, "source_poll", dict.fromkeys(names, summary.exit_code), summary.exit_code)
        return summary
    summary.exit_code = combined_exit_code(list(summary.tables.values()))
    summary.duration_seconds = time.monotonic() - started
    codes = {name: (o.exit_code if o.error else 0) for name, o in summary.tables.items()}
    finish_metrics(settings, metrics, "source_poll", codes, summary.exit_code)
    return summary


def _lock_all(stack: ExitStack, settings: Settings, names: list[str]) -> dict[str, RunLock]:
    from sncli.offsets.lock import run_lock

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
                from sncli.offsets.store import open_store

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
            if outcome.cursor_after is not None:
                set_offset_lag(metrics, name, outcome.cursor_after, now)
            elif outcome.error is None:  # nothing stored yet: everything since `start` is lag
                set_offset_lag(metrics, name, _start_of(settings, name), now)
        client.close()


def _start_of(settings: Settings, name: str) -> Cursor:
    return Cursor.at_start(settings.source.table(name).start)
