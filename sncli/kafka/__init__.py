"""The Kafka layer: producer, consumer helpers, admin, serialisation (JSON, Avro).

Submodules import confluent_kafka lazily (inside functions or at their own
import), so importing this package keeps ``sncli --help`` fast. Import what you
need from the submodules: ``from sncli.kafka.producer import PageProducer``.
"""

from sncli.kafka.errors import DecodeError, KafkaError, ProduceError, SchemaError

__all__ = ["DecodeError", "KafkaError", "ProduceError", "SchemaError"]
