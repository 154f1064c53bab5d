"""The Kafka layer: producer, consumer helpers, admin, serialisation (JSON, Avro).

The package itself imports only the error types, so a module that needs one of
them does not load confluent_kafka; the submodules import it at their top (and
:mod:`sncli.kafka.serde` its schema registry client only when Avro is used).
Import what you need from the submodules: ``from sncli.kafka.producer import PageProducer``.
"""

from sncli.kafka.errors import DecodeError, KafkaError, ProduceError, SchemaError

__all__ = ["DecodeError", "KafkaError", "ProduceError", "SchemaError"]
