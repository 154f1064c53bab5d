"""The Kafka output of a source run: one page in, its records acknowledged (or dead-lettered) out.

The page loop (:mod:`sncli.source.poller`) calls ``prepare`` on the fetch thread
and ``send`` to queue a page; the call ``send`` returns waits for the page's
acknowledgements. A record Kafka refuses for what it is is found by sending
again (:mod:`sncli.source.deadletter`) and written to the source's DLQ topic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sncli.dlq.signing import DlqSigner
from sncli.kafka.errors import ProduceError
from sncli.metrics import RunMetrics
from sncli.source.deadletter import Attempt, SourceDeadLetters, isolate, page_indices, refused_at_once
from sncli.source.deletes import build_tombstones
from sncli.source.poller import Records, Settle
from sncli.source.rawpage import raw_page_decoder
from sncli.source.record import (
    PageMessages,
    RecordShape,
    Refusal,
    TimestampCache,
    build_page,
    decoded_fields,
    instance_name,
)
from sncli.source.runkit import new_producer

if TYPE_CHECKING:
    from sncli.config import Settings, SourceTable
    from sncli.kafka.producer import PageProducer
    from sncli.servicenow.client import ServiceNowClient

log = logging.getLogger("sncli.source")


class KafkaPageOutput:
    """Produces a page to the table's topic and returns once every record is acknowledged.

    One per thread (owns its producer). ``prepare`` (run on the fetch thread,
    while the previous page is being acknowledged) turns records into messages;
    ``send`` queues them and returns a call that waits for them, raising ProduceError if any record was not
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
        self._encode_page: Callable[[Records], list[bytes]] | None = None
        self._producer = producer or new_producer(settings)
        if settings.source.format == "avro":
            # Imported only for an Avro output: it loads confluent_kafka's schema registry client.
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

    def prepare_tombstones(self, rows: Records) -> PageMessages:
        """A page of ``sys_audit_delete`` rows as tombstones (:mod:`sncli.source.deletes`), ready for ``send``."""
        return build_tombstones(rows, self._shape, extracted_at=datetime.now(UTC), cache=self._cache)

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
        if self._producer.broken:  # a producer that saw a refusal is fenced (by some brokers) or out of sequence
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

    def close(self) -> None:
        self._producer.close()
