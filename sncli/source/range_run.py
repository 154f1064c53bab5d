"""Run one range of one table: the skeleton ``source poll`` and ``backfill`` share.

A range is ``(stored cursor or its start, hi)`` of one table, under one offset
key. Its life, in order:

1. :meth:`RangeRun.load`: the stored cursor of its key, checked against the
   table's fingerprint (a changed config refuses it: exit 2);
2. :meth:`RangeRun.pages`: the page loop (:mod:`sncli.source.poller`) from that
   cursor to ``hi``, its requests from :class:`sncli.source.fetch.TableRequests`, its pages to a
   :class:`~sncli.source.kafka_out.KafkaPageOutput` (each page's cursor stored
   under the run lock once Kafka acknowledged it: :meth:`RangeRun.save`) or to a
   plain ``deliver`` (a Parquet file, a dry run's count) that stores nothing;
3. :meth:`RangeRun.guard` around both: a failure becomes the outcome's error and
   exit code (logged, never raised), and whatever happened the dead-lettered
   counts and the hidden rows passed are reported and the producer is closed.

What differs between the callers stays with them: the poll's topic check and
its dry run (:mod:`sncli.source.cycle`); a window's plan, its "done" cursor and
its Parquet file (:mod:`sncli.source.backfill`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sncli.config.fingerprints import deletes_fingerprint
from sncli.errors import SncliError
from sncli.metrics import RunMetrics
from sncli.offsets.model import StoredOffset, check_offset
from sncli.source.cursor import Cursor, UpperBound
from sncli.source.deletes import audit_table
from sncli.source.fetch import TableRequests
from sncli.source.kafka_out import KafkaPageOutput
from sncli.source.outcome import TableOutcome, describe_error
from sncli.source.poller import Budget, Deliver, LoopResult, Records, Send, Settle, StopControl, page_loop

if TYPE_CHECKING:
    from sncli.config import Settings, SourceTable
    from sncli.kafka.producer import PageProducer
    from sncli.offsets.lock import RunLock
    from sncli.offsets.store import OffsetStore
    from sncli.servicenow.client import ServiceNowClient

log = logging.getLogger("sncli.source")


@dataclass
class RangeRun:
    """One range of one table: where it reads, where its cursor is stored, what it reports."""

    settings: Settings
    table: SourceTable
    client: ServiceNowClient
    metrics: RunMetrics
    stop: StopControl
    outcome: TableOutcome
    key: str  # the offset key of the range's cursor
    fingerprint: str
    store: OffsetStore | None  # None: a dry run (nothing loaded or stored)
    lock: RunLock | None = None  # held for the key; checked before every save (an S3 lease can be lost)
    label: str = ""  # how log lines name the range (default: the table)
    budget: Budget | None = None
    progress: Callable[[int], None] | None = None  # told the records of each page stored
    output: KafkaPageOutput | None = None  # set by open_kafka; closed by guard
    deletes_key: str | None = None  # the offset key of the range's deletes cursor (sncli.source.deletes)

    def load(self) -> StoredOffset | None:
        """The range's stored cursor (checked against the fingerprint), also recorded in the outcome."""
        stored = self.store.load(self.key) if self.store is not None else None
        if stored is not None:
            check_offset(stored, self.fingerprint)
            self.outcome.cursor_before = Cursor(stored.timestamp, stored.sys_id)
        self.outcome.cursor_after = self.outcome.cursor_before
        return stored

    def open_kafka(self, producer: PageProducer | None) -> KafkaPageOutput:
        """The range's Kafka output, owning ``producer`` (a new one if None) from now on."""
        self.output = KafkaPageOutput(self.settings, self.table, self.client, self.metrics, producer)
        return self.output

    def save(self, cursor: Cursor) -> None:
        """Store ``cursor`` under the range's key, only while its lock is still held."""
        self._store(self.key, cursor, self.fingerprint)
        self.outcome.cursor_after = cursor

    def _store(self, key: str, cursor: Cursor, fingerprint: str) -> None:
        if self.lock is not None:
            self.lock.ensure_held()  # an S3 lease lost meanwhile: stop without writing
        assert self.store is not None  # a dry run never stores
        self.store.save(StoredOffset.new(key, cursor.timestamp, cursor.sys_id, fingerprint))

    def deletes(self, hi: UpperBound, start: Cursor, *, gate: Callable[[], None] | None = None) -> LoopResult:
        """The range's deletes from their stored cursor (else ``start``) up to ``hi``, as tombstones to Kafka.

        The page loop over ``sys_audit_delete`` (:mod:`sncli.source.deletes`); each
        page's cursor is stored under :attr:`deletes_key` once Kafka acknowledged it.
        Needs :meth:`open_kafka` first.
        """
        output, key = self.output, self.deletes_key
        assert output is not None and key is not None and self.store is not None
        fingerprint = deletes_fingerprint(self.settings, self.table)
        stored = self.store.load(key)
        if stored is not None:
            check_offset(stored, fingerprint)
            start = Cursor(stored.timestamp, stored.sys_id)
        self.outcome.deletes, self.outcome.deletes_cursor = 0, start
        audit = audit_table(self.table)
        requests = TableRequests(self.client, self.settings, audit, hi, self.metrics, deletes_of=self.table.name)
        counter = self.metrics.source_deletes.labels(table=self.table.name)

        def commit(cursor: Cursor) -> None:
            self._store(key, cursor, fingerprint)
            self.outcome.deletes_cursor = cursor

        def on_page(result: LoopResult) -> None:
            counter.inc(result.delivered - (self.outcome.deletes or 0))
            self.outcome.deletes = result.delivered

        return page_loop(
            start=start, start_fetch=requests.start, look_past=requests.look_past,
            send=output.send if gate is None else _after(gate, output.send), commit=commit,
            ts_field=audit.timestamp_field, page_size=self.settings.source.page_size, stop=self.stop,
            budget=self.budget, prepare=output.prepare_tombstones, on_page=on_page,
        )

    def pages(self, hi: UpperBound, start: Cursor, *, deliver: Deliver | None = None,
              gate: Callable[[], None] | None = None) -> LoopResult:
        """The page loop from ``start`` up to ``hi``, to the Kafka output or to ``deliver``.

        To Kafka, every page's cursor is stored once acknowledged; ``gate`` is awaited
        before the first page is sent. To ``deliver`` nothing is stored.
        """
        output = self.output
        send: Send | None = None
        if output is not None:
            send = output.send if gate is None else _after(gate, output.send)
        decoder = output.decoder if output is not None else None
        requests = TableRequests(self.client, self.settings, self.table, hi, self.metrics, decoder)
        result = page_loop(
            start=start,
            start_fetch=requests.start,
            look_past=requests.look_past,
            send=send,
            deliver=deliver if send is None else None,
            commit=self.save if output is not None else _no_commit,
            ts_field=self.table.timestamp_field,
            page_size=self.settings.source.page_size,
            stop=self.stop,
            budget=self.budget,
            prepare=output.prepare if output is not None else None,
            on_page=self._on_page,
        )
        self._record(result)
        return result

    def _on_page(self, result: LoopResult) -> None:
        if self.progress is not None:
            self.progress(result.records - self.outcome.records)
        self._record(result)

    def _record(self, result: LoopResult) -> None:
        outcome = self.outcome
        outcome.records, outcome.pages, outcome.produced = result.records, result.pages, result.delivered
        if self.output is not None:
            outcome.dlq = dict(self.output.dead_lettered)
        outcome.hidden = result.hidden

    @contextmanager
    def guard(self, producer: PageProducer | None = None, on_error: Callable[[], None] | None = None) -> Iterator[None]:
        """Errors into the outcome (never raised), then report and close: see the module doc.

        ``producer``: one handed to the range and closed here unless the output took it.
        ``on_error``: clean-up of the caller's own after a failure (a Parquet file removed).
        """
        label = self.label or self.table.name
        extra = {"table": self.table.name}
        try:
            yield
        except Exception as exc:
            self.outcome.error, self.outcome.exit_code = describe_error(exc)
            if on_error is not None:
                on_error()
            if isinstance(exc, SncliError):
                log.error("%s: %s", label, self.outcome.error, extra=extra)
            else:
                log.exception("%s: unexpected failure", label, extra=extra)
        finally:
            if self.output is not None:
                self.outcome.dlq = dict(self.output.dead_lettered)  # also those of a page whose cursor was not stored
            if self.outcome.hidden:  # passed by pages that were stored, whatever happened after
                self.metrics.source_hidden.labels(table=self.table.name).inc(self.outcome.hidden)
            closing = self.output or producer
            if closing is not None:
                try:
                    closing.close()
                except Exception as exc:  # never mask the range's own outcome
                    log.warning("%s: closing the producer: %s", label, exc)


def _after(gate: Callable[[], None], send: Send) -> Send:
    def gated(records: Records, prepared: object) -> Settle:
        gate()
        return send(records, prepared)

    return gated


def _no_commit(cursor: Cursor) -> None:
    return None
