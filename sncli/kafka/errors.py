"""Errors of the Kafka layer.

Kept apart from the adapters so pure code (the sink's resolve step, the CLI)
can catch them without importing confluent_kafka.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sncli.errors import SncliError

# Kafka protocol error codes that refuse a record for what it is, not for the state of the cluster:
# sending the same record again fails again, so it goes to a DLQ instead of stalling its stream.
CORRUPT_MESSAGE = 2
MESSAGE_TOO_LARGE = 10  # also librdkafka's local refusal (message.max.bytes)
RECORD_LIST_TOO_LARGE = 18
INVALID_TIMESTAMP = 32  # e.g. older than message.timestamp.before.max.ms allows
INVALID_RECORD = 87  # failed the broker's validation (a compacted topic and a null key, a schema)
RECORD_ERRORS = frozenset(
    {CORRUPT_MESSAGE, MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE, INVALID_TIMESTAMP, INVALID_RECORD}
)
TOO_LARGE = frozenset({MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE})


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record Kafka refused with one of :data:`RECORD_ERRORS`."""

    key: bytes | None
    value: bytes | None
    code: int
    reason: str
    index: int | None = None  # position in the lists given to send_page, when refused before sending

    @property
    def too_large(self) -> bool:
        return self.code in TOO_LARGE


class KafkaError(SncliError):
    """Kafka is unreachable or refused an administrative request."""


class ProduceError(KafkaError):
    """At least one record of a batch was not acknowledged by the broker.

    The caller must not advance its cursor past the batch: a new run re-sends it.
    """

    def __init__(
        self,
        message: str,
        *,
        topic: str | None = None,
        failed: int = 0,
        acked: int = 0,
        rejected: Sequence[Rejected] = (),
    ) -> None:
        super().__init__(message)
        self.topic = topic
        self.failed = failed
        self.acked = acked
        self.rejected = tuple(rejected)  # the failed records refused for what they are (RECORD_ERRORS)

    @property
    def only_rejected_records(self) -> bool:
        """Every failed record was refused for what it is: the rest of the batch can be delivered without them."""
        return self.failed > 0 and len(self.rejected) == self.failed


class DecodeError(SncliError):
    """A record value is not a JSON object or valid Avro; a record error (DLQ), not a crash."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SchemaError(KafkaError):
    """The Schema Registry refused or could not store a schema."""


class RecordEncodeError(SchemaError):
    """One record does not fit the topic's schema (a record error, unlike the registry being unavailable)."""
