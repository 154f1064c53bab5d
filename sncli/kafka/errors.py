"""Errors of the Kafka layer.

Kept apart from the adapters so pure code (the sink's resolve step, the CLI)
can catch them without importing confluent_kafka.
"""

from __future__ import annotations

from sncli.errors import SncliError


class KafkaError(SncliError):
    """Kafka is unreachable or refused an administrative request."""


class ProduceError(KafkaError):
    """At least one record of a batch was not acknowledged by the broker.

    The caller must not advance its cursor past the batch: a new run re-sends it.
    """

    def __init__(self, message: str, *, topic: str | None = None, failed: int = 0, acked: int = 0) -> None:
        super().__init__(message)
        self.topic = topic
        self.failed = failed
        self.acked = acked


class DecodeError(SncliError):
    """A record value is not a JSON object or valid Avro; a record error (DLQ), not a crash."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SchemaError(KafkaError):
    """The Schema Registry refused or could not store a schema."""
