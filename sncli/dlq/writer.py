"""Producing DLQ records: :class:`DlqWriter`, one acknowledgement callback per record."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import confluent_kafka

from sncli.config import KafkaSettings
from sncli.dlq.signing import DlqSigner
from sncli.errors import SncliError
from sncli.kafka.admin import ensure_topics
from sncli.kafka.conf import delivery_timeout_ms, producer_config

log = logging.getLogger("sncli.dlq")  # the name the logs have always shown for DLQ lines

#: librdkafka properties that only consumers know (librdkafka's CONFIGURATION.md, scope "C").
CONSUMER_ONLY_KEYS = frozenset({
    "group.id", "group.instance.id", "partition.assignment.strategy", "session.timeout.ms",
    "heartbeat.interval.ms", "group.protocol.type", "group.protocol", "group.remote.assignor",
    "coordinator.query.interval.ms", "max.poll.interval.ms", "enable.auto.commit", "auto.commit.interval.ms",
    "enable.auto.offset.store", "queued.min.messages", "queued.max.messages.kbytes", "fetch.wait.max.ms",
    "fetch.queue.backoff.ms", "fetch.message.max.bytes", "max.partition.fetch.bytes", "fetch.max.bytes",
    "fetch.min.bytes", "fetch.error.backoff.ms", "isolation.level", "enable.partition.eof", "check.crcs",
    "auto.offset.reset",
})


class DlqWriter:
    """Produces DLQ records; each ``send`` reports its broker acknowledgement (or failure) by callback.

    The drain must know *which* record was acknowledged before it may commit
    past it, so every record carries its own delivery callback (PageProducer
    only reports whole batches). Callbacks run on the thread that calls
    :meth:`poll` or :meth:`flush` (the drain's main loop).

    The topic is checked (and created when ``kafka.topics.create`` allows) on
    first use, not at start: a drain whose records all succeed never needs it,
    and when it is missing the run fails at the first record that needed it,
    with everything before that record committed.

    Every record is signed with ``signer`` (see :class:`DlqSigner`) unless the
    caller passes ``sign=False``: only a record re-queued unchanged is sent as it
    was read, so an unverified record is never given a valid signature.
    """

    def __init__(self, kafka: KafkaSettings, topic: str, *, signer: DlqSigner) -> None:
        # kafka.client serves consumers and producers alike; consumer-only keys would make
        # librdkafka warn (CONFWARN) on every run.
        config = {k: v for k, v in producer_config(kafka).items() if k not in CONSUMER_ONLY_KEYS}
        self.timeout_seconds = delivery_timeout_ms(config) / 1000.0
        config["error_cb"] = self._on_error
        self._producer = confluent_kafka.Producer(config)
        self._kafka = kafka
        self.topic = topic
        self.signer = signer
        self._warned_unsigned = False
        self._lock = threading.Lock()
        self._checked = False
        self._unusable: str | None = None
        self._last_broker_error: str | None = None

    def _on_error(self, err: confluent_kafka.KafkaError) -> None:
        self._last_broker_error = err.str()

    def _check_topic(self) -> str | None:
        with self._lock:
            if not self._checked:
                self._checked = True
                try:
                    ensure_topics(self._kafka, {self.topic: None})
                except SncliError as exc:
                    self._unusable = f"DLQ topic {self.topic}: {exc}"
            return self._unusable

    def send(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes | None]],
        on_done: Callable[[str | None], None],
        *,
        sign: bool = True,
    ) -> None:
        """Queue one DLQ record; ``on_done(None)`` once acknowledged, ``on_done(error)`` if it cannot be.

        ``sign=False``: the headers are sent as given (a record carried forward unchanged).
        """
        problem = self._check_topic()
        if problem is not None:
            on_done(problem)
            return
        if sign:
            if not self.signer.enabled and not self._warned_unsigned:
                self._warned_unsigned = True
                log.warning("sink.dlq_signing_key is not set: DLQ records are written unsigned, and dlq replay "
                            "writes them only with --trust-unsigned --topic")
            headers = self.signer.sign(key, value, headers)

        def delivered(err: confluent_kafka.KafkaError | None, _msg: confluent_kafka.Message) -> None:
            on_done(None if err is None else f"DLQ topic {self.topic}: {err.str()}")

        wire: list[tuple[str, str | bytes | None]] = list(headers)  # the library's (wider) header type
        deadline = time.monotonic() + self.timeout_seconds
        while True:
            try:
                self._producer.produce(self.topic, value, key, headers=wire, on_delivery=delivered)
                return
            except BufferError:
                if time.monotonic() > deadline:
                    on_done(f"DLQ topic {self.topic}: local queue full for {self.timeout_seconds:.0f}s")
                    return
                self._producer.poll(0.05)
            except Exception as exc:  # KafkaException: message too large, fatal producer state
                on_done(f"DLQ topic {self.topic}: {kafka_text(exc)}")
                return

    def poll(self, timeout: float = 0.0) -> None:
        self._producer.poll(timeout)

    def flush(self, timeout: float | None = None) -> int:
        """Wait for outstanding acknowledgements; return how many are still missing."""
        wait = self.timeout_seconds + 5.0 if timeout is None else timeout
        return self._producer.flush(wait)

    @property
    def broker_hint(self) -> str:
        return f" (last broker error: {self._last_broker_error})" if self._last_broker_error else ""


def kafka_text(exc: BaseException) -> str:
    """The text of a KafkaException (its KafkaError's str), or of any other exception."""
    args = getattr(exc, "args", ())
    if args and hasattr(args[0], "str"):
        return str(args[0].str())
    return str(exc) or type(exc).__name__
