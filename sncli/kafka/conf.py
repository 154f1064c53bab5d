"""librdkafka configuration dictionaries built from :class:`~sncli.config.KafkaSettings`.

Layering, lowest to highest precedence:

1. sncli's defaults (tuned for page-sized produce bursts and bounded drains),
2. ``kafka.client`` from the config file (security.protocol, sasl.*, ssl.*, and
   any tuning an operator wants to change),
3. keyword overrides from the calling code (a test's short session timeout, ...),
4. the settings the delivery guarantee depends on, which nobody may weaken:
   ``acks=all`` and ``enable.idempotence=true`` for producers.

Overrides may be given with dots (``**{"session.timeout.ms": 6000}``) or with
underscores (``session_timeout_ms=6000``); underscores are turned into dots.

This module imports nothing heavy: it only builds dictionaries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from sncli.config import KafkaSettings

ConfigValue = str | int | float | bool

#: How long a produced record may stay unacknowledged before librdkafka fails it.
#: Bounds how long ``PageProducer.flush`` can wait when the broker is down.
DEFAULT_DELIVERY_TIMEOUT_MS = 30_000

#: librdkafka logs (connection failures, ...) go through this logger so the
#: application's handlers (JSON, redaction) apply instead of raw stderr lines.
LIBRDKAFKA_LOGGER = "sncli.kafka.librdkafka"

# Settings the at-least-once guarantee of the source depends on.
_ENFORCED_PRODUCER: dict[str, ConfigValue] = {
    "acks": "all",
    "enable.idempotence": True,
}

_PRODUCER_DEFAULTS: dict[str, ConfigValue] = {
    # lz4: the cheapest codec in CPU per MiB (the source competes with JSON parsing
    # for 2 cores), accepted by Kafka >= 0.10 and by the local test broker (none, gzip,
    # snappy, lz4 and zstd all round-trip there).
    "compression.type": "lz4",
    # A page arrives at once (thousands of records in a few ms), so batches fill without
    # lingering; a longer linger only delays the page's last, partial batch until the
    # flush, which the source waits for (the README's Performance section has the effect).
    "linger.ms": 1,
    # 1 000 000 bytes is the largest batch a broker with default max.message.bytes
    # (1 048 588) accepts; bigger would be refused as MSG_SIZE_TOO_LARGE.
    "batch.size": 1_000_000,
    "batch.num.messages": 10_000,
    # Room for two pages of 10 000 x ~1.5 KiB records (one being flushed while the
    # next is queued) with a wide margin; the hard cap bounds memory at 256 MiB.
    "queue.buffering.max.messages": 100_000,
    "queue.buffering.max.kbytes": 262_144,
    "message.timeout.ms": DEFAULT_DELIVERY_TIMEOUT_MS,
}

_CONSUMER_DEFAULTS: dict[str, ConfigValue] = {
    # Offsets are committed explicitly, only for records written or dead-lettered.
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    # Partition EOF is the only end-of-partition signal that is right on every broker
    # (see sncli.kafka.consumer).
    "enable.partition.eof": True,
    "auto.offset.reset": "earliest",
    "isolation.level": "read_committed",
    "session.timeout.ms": 45_000,
}


class QuietLibrdkafkaLogger:
    """Forwards librdkafka log lines to Python logging, collapsing repeats.

    With a broker down librdkafka reports the same "Connect to ... failed" line on
    every reconnect attempt; one line per distinct message per ``window`` seconds
    says the same without burying the run's own output. confluent_kafka only calls
    ``log(level, fmt, *args)`` on the object it is given.
    """

    def __init__(self, name: str = LIBRDKAFKA_LOGGER, window: float = 30.0) -> None:
        self._logger = logging.getLogger(name)
        self._window = window
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def log(self, level: int, fmt: str, *args: Any) -> None:
        text = fmt % args if args else fmt
        now = time.monotonic()
        with self._lock:
            last = self._seen.get(text)
            if last is not None and now - last < self._window:
                return
            if len(self._seen) > 1000:
                self._seen.clear()
            self._seen[text] = now
        self._logger.log(level, "%s", text)


_LOGGER = QuietLibrdkafkaLogger()


def _normalise(overrides: Mapping[str, Any]) -> dict[str, Any]:
    return {(key if "." in key else key.replace("_", ".")): value for key, value in overrides.items()}


def _base(kafka: KafkaSettings) -> dict[str, Any]:
    return {
        "bootstrap.servers": kafka.bootstrap_servers,
        "client.id": "sncli",
        "logger": _LOGGER,
    }


def producer_config(kafka: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """Config for an idempotent, acks=all producer; the caller cannot turn either off."""
    config = _base(kafka)
    config.update(_PRODUCER_DEFAULTS)
    config.update(kafka.client)
    config.update(_normalise(overrides))
    config.update(_ENFORCED_PRODUCER)
    # delivery.timeout.ms is an alias of message.timeout.ms; keep one of them so the
    # value an operator set wins over our default instead of librdkafka picking one.
    if "delivery.timeout.ms" in config and "message.timeout.ms" in config:
        explicit = {**kafka.client, **_normalise(overrides)}
        if "delivery.timeout.ms" in explicit and "message.timeout.ms" not in explicit:
            del config["message.timeout.ms"]
        else:
            del config["delivery.timeout.ms"]
    return config


def consumer_config(kafka: KafkaSettings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """Config for a bounded-drain consumer: manual commits, partition EOF events on."""
    config = _base(kafka)
    config.update(_CONSUMER_DEFAULTS)
    config.update(kafka.client)
    config.update(_normalise(overrides))
    config["group.id"] = group_id
    return config


def admin_config(kafka: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """Config for an AdminClient: the connection and security settings only."""
    config = _base(kafka)
    config.update(kafka.client)
    config.update(_normalise(overrides))
    return config


def delivery_timeout_ms(config: Mapping[str, Any]) -> int:
    """The effective per-record delivery timeout of a producer config."""
    for key in ("message.timeout.ms", "delivery.timeout.ms"):
        if key in config:
            return int(config[key])
    return DEFAULT_DELIVERY_TIMEOUT_MS
