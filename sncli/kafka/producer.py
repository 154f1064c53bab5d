"""Page-at-a-time producing with an all-or-nothing acknowledgement check.

The source stores its cursor only after every record of a page is acknowledged,
so a crash repeats a page and never skips one. :class:`PageProducer` makes that check one call: ``send`` each
record of the page (asynchronous, batched by librdkafka), then ``flush``, which
returns the number acknowledged or raises :class:`ProduceError` if even one
record was not. A broker that is down makes ``flush`` fail after the delivery
timeout (``message.timeout.ms``) instead of hanging.

After ``flush`` raised, the producer refuses further use (ProduceError on
``send``): the caller stops advancing its cursor anyway, and a fresh producer
is the only state that is right on every broker (some brokers fence an
idempotent producer after they rejected one of its batches).

Threading: librdkafka calls the delivery callbacks on the thread that runs
``flush``/``poll``, and the batch counters are not locked, so use one
PageProducer per thread (each table of a poll cycle owns one). A producer is
cheap enough for that: one connection per broker.

Delivery reports only for failures (``delivery.report.only.error``): a report
per record costs a Python call and a copy of the record into a Message object
on the hot path. confluent-kafka applies the setting in its C
delivery handler, which still runs for every record and calls the callback for
each failed one; ``flush`` returns only once no record and no report is
outstanding (``rd_kafka_flush`` serves the reports while it waits), so after a
flush with nothing outstanding, "acknowledged" is exactly "sent and not
reported failed". The delivery report callback must stay configured: without
one, failures are dropped silently.

A cost that remains (confluent-kafka 2.16): that C handler takes the GIL once
per record, so a flush waits for any other thread's Python work (the source's
next-page decoding) once per record it serves: with another thread holding the
GIL a page's flush takes many times longer. A page loop
therefore decodes the next page before it flushes, on its own thread; the
tables of a poll (windows of a backfill) on other threads do pay it.

The hot path is ``send_page``: one loop of ``produce`` calls per page with the
per-batch counters updated once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import Message, Producer

from sncli.config import KafkaSettings
from sncli.kafka import conf as _conf
from sncli.kafka.errors import RECORD_ERRORS, ProduceError, Rejected

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]

#: Added to the delivery timeout for flush's default wait: the last record of a
#: page may be queued a moment after the first and still be waiting its turn.
FLUSH_MARGIN_SECONDS = 5.0
_BACKPRESSURE_POLL_SECONDS = 0.05
WARM_UP_TIMEOUT_SECONDS = 10.0
#: A flush waits for acknowledgements in slices this long (see ``flush``).
ACK_SLICE_SECONDS = 0.001


class PageProducer:
    """An idempotent, acks=all producer that reports per batch (from one flush to the next)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        delivery_timeout_ms: int | None = None,
        **overrides: Any,
    ) -> None:
        if delivery_timeout_ms is not None:
            overrides["message.timeout.ms"] = delivery_timeout_ms
        config = _conf.producer_config(kafka, **overrides)
        self._timeout_s = _conf.delivery_timeout_ms(config) / 1000.0
        self._bootstrap = kafka.bootstrap_servers
        config["on_delivery"] = self._on_delivery
        config["delivery.report.only.error"] = True  # the accounting below depends on it (module doc)
        config["error_cb"] = self._on_error
        self._producer = Producer(config)
        # Typed loosely: confluent's stub wants a list of str|bytes|None headers, ours are narrower.
        self._produce: Any = self._producer.produce
        self._sent = 0
        self._failed = 0
        self._first_error: str | None = None
        self._rejected: list[Rejected] = []  # failed records refused for what they are (sncli.kafka.errors)
        self._last_broker_error: str | None = None
        self._topic: str | None = None
        self._broken: str | None = None

    # ------------------------------------------------------------------ callbacks

    def warm_up(self) -> None:
        """Have the producer id ready for the first flush: two metadata requests on a helper thread.

        librdkafka asks for an idempotent producer's id when a broker connection
        is up, checked on a 500 ms timer and after each metadata answer. Left to
        the timer, a new producer's first flush waited for that timer, sometimes
        twice; a metadata answer that arrives once the broker
        connection is up gets the id at once. The first request opens
        that connection, the second answers over it. The requests name no topic:
        asking for a missing topic's metadata can create it (some brokers always
        do, Kafka with ``auto.create.topics.enable``), which the run's topic
        check may be there to refuse. Failures are ignored: the flush reports a
        broker that is down, in bounded time.
        """
        threading.Thread(target=self._metadata_twice, name="kafka-warm-up", daemon=True).start()

    def _metadata_twice(self) -> None:
        try:
            for _ in range(2):
                self._producer.list_topics(timeout=WARM_UP_TIMEOUT_SECONDS)
                time.sleep(0.01)
        except Exception as exc:  # the broker is down or refuses: the produce path says so
            log.debug("producer warm-up: %s", _kafka_message(exc))

    def _on_delivery(self, err: RdKafkaError | None, msg: Message) -> None:
        if err is None:  # not reported with delivery.report.only.error; counted at flush
            return
        self._failed += 1
        if self._first_error is None:
            self._first_error = f"{msg.topic()}: {err.str()}"
        if err.code() in RECORD_ERRORS:
            self._rejected.append(Rejected(msg.key(), msg.value(), err.code(), err.str()))

    def _on_error(self, err: RdKafkaError) -> None:
        self._last_broker_error = err.str()
        if err.fatal():
            self._broken = f"fatal producer error: {err.str()}"

    # ------------------------------------------------------------------ API

    @property
    def broken(self) -> bool:
        """True once the producer refuses further use (after a failed flush): create a new one."""
        return self._broken is not None

    @property
    def pending(self) -> int:
        """Records (and failure reports) librdkafka still holds: not yet acknowledged, failed or reported."""
        return len(self._producer)

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Queue one record; blocks only while librdkafka's queue is full (backpressure)."""
        if self._broken is not None:
            raise ProduceError(self._broken, topic=topic)
        self._topic = topic
        try:
            self._produce(topic, value, key, timestamp=timestamp_ms or 0, headers=headers)
        except BufferError:
            self._send_when_room(topic, key, value, headers, timestamp_ms)
        except Exception as exc:  # KafkaException: fatal state, unknown partition, bad config
            raise ProduceError(f"producing to {topic} failed: {_kafka_message(exc)}", topic=topic) from None
        self._sent += 1

    def send_page(
        self,
        topic: str,
        keys: Sequence[bytes],
        values: Sequence[bytes | None],
        headers: Sequence[Headers],
        timestamps: Sequence[int],
    ) -> list[Rejected]:
        """Queue a page given as parallel lists (what :func:`sncli.source.record.build_page` makes).

        The same as ``send`` per record, without a Python call and counter update
        per record: this loop is the source's hot path. Timestamps of 0 let the
        producer stamp the record.

        Returns the records librdkafka refused before sending (larger than
        ``message.max.bytes``), with their ``index``: the rest of the page is
        queued, and nothing of the refused ones reached Kafka.
        """
        if not len(keys) == len(values) == len(headers) == len(timestamps):
            raise ValueError("send_page: keys, values, headers and timestamps differ in length")
        if self._broken is not None:
            raise ProduceError(self._broken, topic=topic)
        self._topic = topic
        produce = self._produce
        queued = 0
        refused: list[Rejected] = []
        try:
            for key, value, hdrs, ts in zip(keys, values, headers, timestamps, strict=True):
                try:
                    # Positional (partition -1 = the partitioner, no per-record callback = the
                    # configured one): keyword arguments cost a dict lookup and a string decode per
                    # keyword per call inside PyArg_ParseTupleAndKeywords, a visible share of a poll's CPU.
                    produce(topic, value, key, -1, None, None, ts, hdrs)
                except BufferError:
                    self._send_when_room(topic, key, value, hdrs, ts)
                except Exception as exc:
                    code = _kafka_code(exc)
                    if code not in RECORD_ERRORS:
                        raise
                    # Its position: every record before it was either queued or refused.
                    refused.append(Rejected(key, value, code, _kafka_message(exc), queued + len(refused)))
                    continue
                queued += 1
        except ProduceError:
            raise
        except Exception as exc:  # KafkaException: fatal state, unknown partition, bad config
            raise ProduceError(f"producing to {topic} failed: {_kafka_message(exc)}", topic=topic) from None
        finally:
            self._sent += queued
        return refused

    def _send_when_room(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None, timestamp_ms: int | None
    ) -> None:
        # The queue drains as the broker acknowledges, or as records time out when it is
        # down; either way room appears within the delivery timeout.
        deadline = time.monotonic() + self._timeout_s + FLUSH_MARGIN_SECONDS
        while True:
            self._producer.poll(_BACKPRESSURE_POLL_SECONDS)
            try:
                self._produce(topic, value, key, timestamp=timestamp_ms or 0, headers=headers)
                return
            except BufferError:
                if time.monotonic() > deadline:
                    raise ProduceError(
                        f"producing to {topic}: the local queue stayed full for {self._timeout_s:.0f}s"
                        f"{self._broker_hint()}",
                        topic=topic,
                    ) from None

    def poll(self, timeout: float = 0.0) -> None:
        """Serve delivery reports without waiting for the batch (optional, keeps the report queue short)."""
        self._producer.poll(timeout)

    def flush(self, timeout: float | None = None) -> int:
        """Wait for every record sent since the last flush; return how many were acknowledged.

        Raises ProduceError if any record failed, or if the wait timed out with
        records outstanding. ``timeout`` defaults to the delivery timeout plus a
        margin, so a broker that is down fails the flush in bounded time.

        It serves what has arrived, then waits in 1 ms slices, as the source's
        page loop always has (one long wait inside librdkafka measured no faster).
        """
        wait = self._timeout_s + FLUSH_MARGIN_SECONDS if timeout is None else timeout
        deadline = time.monotonic() + wait
        remaining: int = self._producer.flush(0)
        while remaining > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            remaining = self._producer.flush(min(ACK_SLICE_SECONDS, left))
        sent, failed, first, rejected = self._sent, self._failed, self._first_error, self._rejected
        # Every record not reported failed was acknowledged, once nothing is outstanding (module doc);
        # with records outstanding, a lower bound (librdkafka's count also holds pending events).
        acked = max(0, sent - failed - remaining)
        topic = self._topic
        self._sent = self._failed = 0
        self._first_error = None
        self._rejected = []
        if remaining > 0:
            # Late delivery reports would be counted in the next batch: this producer
            # can no longer tell batches apart, so it refuses further use.
            self._broken = "producer abandoned after a flush timed out; create a new one"
            raise ProduceError(
                f"producing to {topic}: {remaining} of {sent} records still unacknowledged after {wait:.1f}s"
                f"{f'; first error: {first}' if first else ''}{self._broker_hint()}",
                topic=topic,
                failed=remaining + failed,
                acked=acked,
            )
        if failed:
            # After a rejected batch an idempotent producer's sequence state is suspect
            # (a broker may fence it on the next produce): a new run starts a new producer.
            self._broken = "producer abandoned after unacknowledged records; create a new one"
            raise ProduceError(
                f"producing to {topic}: {failed} of {sent} records not acknowledged; first error: {first}"
                f"{self._broker_hint()}",
                topic=topic,
                failed=failed,
                acked=acked,
                rejected=rejected,
            )
        if self._broken is not None:
            raise ProduceError(self._broken, topic=topic, acked=acked)
        return acked

    def close(self, timeout: float = 5.0) -> int:
        """Give queued records ``timeout`` seconds to be delivered; return how many were left.

        A producer that already failed drops its queue at once instead: nothing it
        still holds can count as delivered, and a dead broker should not delay exit.
        """
        if self._broken is not None:
            self._producer.purge()
            timeout = 0
        remaining: int = self._producer.flush(timeout)
        if remaining:
            log.warning("closing a Kafka producer with %d unacknowledged records", remaining)
        return remaining

    def __enter__(self) -> PageProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _broker_hint(self) -> str:
        if self._last_broker_error:
            return f" (last broker error: {self._last_broker_error}; bootstrap {self._bootstrap})"
        return f" (bootstrap {self._bootstrap})"


def _kafka_code(exc: Exception) -> int | None:
    """The error code of a KafkaException (None for any other exception)."""
    args = getattr(exc, "args", ())
    if args and hasattr(args[0], "code"):
        code: int = args[0].code()
        return code
    return None


def _kafka_message(exc: Exception) -> str:
    """The text of a KafkaException (its KafkaError's str), or of any other exception."""
    args = getattr(exc, "args", ())
    if args and hasattr(args[0], "str"):
        return str(args[0].str())
    return str(exc) or type(exc).__name__
