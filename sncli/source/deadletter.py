"""Source records that cannot go to their topic go to the DLQ, and the table moves on.

A record Kafka refuses for what it is (larger than ``message.max.bytes``, invalid
for the broker: :data:`sncli.kafka.errors.RECORD_ERRORS`) or whose value cannot
be encoded (a value the topic's Avro schema cannot hold) fails again on every
retry: stopping at it would stall its table forever. Such a record is written to
the DLQ (``source.dlq_topic``, default ``sink.dlq_topic``) with the sink's
``sncli.error.*`` headers, and the DLQ's acknowledgement is awaited *before*
the page's cursor is stored; the rest of the page is delivered as usual, and the
run exits 3. If the DLQ write fails, the page fails: its cursor is not stored
and the run exits 1, so nothing moves past a record that is nowhere.

Kafka refuses a *batch*: every record sharing the refused record's batch is
reported failed with the same error, so the culprit is found by sending again
(:func:`isolate`). The page is re-sent in order from its first failed record:
each suspect alone, the records between suspects as one batch, flushed one
after the other. Re-sending the records after a suspect, even those acknowledged
already, keeps each key's latest version last in its partition (a failed batch
may sit before acknowledged ones of the same keys); the price is duplicates,
which at-least-once allows (a crash re-sends a page the same way).

A DLQ record of the source: key and ``sn.*`` headers as the topic would have
had them; value the encoded value (Kafka refused it), the record as JSON (it
could not be encoded), or none when the value itself is too large for Kafka;
``sncli.error.topic`` the topic it was meant for, ``partition`` and ``offset``
``-1`` (it never was in Kafka), class ``refused`` or ``encode``. ``dlq replay``
never writes these to ServiceNow (they came from it): without an origin offset
it carries them forward.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sncli.config import KafkaSettings
from sncli.dlq.record import NOT_IN_KAFKA, DeadLetterReason, Origin, dlq_headers
from sncli.dlq.signing import DlqSigner
from sncli.dlq.writer import DlqWriter
from sncli.kafka.errors import ProduceError, Rejected
from sncli.source.record import PageMessages, Refusal

log = logging.getLogger("sncli.source")

# --------------------------------------------------------------------------- finding the refused records


def segments(order: Sequence[int], suspects: Collection[int]) -> list[list[int]]:
    """``order`` cut for re-sending: each suspect alone, each run of other records as one batch, in order."""
    out: list[list[int]] = []
    run: list[int] = []
    for index in order:
        if index in suspects:
            if run:
                out.append(run)
                run = []
            out.append([index])
        else:
            run.append(index)
    if run:
        out.append(run)
    return out


@dataclass
class Attempt:
    """What sending one batch (and flushing it) came to."""

    acked: int = 0
    refused: list[Refusal] = field(default_factory=list)  # refused before sending: final
    rejected: dict[int, Rejected] = field(default_factory=dict)  # page index -> the broker's refusal


Send = Callable[[list[int]], Attempt]  # sends the page's records at these indices, flushes, reports


def refusal(index: int, rejected: Rejected) -> Refusal:
    omitted = f" (value of {len(rejected.value or b'')} bytes omitted)" if rejected.too_large else ""
    return Refusal(index, "refused", f"Kafka refused the record: {rejected.reason}{omitted}", rejected.too_large)


def refused_at_once(rejected: Sequence[Rejected], indices: Sequence[int] | None) -> list[Refusal]:
    """Records send_page refused before sending, by page index (``indices``: what was sent; None: the page)."""
    out = []
    for item in rejected:
        if item.index is None:
            raise ValueError("a record refused before sending has its index")
        out.append(refusal(item.index if indices is None else indices[item.index], item))
    return out


def isolate(order: Sequence[int], suspects: Collection[int], send: Send) -> tuple[int, list[Refusal]]:
    """Re-send the page from its first suspect on (module doc); return (acknowledged, refused records).

    A batch of several records the broker refuses is cut again around its
    newly failed records; a suspect refused alone is a refused record. Ends:
    every step sends a batch for good or adds a suspect.
    """
    suspected = set(suspects)
    first = next((pos for pos, index in enumerate(order) if index in suspected), len(order))
    queue = deque(segments(order[first:], suspected))
    acked = 0
    refused: list[Refusal] = []
    while queue:
        batch = queue.popleft()
        attempt = send(batch)
        acked += attempt.acked
        refused.extend(attempt.refused)
        if not attempt.rejected:
            continue
        if len(batch) == 1:
            refused.append(refusal(batch[0], attempt.rejected[batch[0]]))
            continue
        failed = set(attempt.rejected) - suspected
        if not failed:
            raise ProduceError(f"a batch of {len(batch)} records was refused and none of them alone")
        suspected |= failed
        sent_alone = {r.index for r in attempt.refused}
        queue.extendleft(reversed(segments([i for i in batch if i not in sent_alone], suspected)))
    return acked, refused


def page_indices(rejected: Sequence[Rejected], msgs: PageMessages, batch: Sequence[int]) -> dict[int, Rejected]:
    """Which records of ``batch`` the broker's reports are about (matched by key and value)."""
    wanted: dict[tuple[bytes | None, bytes | None], Rejected] = {(r.key, r.value): r for r in rejected}
    found: dict[int, Rejected] = {}
    for index in batch:
        value = msgs.values[index]
        match = wanted.get((bytes(msgs.keys[index]), None if value is None else bytes(value)))  # a RawPage's is a Raw
        if match is not None:
            found[index] = match
    return found


# --------------------------------------------------------------------------- writing them


def dlq_record(
    msgs: PageMessages, refused: Refusal, *, table: str, topic: str, now: datetime
) -> tuple[bytes, bytes | None, list[tuple[str, bytes | None]]]:
    """Key, value and headers of the DLQ record of a refused source record (module doc)."""
    failure = DeadLetterReason(refused.error_class, refused.message, table=table)
    headers = dlq_headers(msgs.headers[refused.index], failure, Origin(topic, NOT_IN_KAFKA, NOT_IN_KAFKA), now=now)
    original = msgs.values[refused.index]  # None: a tombstone
    value = None if refused.omit_value or original is None else bytes(original)
    return msgs.keys[refused.index], value, headers


class SourceDeadLetters:
    """One table's DLQ output: writes refused records and waits until Kafka acknowledged every one.

    The writer (a producer) is made on first use: most runs never need it.
    """

    def __init__(self, kafka: KafkaSettings, dlq_topic: str, *, table: str, topic: str, signer: DlqSigner) -> None:
        self._kafka = kafka
        self._signer = signer
        self.dlq_topic = dlq_topic
        self._table = table
        self._topic = topic
        self._writer: DlqWriter | None = None

    def write(self, msgs: PageMessages, refused: Sequence[Refusal]) -> None:
        """Dead-letter ``refused``; raises ProduceError unless every record was acknowledged."""
        if not refused:
            return
        if self._writer is None:
            self._writer = DlqWriter(self._kafka, self.dlq_topic, signer=self._signer)
        writer = self._writer
        errors: list[str] = []
        done: list[None] = []

        def on_done(error: str | None) -> None:
            if error is None:
                done.append(None)
            else:
                errors.append(error)

        now = datetime.now(UTC)
        for item in refused:
            key, value, headers = dlq_record(msgs, item, table=self._table, topic=self._topic, now=now)
            writer.send(key, value, headers, on_done)
        remaining = writer.flush()
        if errors or remaining or len(done) != len(refused):
            first = errors[0] if errors else f"{remaining} unacknowledged{writer.broker_hint}"
            raise ProduceError(
                f"could not dead-letter {len(refused) - len(done)} of {len(refused)} refused record(s) of "
                f"{self._table}: {first}",
                topic=self.dlq_topic,
            )
        for item in refused:
            log.warning("%s: record %d of a page dead-lettered to %s (%s): %s", self._table, item.index,
                        self.dlq_topic, item.error_class, item.message, extra={"table": self._table})
