"""The Avro value schema of a source table: from ``sys_dictionary``, else from the records.

Why ``sys_dictionary`` first: it gives column types (integers, booleans,
decimals, date-times), so consumers get typed fields. The columns of a table
include those it inherits (incident extends task), so the table's hierarchy is
followed through ``sys_db_object.super_class`` where that table is readable.

Fallback: an integration user often cannot read ``sys_dictionary`` (ACL). Then
the schema is built from the first page's records, every field a nullable
string. Either way, a column that appears later (a field added in ServiceNow)
evolves the schema by appending a nullable field (BACKWARD compatible,
registered as a new version under ``<topic>-value``) before that record is
written: a column is never silently dropped.

Each run starts from the subject's latest registered schema and only appends
what is new (:func:`sncli.kafka.avro_schema.merge_schemas`): field order and
types stay as consumers know them, a column that disappeared from the
dictionary keeps its (nullable) field, and an unchanged table re-uses the same
schema id instead of registering a version per run. The conversion and evolution
themselves live in :mod:`sncli.kafka.avro_schema` / :mod:`sncli.kafka.serde`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from confluent_kafka.schema_registry.error import SchemaRegistryError

from sncli.kafka.avro_schema import merge_schemas, schema_from_dictionary, schema_from_records
from sncli.kafka.errors import SchemaError
from sncli.kafka.serde import AvroValueSerializer, registry_client
from sncli.servicenow.errors import ForbiddenError, NotFoundError
from sncli.servicenow.query import Query

if TYPE_CHECKING:
    from sncli.config import Settings, SourceTable
    from sncli.servicenow.client import ServiceNowClient

log = logging.getLogger("sncli.source")

DICTIONARY = "sys_dictionary"
DB_OBJECT = "sys_db_object"
_MAX_HIERARCHY = 10
_DICTIONARY_FIELDS = ["name", "element", "internal_type", "max_length"]


def _value(field: Any) -> str:
    if isinstance(field, dict):
        field = field.get("value")
    return "" if field is None else str(field)


def table_hierarchy(client: ServiceNowClient, table: str) -> list[str]:
    """``[table, parent, grandparent, ...]``; just ``[table]`` when sys_db_object is not readable."""
    names = [table]
    query = Query().eq("name", table).build()
    try:
        for _ in range(_MAX_HIERARCHY):
            page = client.list_page(DB_OBJECT, query=query, fields=["name", "super_class"], limit=1)
            if not page.records:
                break
            parent_id = _value(page.records[0].get("super_class"))
            if not parent_id:
                break
            parent = client.list_page(DB_OBJECT, query=Query().eq("sys_id", parent_id).build(),
                                      fields=["name", "super_class"], limit=1)
            if not parent.records:
                break
            name = _value(parent.records[0].get("name"))
            if not name or name in names:
                break
            names.append(name)
            query = Query().eq("name", name).build()
    except (ForbiddenError, NotFoundError) as exc:
        log.info("%s: %s not readable (%s); using the table's own dictionary only", table, DB_OBJECT, exc)
    return names


def dictionary_rows(client: ServiceNowClient, table: str) -> list[dict[str, Any]] | None:
    """The table's (and its parents') ``sys_dictionary`` rows; None when not readable or empty."""
    tables = table_hierarchy(client, table)
    try:
        page = client.list_page(DICTIONARY, query=Query().in_("name", tables).build(), fields=_DICTIONARY_FIELDS,
                                limit=10_000)
    except (ForbiddenError, NotFoundError) as exc:
        log.warning("%s: %s not readable (%s); the Avro schema is built from the records (all strings)",
                    table, DICTIONARY, exc)
        return None
    rows = [r for r in page.records if _value(r.get("element"))]
    if not rows:
        log.warning("%s: no %s rows; the Avro schema is built from the records (all strings)", table, DICTIONARY)
        return None
    # Own columns first: the first row of a column wins when a child overrides its parent.
    rank = {name: i for i, name in enumerate(tables)}
    rows.sort(key=lambda r: rank.get(_value(r.get("name")), len(rank)))
    return rows


def latest_schema(client: Any, subject: str) -> dict[str, Any] | None:
    """The subject's latest registered Avro schema, or None when the subject does not exist yet."""
    try:
        registered = client.get_latest_version(subject)
    except SchemaRegistryError as exc:
        if exc.http_status_code == 404:
            return None
        raise SchemaError(f"schema registry: reading the latest schema of {subject} failed: {exc}") from None
    except Exception as exc:
        raise SchemaError(f"schema registry: reading the latest schema of {subject} failed: {exc}") from None
    parsed = orjson.loads(registered.schema.schema_str)
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise SchemaError(f"schema registry: the latest schema of {subject} is not an Avro record")
    return parsed


class AvroPageEncoder:
    """Encodes a table's pages as Avro; the schema is settled on the first page (see module doc).

    One per table thread (the serializer it wraps is not thread-safe for evolution).
    """

    def __init__(self, settings: Settings, client: ServiceNowClient, table: SourceTable) -> None:
        self._settings = settings
        self._client = client
        self._table = table
        self._serializer: AvroValueSerializer | None = None
        self._dictionary: list[dict[str, Any]] | None = None
        self._dictionary_read = False

    def prepare(self) -> None:
        """Read sys_dictionary before the first page (a failure here fails the table early)."""
        if not self._dictionary_read:
            self._dictionary = dictionary_rows(self._client, self._table.name)
            self._dictionary_read = True

    def _fresh_schema(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        self.prepare()
        if self._dictionary is not None:
            rows = self._dictionary
            if self._table.fields is not None:
                wanted = set(self._table.fields)
                rows = [r for r in rows if _value(r.get("element")) in wanted]
            typed = self._settings.source.display_value == "false"
            return schema_from_dictionary(self._table.name, rows, typed=typed)
        return schema_from_records(self._table.name, records)

    def encode_page(self, records: Sequence[dict[str, Any]]) -> list[bytes]:
        if self._serializer is None:
            client = registry_client(self._settings.kafka.schema_registry)
            schema = self._fresh_schema(records)
            latest = latest_schema(client, f"{self._table.topic}-value")
            if latest is not None:
                schema = merge_schemas(latest, schema)
            self._serializer = AvroValueSerializer(client, self._table.topic, schema)
        return self._serializer.encode_page(list(records))

    @property
    def schema(self) -> dict[str, Any] | None:
        return None if self._serializer is None else self._serializer.schema
