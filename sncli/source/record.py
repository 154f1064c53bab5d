"""A page of ServiceNow records -> Kafka keys, values, headers and timestamps (pure, batched).

This is the source's hot path: every per-record Python operation counts, so a
page is converted column by column with C-level loops (``map``, comprehensions
without calls), the constant headers are built once per page and shared, the
``sn.sys_id`` header reuses the key's bytes when the key is the sys_id, and
timestamps are parsed once per distinct second of the page through a cache
(thousands of records of a bulk update share one second). The per-record
fallbacks handle ``display_value=all`` (fields as objects) and odd values.

- key: per the table's key strategy (:mod:`sncli.source.keys`)
- value: the record as fetched (orjson by default; the Avro path passes its encoder)
- timestamp: the record's ``sys_updated_on`` in ms (falls back to the table's
  timestamp field when ``sys_updated_on`` is not among the fetched fields; 0 = let
  the producer stamp it, only when neither parses)
- headers: ``sn.table``, ``sn.instance``, ``sn.sys_id``, ``sn.extracted_at``, ``sn.operation: upsert``
  (a delete's tombstone says ``delete``: :mod:`sncli.source.deletes`)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson

from sncli.config import FieldsKey, SysIdKey
from sncli.kafka.errors import RecordEncodeError
from sncli.source.keys import KeyStrategy, keys_of
from sncli.source.rawpage import column, page_values

Header = tuple[str, bytes]
Encoder = Callable[[dict[str, Any]], bytes]
PageEncoder = Callable[[Sequence[dict[str, Any]]], list[bytes]]
KAFKA_TIMESTAMP_FIELD = "sys_updated_on"
OPERATION_HEADER = "sn.operation"
OPERATION_UPSERT = b"upsert"
OPERATION_DELETE = b"delete"


def instance_name(instance_url: str) -> str:
    """The ``sn.instance`` header: the instance host (with its port, if any), never credentials."""
    parts = urlsplit(instance_url)
    host = parts.hostname or instance_url
    return f"{host}:{parts.port}" if parts.port else host


def iso_millis(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds and 'Z', e.g. 2024-05-01T12:00:00.123Z."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def tombstone_headers(table: str, sys_id: str, instance: str, extracted_at: datetime) -> list[tuple[str, bytes]]:
    """The headers of a tombstone (a delete): the record's headers with ``sn.operation: delete``.

    The one home of a tombstone's headers: the poll's and backfill's deletes
    (:mod:`sncli.source.deletes`) and ``verify --repair`` build them here.
    """
    return [
        ("sn.table", table.encode()),
        ("sn.instance", instance.encode()),
        ("sn.sys_id", sys_id.encode()),
        ("sn.extracted_at", iso_millis(extracted_at).encode()),
        (OPERATION_HEADER, OPERATION_DELETE),
    ]


class TimestampCache:
    """'YYYY-MM-DD HH:MM:SS' (UTC) -> epoch milliseconds, parsed once per distinct second."""

    __slots__ = ("_cache", "_limit")

    def __init__(self, limit: int = 100_000) -> None:
        self._cache: dict[str, int] = {}
        self._limit = limit

    def millis(self, value: Any) -> int:
        if isinstance(value, dict):  # display_value=all
            value = value.get("value")
        if not isinstance(value, str):
            return 0
        cached = self._cache.get(value)
        if cached is not None:
            return cached
        ms = _parse_millis(value)
        if len(self._cache) >= self._limit:
            self._cache.clear()
        self._cache[value] = ms
        return ms

    def millis_many(self, values: list[Any]) -> list[int]:
        """``millis`` of each value of a page.

        One comprehension of C calls for the common case (every value a naive
        'YYYY-MM-DD HH:MM:SS'): faster than parsing each distinct value once
        through a table (a bulk update's shared second costs no more to parse
        again than to look up). Anything else (an
        empty value, ``display_value=all`` objects, an offset) falls back to
        :meth:`millis` value by value.
        """
        parse = datetime.fromisoformat
        try:
            return [(parse(value) - _EPOCH) // _MILLISECOND for value in values]
        except (TypeError, ValueError):
            return [self.millis(v) for v in values]


def _parse_millis(value: Any) -> int:
    """'YYYY-MM-DD HH:MM:SS' (UTC) -> epoch ms; 0 for anything else (the producer stamps the record)."""
    if not isinstance(value, str):
        return 0
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return 0
    if parsed.tzinfo is None:  # ServiceNow's UTC wall time: a quarter of the cost of replace() + timestamp()
        return (parsed - _EPOCH) // _MILLISECOND
    return int(parsed.timestamp() * 1000)


_EPOCH = datetime(1970, 1, 1)
_MILLISECOND = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class RecordShape:
    """What is fixed for one table: how its records become Kafka messages."""

    table: str
    instance: str
    key: KeyStrategy
    ts_field: str = KAFKA_TIMESTAMP_FIELD


@dataclass(frozen=True, slots=True)
class Refusal:
    """A record of a page that goes to the DLQ instead of its topic (see :mod:`sncli.source.deadletter`)."""

    index: int  # its position in the page
    error_class: Literal["encode", "refused"]  # its value could not be encoded / Kafka refused it
    message: str
    omit_value: bool = False  # the value is too large for Kafka: the DLQ record goes without it


@dataclass(slots=True)
class PageMessages:
    """One page as parallel lists, ready to hand to the producer record by record.

    ``refused``: records that could not be encoded; their ``values`` entry is the
    record as JSON (for the DLQ) and they are not sent to the topic.
    """

    keys: list[bytes]
    values: Sequence[bytes | None]  # None: a tombstone
    headers: list[list[Header]]
    timestamps: list[int]
    refused: list[Refusal] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)


def build_page(
    records: Sequence[dict[str, Any]],
    shape: RecordShape,
    *,
    extracted_at: datetime,
    cache: TimestampCache,
    encode: Encoder = orjson.dumps,
    encode_page: PageEncoder | None = None,
) -> PageMessages:
    """Convert one fetched page; ``encode`` (per record) or ``encode_page`` (Avro) makes the values.

    A record ``encode_page`` refuses (:class:`RecordEncodeError`, e.g. a value its
    schema cannot hold) is listed in ``refused`` with its JSON as the value; any
    other failure (the registry unavailable) is raised.
    """
    raw_values = page_values(records)
    refused: list[Refusal] = []
    if raw_values is not None:
        if encode_page is not None:
            raise TypeError("a RawPage holds JSON values; an encoder needs decoded records")
        values = raw_values
    elif encode_page is None:
        values = list(map(encode, records))
    else:
        try:
            values = encode_page(records)
        except RecordEncodeError:
            values, refused = _encode_one_by_one(records, encode_page)
    sys_ids = _sys_id_bytes(records)
    keys = sys_ids if isinstance(shape.key, SysIdKey) and sys_ids is not None else keys_of(records, shape.key)
    if sys_ids is None:
        sys_ids = [_one_sys_id_bytes(r) for r in records]
    table_h = ("sn.table", shape.table.encode())
    instance_h = ("sn.instance", shape.instance.encode())
    extracted_h = ("sn.extracted_at", iso_millis(extracted_at).encode())
    operation_h = (OPERATION_HEADER, OPERATION_UPSERT)
    headers = [[table_h, instance_h, ("sn.sys_id", sid), extracted_h, operation_h] for sid in sys_ids]
    ts_name = KAFKA_TIMESTAMP_FIELD if not records or KAFKA_TIMESTAMP_FIELD in records[0] else shape.ts_field
    timestamps = cache.millis_many(column(records, ts_name))
    return PageMessages(keys, values, headers, timestamps, refused)


def _encode_one_by_one(
    records: Sequence[dict[str, Any]], encode_page: PageEncoder
) -> tuple[list[bytes], list[Refusal]]:
    """A page the encoder refused, record by record: which records it refuses (their value: the JSON)."""
    values: list[bytes] = []
    refused: list[Refusal] = []
    for index, record in enumerate(records):
        try:
            values.extend(encode_page([record]))
        except RecordEncodeError as exc:
            values.append(orjson.dumps(record, default=str))
            refused.append(Refusal(index, "encode", str(exc)))
    return values, refused


def decoded_fields(shape: RecordShape) -> list[str]:
    """The fields :func:`build_page` and the cursor read: what a RawPage must decode."""
    keys = list(shape.key.fields) if isinstance(shape.key, FieldsKey) else []
    return ["sys_id", shape.ts_field, KAFKA_TIMESTAMP_FIELD, *keys]


def _sys_id_bytes(records: Sequence[dict[str, Any]]) -> list[bytes] | None:
    """The sys_ids of a page as UTF-8 bytes when every one is a plain string (the common case), else None."""
    ids = column(records, "sys_id")
    if ids and set(map(type, ids)) != {str}:
        return None
    return list(map(str.encode, ids))


def _one_sys_id_bytes(record: dict[str, Any]) -> bytes:
    value = record.get("sys_id")
    if isinstance(value, dict):
        value = value.get("value")
    return value.encode() if isinstance(value, str) else b""
