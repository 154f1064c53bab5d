"""Record values on the wire: JSON (orjson) or Avro in Confluent wire format.

Decoding is the sink's first step and a bad value must become a DLQ record,
never a crash, so :func:`decode_value` raises :class:`DecodeError` for any input
that is not a JSON object or a decodable Avro record. The two formats are told
apart by the first byte: Confluent wire format starts with the magic byte
``0x00``, which no JSON text can start with; JSON values are accepted on any
topic, Avro ones need a deserializer (a Schema Registry).

One failure is *not* a property of the record: a Schema Registry that cannot be
reached (or answers 5xx) raises :class:`SchemaError` instead, so the run fails
and retries later rather than dead-lettering good records. An unknown schema id
(404) is a record error.

Avro writing (:class:`AvroValueSerializer`) uses confluent_kafka's
AvroSerializer with the default topic subject name strategy (``<topic>-value``)
and ``auto.register.schemas``. When records bring columns the schema lacks, the
schema is evolved (fields added, nullable, default null: BACKWARD compatible)
and the new version registered before those records are written.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson
from confluent_kafka.serialization import MessageField, SerializationContext

from sncli.config import SchemaRegistry
from sncli.kafka.avro_schema import RecordConverter, from_avro_value, sn_names, with_columns
from sncli.kafka.errors import DecodeError, RecordEncodeError, SchemaError
from sncli.transport_security import plain_http_off_host

# confluent_kafka.schema_registry is imported where it is used ("lazy" below): it pulls in httpx
# and authlib, the slowest import sncli has (more than the rest of a run's start-up together), and
# only Avro runs and ``doctor`` with a registry need it; JSON runs never pay for it.

log = logging.getLogger(__name__)

MAGIC_BYTE = 0
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


# --------------------------------------------------------------------------- JSON


def encode_json(value: Mapping[str, Any]) -> bytes:
    """A record as compact JSON bytes (orjson: UTF-8, no whitespace)."""
    return orjson.dumps(value)


def decode_json(raw: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"value is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        kind = "null" if value is None else _JSON_KINDS.get(type(value), type(value).__name__)
        raise DecodeError(f"value is JSON {kind}, not an object")
    return value


def decode_value(
    raw: bytes | bytearray | memoryview | None,
    *,
    avro_deserializer: AvroValueDeserializer | None = None,
) -> dict[str, Any] | None:
    """A record value as a dict; None for a tombstone. Raises DecodeError for anything else.

    (SchemaError when the Schema Registry itself is unavailable: see module doc.)
    """
    if raw is None:
        return None
    data = bytes(raw)
    if not data:
        raise DecodeError("value is empty (zero bytes); a tombstone has no value at all")
    if data[0] == MAGIC_BYTE:
        if avro_deserializer is None:
            raise DecodeError("value is in Avro (Confluent wire format) but no schema registry is configured")
        return avro_deserializer(data)
    return decode_json(data)


# --------------------------------------------------------------------------- registry


def registry_conf(registry: SchemaRegistry | str) -> dict[str, str | int | bool]:
    """The SchemaRegistryClient configuration for settings (or a bare URL): auth, TLS, bounded waits."""
    if isinstance(registry, str):
        conf: dict[str, str | int | bool] = {"url": registry}
    else:
        if registry.url is None:
            raise SchemaError("kafka.schema_registry.url is not set")
        conf = {"url": registry.url}
        if registry.basic_auth_user_info is not None:
            conf["basic.auth.user.info"] = registry.basic_auth_user_info.get_secret_value()
        tls = registry.tls
        if not tls.verify:
            conf["ssl.ca.location"] = False  # the client's own spelling of "do not verify"
        elif tls.ca_bundle is not None:
            conf["ssl.ca.location"] = str(tls.ca_bundle)
        if tls.client_cert is not None:
            conf["ssl.certificate.location"] = str(tls.client_cert)
        if tls.client_key is not None:
            conf["ssl.key.location"] = str(tls.client_key)
    conf["timeout"] = 10
    conf["max.retries"] = 2
    return conf


def registry_client(registry: SchemaRegistry | str) -> Any:
    """A SchemaRegistryClient from settings (or a bare URL): the one the runs and ``doctor`` use."""
    from confluent_kafka.schema_registry import SchemaRegistryClient  # lazy: see the imports

    if isinstance(registry, SchemaRegistry):
        if not registry.tls.verify:
            log.warning("TLS certificate verification is disabled (kafka.schema_registry.tls.verify: false)")
        if registry.url is not None and plain_http_off_host(registry.url):
            log.warning("kafka.schema_registry.url is plain http://: its credentials and schemas cross the "
                        "network unencrypted; use https")
    return SchemaRegistryClient(registry_conf(registry))


def _registry_failure(exc: BaseException, what: str) -> SchemaError:
    """A registry failure as a one-line SchemaError (no URL user info, no request bodies)."""
    status = getattr(exc, "http_status_code", None)
    message = getattr(exc, "error_message", None) or str(exc) or type(exc).__name__
    detail = f"HTTP {status}: {message}" if status else message
    return SchemaError(f"schema registry: {what} failed: {detail}")


# --------------------------------------------------------------------------- Avro writing


class AvroValueSerializer:
    """Encodes ServiceNow records as Avro values of one topic, evolving the schema as columns appear.

    Not thread-safe for evolution: use one per table thread (like PageProducer).
    """

    def __init__(
        self,
        registry: Any,
        topic: str,
        schema: Mapping[str, Any],
        *,
        auto_register: bool = True,
    ) -> None:
        """``registry``: a SchemaRegistryClient, SchemaRegistry settings, or a URL."""
        self._client = registry if _is_client(registry) else registry_client(registry)
        self.topic = topic
        self.subject = f"{topic}-value"
        self._auto_register = auto_register
        self._ctx = SerializationContext(topic, MessageField.VALUE)
        self.schema: dict[str, Any] = dict(schema)
        self._install(self.schema)

    def _install(self, schema: dict[str, Any]) -> None:
        from confluent_kafka.schema_registry.avro import AvroSerializer  # lazy: see the imports

        self._serializer = AvroSerializer(
            self._client,
            orjson.dumps(schema).decode(),
            conf={"auto.register.schemas": self._auto_register},
        )
        self._convert = RecordConverter(schema)
        self.schema = schema
        self.schema_id: int | None = None

    def register(self) -> int:
        """Register the current schema under ``<topic>-value`` now (otherwise on first encode)."""
        from confluent_kafka.schema_registry import Schema  # lazy: see the imports

        try:
            if self._auto_register:
                schema_id = int(
                    self._client.register_schema(self.subject, Schema(orjson.dumps(self.schema).decode(), "AVRO"))
                )
            else:
                registered = self._client.lookup_schema(
                    self.subject, Schema(orjson.dumps(self.schema).decode(), "AVRO")
                )
                schema_id = int(registered.schema_id)
        except Exception as exc:
            raise _registry_failure(exc, f"registering the schema of {self.subject}") from None
        self.schema_id = schema_id
        return schema_id

    def evolve(self, schema: Mapping[str, Any]) -> bool:
        """Switch to an evolved schema (callers build it with merge_schemas/with_columns)."""
        if dict(schema) == self.schema:
            return False
        log.info(
            "schema of %s evolves: %d -> %d fields", self.subject, len(self.schema["fields"]), len(schema["fields"])
        )
        self._install(dict(schema))
        return True

    def cover(self, records: Iterable[Mapping[str, Any]]) -> bool:
        """Evolve the schema so every column of ``records`` has a field; True if it changed."""
        columns = self._convert.columns
        extra: set[str] = set()
        for record in records:
            if not columns.issuperset(record):
                extra.update(k for k in record if k not in columns)
        if not extra:
            return False
        return self.evolve(with_columns(self.schema, extra))

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """One record in Confluent wire format; evolves the schema first if the record needs it."""
        if not self._convert.columns.issuperset(record):
            self.cover([record])
        try:
            data = self._serializer(self._convert(record), self._ctx)
        except Exception as exc:
            raise _avro_write_failure(exc, self.subject) from None
        return bytes(data)

    def encode_page(self, records: Sequence[Mapping[str, Any]]) -> list[bytes]:
        """A page of records: one schema check for the page, then one encode per record."""
        self.cover(records)
        serialize, convert, ctx = self._serializer, self._convert, self._ctx
        try:
            return [serialize(convert(record), ctx) for record in records]
        except Exception as exc:
            raise _avro_write_failure(exc, self.subject) from None


def _avro_write_failure(exc: BaseException, subject: str) -> SchemaError:
    from confluent_kafka.schema_registry.error import SchemaRegistryError  # lazy: see the imports

    if isinstance(exc, SchemaRegistryError) or _is_transport_error(exc):
        return _registry_failure(exc, f"registering the schema of {subject}")
    return RecordEncodeError(f"encoding a record for {subject} failed: {type(exc).__name__}: {exc}")


def _is_client(obj: Any) -> bool:
    return hasattr(obj, "register_schema") and hasattr(obj, "get_schema")


def _is_transport_error(exc: BaseException) -> bool:
    # httpx (httpx2) transport errors, without importing the module on the hot path.
    return any(cls.__name__ in ("TransportError", "HTTPError") for cls in type(exc).__mro__) or isinstance(exc, OSError)


# --------------------------------------------------------------------------- Avro reading


class AvroValueDeserializer:
    """Decodes Confluent wire format Avro values to dicts keyed by ServiceNow column names.

    The writer schema is fetched by id (cached by the client). Values are made
    JSON/ServiceNow friendly: timestamp-millis back to ``YYYY-MM-DD HH:MM:SS``,
    decimals to strings, and fields renamed to their ``sn_name`` where sncli
    had to rename them. Thread-safe (the sink's workers may share one).
    """

    def __init__(self, registry: Any) -> None:
        from confluent_kafka.schema_registry.avro import AvroDeserializer  # lazy: see the imports

        self._client = registry if _is_client(registry) else registry_client(registry)
        self._deserializer = AvroDeserializer(self._client)
        self._renames: dict[int, dict[str, str] | None] = {}
        self._lock = threading.Lock()

    def _renames_for(self, schema_id: int) -> dict[str, str] | None:
        from confluent_kafka.schema_registry.error import SchemaRegistryError  # lazy: see the imports

        with self._lock:
            if schema_id in self._renames:
                return self._renames[schema_id]
        try:
            schema = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise DecodeError(f"Avro value refers to schema id {schema_id}, unknown to the registry") from None
            if (
                exc.http_status_code is not None
                and 400 <= exc.http_status_code < 500
                and exc.http_status_code
                not in (
                    401,
                    403,
                    408,
                    429,
                )
            ):
                raise DecodeError(f"Avro schema id {schema_id}: registry answered {exc.http_status_code}") from None
            raise _registry_failure(exc, f"fetching schema id {schema_id}") from None
        except Exception as exc:
            raise _registry_failure(exc, f"fetching schema id {schema_id}") from None
        renames: dict[str, str] | None = None
        try:
            parsed = orjson.loads(schema.schema_str)
            if isinstance(parsed, dict) and parsed.get("type") == "record":
                mapping = sn_names(parsed)
                renames = {a: s for a, s in mapping.items() if a != s} or None
        except (orjson.JSONDecodeError, KeyError, TypeError):
            renames = None
        with self._lock:
            self._renames[schema_id] = renames
        return renames

    def __call__(self, data: bytes) -> dict[str, Any]:
        if len(data) < 6 or data[0] != MAGIC_BYTE:
            raise DecodeError("value is not in Avro Confluent wire format (magic byte 0, 4-byte schema id, payload)")
        schema_id = int.from_bytes(data[1:5], "big")
        renames = self._renames_for(schema_id)
        try:
            value = self._deserializer(data, None)
        except Exception as exc:
            raise DecodeError(
                f"Avro value (schema id {schema_id}) does not decode: {type(exc).__name__}: {exc}"
            ) from None
        if not isinstance(value, dict):
            raise DecodeError(f"Avro value (schema id {schema_id}) is not a record")
        if not renames:
            return {str(k): _plain(v) for k, v in value.items()}
        return {renames.get(str(k), str(k)): _plain(v) for k, v in value.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    return from_avro_value(value)
