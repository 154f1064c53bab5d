"""The sink's value decoder: JSON, or Avro through the Schema Registry when one is configured.

Adapts :func:`sncli.kafka.serde.decode_value` to :data:`sncli.sink.resolve.ValueDecoder`:
a bad value (``DecodeError``) becomes a ``decode`` record error for the DLQ; a
registry that cannot be reached (``SchemaError``) propagates and stops the run,
because dead-lettering good records for it would be wrong.
"""

from __future__ import annotations

import threading
from typing import Any

from sncli.config import KafkaSettings
from sncli.kafka.errors import DecodeError
from sncli.kafka.serde import AvroValueDeserializer, decode_value
from sncli.sink.resolve import RecordError, ValueDecoder


def make_decoder(kafka: KafkaSettings) -> ValueDecoder:
    """A decoder for this run; the Avro deserializer is built on the first Avro value only."""
    lock = threading.Lock()
    avro: list[AvroValueDeserializer] = []

    def deserializer() -> AvroValueDeserializer | None:
        if kafka.schema_registry.url is None:
            return None
        with lock:
            if not avro:
                avro.append(AvroValueDeserializer(kafka.schema_registry))
            return avro[0]

    def decode(value: bytes, topic: str) -> Any:
        try:
            return decode_value(value, avro_deserializer=deserializer() if value[:1] == b"\x00" else None)
        except DecodeError as exc:
            raise RecordError("decode", exc.reason) from None

    return decode
