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
bounded stop is not a failure); 3 some tables failed, or records were
dead-lettered instead of produced (:mod:`sncli.source.deadletter`); when all failed, the
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
from sncli.dlq.signing import DlqSigner
from sncli.errors import ConfigError, ExitCode, LockHeldError, SncliError
from sncli.kafka.errors import ProduceError
from sncli.metrics import RunMetrics, push_per_table
from sncli.source.cursor import (
    Cursor,
    UpperBound,
    advance,
    between_query,
    page_query,
    parse_sn_time,
    past_bound,
    upper_bound,
)
from sncli.source.deadletter import Attempt, SourceDeadLetters, isolate, page_indices, refused_at_once
from sncli.source.poller import (
    Beyond,
    Budget,
    LookPast,
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
from sncli.source.rawpage import decode_records, head, raw_page_decoder
from sncli.source.record import (
    PageMessages,
    RecordShape,
    Refusal,
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
    dlq: dict[str, int] = field(default_factory=dict)  # records dead-lettered instead of produced, per class
    hidden: int = 0  # rows hidden by ACLs that the cursor passed (see make_look_past)

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "pages": self.pages,
            "produced": self.produced,
            "dlq": dict(self.dlq),
            "hidden_by_acl": self.hidden,
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
        # Records dead-lettered instead of produced: the rest is committed, those need attention.
        return int(ExitCode.PARTIAL) if any(o.dlq for o in outcomes) else int(ExitCode.OK)
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
    extra_key: dict[str, str] | None = None,
) -> None:
    """Push the run's metrics, one Pushgateway group per table (:func:`sncli.metrics.push_per_table`)."""
    push_per_table(settings.metrics.pushgateway, settings.metrics.job, metrics, command, table_codes, exit_code,
                   extra_key)


def complete_up_to(outcome: TableOutcome, upper: str | None, start: Cursor, *, stored: bool = True) -> str | None:
    """The ServiceNow time up to which the topic is known to hold the table (None: unknown).

    A table whose cycle caught up (an empty page below ``HI``, its cursor stored)
    holds everything up to ``HI``, however old its newest record: an idle table is
    not behind. Otherwise it holds what its stored cursor covers (its ``start``
    when nothing was ever stored and the run did not fail).
    """
    if stored and outcome.error is None and outcome.stopped == "caught_up" and upper is not None:
        return upper
    if outcome.cursor_after is not None:
        return outcome.cursor_after.timestamp
    return start.timestamp if outcome.error is None else None


def lag_seconds(now: datetime, complete: str) -> float | None:
    """How far behind ServiceNow's ``now`` a table complete up to ``complete`` is (never negative)."""
    try:
        return max(0.0, (now - parse_sn_time(complete)).total_seconds())
    except ValueError:
        return None


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
    mirrors = source_mirror_topics(settings)
    return Background(lambda: ensure_topics(settings.kafka, topics, mirrors=mirrors), name="ensure-topics")


def source_mirror_topics(settings: Settings) -> set[str]:
    """The source topics keyed by sys_id by every table that writes them (compacted when created)."""
    from sncli.config import SysIdKey
    from sncli.kafka.retention import mirror_topics

    return mirror_topics((t.topic, isinstance(t.key, SysIdKey)) for t in settings.source.tables)


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
    acknowledged, so the caller never stores a cursor past it. A record Kafka
    refuses for what it is, or that cannot be encoded, is dead-lettered instead
    (:mod:`sncli.source.deadletter`) before the page counts as delivered;
    ``dead_lettered`` counts them per error class.
    """

    def __init__(
        self,
        settings: Settings,
        table: SourceTable,
        client: ServiceNowClient,
        metrics: RunMetrics,
        producer: PageProducer | None = None,
    ) -> None:
        self._settings = settings
        self._topic = table.topic
        self._dead_letters = SourceDeadLetters(settings.kafka, settings.source_dlq_topic, table=table.name,
                                               topic=table.topic, signer=DlqSigner.of(settings.sink))
        self._dlq_counter = metrics.source_dlq_records
        self.dead_lettered: dict[str, int] = {}
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
        unencoded = {r.index for r in msgs.refused}
        order = None if not unencoded else [i for i in range(len(msgs)) if i not in unencoded]
        refused = [*msgs.refused, *self._queue(msgs, order)]
        return lambda: self._settle(msgs, order, refused)

    def _queue(self, msgs: PageMessages, indices: list[int] | None) -> list[Refusal]:
        """Queue the records at ``indices`` (None: the whole page, the hot path); return those refused at once."""
        if indices is None:
            rejected = self._producer.send_page(self._topic, msgs.keys, msgs.values, msgs.headers, msgs.timestamps)
            return refused_at_once(rejected, None)
        rejected = self._producer.send_page(
            self._topic, [msgs.keys[i] for i in indices], [msgs.values[i] for i in indices],
            [msgs.headers[i] for i in indices], [msgs.timestamps[i] for i in indices],
        )
        return refused_at_once(rejected, indices)

    def _settle(self, msgs: PageMessages, order: list[int] | None, refused: list[Refusal]) -> int:
        try:
            acked = self._producer.flush()
        except ProduceError as exc:
            skipped = {r.index for r in refused}
            sent = [i for i in (order if order is not None else range(len(msgs))) if i not in skipped]
            suspects = page_indices(exc.rejected, msgs, sent) if exc.only_rejected_records else {}
            if not suspects:
                raise
            log.warning("%s: Kafka refused %d record(s) of a page (%s); finding them by sending again",
                        self._shape.table, len(exc.rejected), exc.rejected[0].reason,
                        extra={"table": self._shape.table})
            more_acked, more_refused = isolate(sent, suspects, lambda batch: self._attempt(msgs, batch))
            acked, refused = exc.acked + more_acked, refused + more_refused
        if refused:
            self._dead_letters.write(msgs, sorted(refused, key=lambda r: r.index))  # acknowledged, or raises
            for item in refused:
                self._dlq_counter.labels(table=self._shape.table, **{"class": item.error_class}).inc()
                self.dead_lettered[item.error_class] = self.dead_lettered.get(item.error_class, 0) + 1
        self._produced.inc(acked)
        return acked

    def _attempt(self, msgs: PageMessages, batch: list[int]) -> Attempt:
        """Send ``batch`` of the page on a usable producer and wait for it (:func:`deadletter.isolate`)."""
        if self._producer.broken:  # a producer that saw a refusal is fenced (Tansu) or out of sequence
            self._producer.close(0)
            self._producer = new_producer(self._settings)
        refused = self._queue(msgs, batch)
        try:
            return Attempt(self._producer.flush(), refused)
        except ProduceError as exc:
            rejected = page_indices(exc.rejected, msgs, batch) if exc.only_rejected_records else {}
            if not rejected:
                raise
            return Attempt(exc.acked, refused, rejected)

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


#: The widest request the look past hidden rows makes: rows ServiceNow reads (and its ACLs drop) for one answer.
LOOK_PAST_MAX_ROWS = 100_000


class HiddenRowsError(SncliError):
    """More rows in a row than :data:`LOOK_PAST_MAX_ROWS` are hidden: sncli cannot see past them."""


def make_look_past(
    client: ServiceNowClient,
    settings: Settings,
    table: SourceTable,
    hi: UpperBound,
    decoder: RawDecoder | None = None,
) -> LookPast:
    """What lies past an empty page (see :mod:`sncli.source.poller`), from what the Table API lets a client see.

    ServiceNow applies ``sysparm_limit`` before row ACLs: a page reads ``limit``
    rows and drops the hidden ones, so an empty page may sit before visible
    rows. A hidden row shows nothing of itself (not even its sys_id or
    timestamp), so the cursor cannot be moved onto it. What a client does see:
    ``X-Total-Count``, the count of the query's rows, taken before the ACLs
    (ServiceNow evaluates them per row of the page read, never for the count).

    So the same keyset query is asked again, with the count and a limit twice
    as wide each time (at most the count, at most :data:`LOOK_PAST_MAX_ROWS`):

    - count 0: nothing remains, the end;
    - visible rows: they come in keyset order right after the cursor, so no
      visible row before the last one returned was left out: the first
      ``limit`` of them are the next page (the rows hidden before them are
      counted with one more count query over that keyset range);
    - none, and the count fits in the limit: every remaining row was read and
      all are hidden; the cursor may move past the range's bound.

    Why not ``sysparm_offset`` past the hidden block: offsets count rows of a
    result that changes while we read (a row updated meanwhile leaves it), so an
    offset can step over a visible row; a keyset query from the cursor cannot.
    A run of hidden rows longer than :data:`LOOK_PAST_MAX_ROWS` fails the table
    (exit 1 or 3) with a message saying so, instead of reading it every cycle.
    """
    ts = table.timestamp_field
    fields = list(table.fields) if table.fields is not None else None
    decode: Callable[[bytes], Records] = decoder if decoder is not None else decode_records

    def counted(query: str) -> int:
        page = client.list_page(table.name, query=query, fields=["sys_id"], limit=1, no_count=False)
        if page.total is None:
            raise SncliError(f"{table.name}: ServiceNow sent no X-Total-Count; cannot tell rows hidden by ACLs "
                             f"from the end of the table")
        return page.total

    def look_past(cursor: Cursor, limit: int) -> Beyond:
        query = page_query(cursor, hi, ts_field=ts, base_query=table.query)
        width = min(2 * limit, LOOK_PAST_MAX_ROWS)
        while True:
            answer = client.list_page_decoded(table.name, decode=decode, query=query, fields=fields, limit=width,
                                              display_value=settings.source.display_value, no_count=False)
            total = answer.total
            if total is None:
                raise SncliError(f"{table.name}: ServiceNow sent no X-Total-Count; cannot tell rows hidden by ACLs "
                                 f"from the end of the table")
            if len(answer.records):
                kept = head(answer.records, limit)
                end = advance(cursor, kept, ts)
                hidden = max(0, counted(between_query(cursor, end, ts_field=ts, base_query=table.query)) - len(kept))
                _warn_hidden(table.name, hidden, cursor, f"up to {end.timestamp} {end.sys_id}")
                return Beyond(kept, hidden=hidden)
            if total == 0:
                return Beyond([])  # nothing remains: the end
            if total <= width:
                past = past_bound(hi)
                _warn_hidden(table.name, total, cursor, f"to the end of the cycle's range ({hi.value})")
                return Beyond([], hidden=total, past=past)
            if width >= LOOK_PAST_MAX_ROWS:
                raise HiddenRowsError(
                    f"{table.name}: the {width} rows after {_show(cursor)} are all hidden from the integration user "
                    f"by ACLs ({total} rows remain); sncli cannot see past them. Grant the user read access, or "
                    f"exclude those rows in the table's query (or a before-query business rule)"
                )
            width = min(2 * width, total, LOOK_PAST_MAX_ROWS)

    return look_past


def _warn_hidden(table: str, hidden: int, cursor: Cursor, where: str) -> None:
    if hidden > 0:
        log.warning("%s: %d rows after %s are hidden from the integration user by ACLs and were passed %s; "
                    "they are not exported", table, hidden, _show(cursor), where, extra={"table": table})


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
            if output is not None:
                outcome.dlq = dict(output.dead_lettered)
            outcome.hidden = result.hidden

        decoder = output.decoder if output is not None else None
        result = page_loop(
            start=start,
            start_fetch=make_fetch(client, settings, table, hi, metrics, decoder),
            look_past=make_look_past(client, settings, table, hi, decoder),
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
            "%s: %d records in %d pages%s%s; cursor %s",
            table.name, result.records, result.pages,
            "" if result.stopped is None else f", stopped by {result.stopped}",
            f", {result.hidden} rows hidden by ACLs passed" if result.hidden else "",
            _show(outcome.cursor_after), extra={"table": table.name},
        )
    except Exception as exc:
        outcome.error, outcome.exit_code = describe_error(exc)
        if isinstance(exc, SncliError):
            log.error("%s: %s", table.name, outcome.error, extra={"table": table.name})
        else:
            log.exception("%s: unexpected failure", table.name, extra={"table": table.name})
    finally:
        if output is not None:
            outcome.dlq = dict(output.dead_lettered)  # also those of a page whose cursor was then not stored
        if outcome.hidden:  # passed by pages that were stored, whatever happened after
            metrics.source_hidden.labels(table=table.name).inc(outcome.hidden)
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
            complete = complete_up_to(outcome, summary.upper_bound, _start_of(settings, name), stored=not dry_run)
            lag = None if complete is None else lag_seconds(now, complete)
            if lag is not None:
                metrics.offset_lag.labels(table=name).set(lag)
        client.close()


def _start_of(settings: Settings, name: str) -> Cursor:
    return Cursor.at_start(settings.source.table(name).start)
