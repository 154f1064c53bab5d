"""Turn one Kafka record into the ServiceNow write it asks for, without any I/O.

Everything that decides *what* the sink does lives here so it can be tested
exhaustively: decoding, where the sys_id comes from, which operation, which
fields the body carries, and which table the record is routed to. The drain
and the DLQ replay both call :func:`resolve`, so a replayed record is judged
exactly like the original was.

A record that cannot be turned into a write raises :class:`RecordError` (class
``decode`` or ``record``); it is a property of the record, never of the run, so
the caller dead-letters it and moves on. Anything else a decoder raises (a
Schema Registry that is down, say) is *not* the record's fault and propagates.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

import orjson

from sncli.config import SinkTopic
from sncli.servicenow.fields import is_system_field

#: A few of the ``sys_*`` fields the sink never writes (see :func:`is_system_field`: it never writes any).
RESERVED_FIELDS = frozenset(
    {"sys_id", "sys_created_on", "sys_created_by", "sys_updated_on", "sys_updated_by", "sys_mod_count"}
)
SYS_ID_HEADER = "sn.sys_id"
FLATTEN_SEPARATOR = "_"
MAX_FLATTEN_DEPTH = 64  # objects inside one field that nested: flatten unfolds
_SYS_ID = re.compile(r"[0-9a-f]{32}")
_TABLE = re.compile(r"[a-z0-9_]+")
_SHOWN = 60  # characters of a bad value quoted in an error message

Operation = Literal["POST", "PATCH", "DELETE"]
ErrorClass = Literal["record", "decode"]
Headers = Sequence[tuple[str, bytes | None]]


class RecordError(Exception):
    """The record itself cannot be written (bad bytes, bad sys_id, unroutable, ...)."""

    def __init__(self, error_class: ErrorClass, message: str) -> None:
        super().__init__(message)
        self.error_class: ErrorClass = error_class
        self.message = message


@dataclass(frozen=True)
class InRecord:
    """The parts of a consumed Kafka message that resolving and dead-lettering need."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class Write:
    """One ServiceNow call: POST, PATCH or DELETE; the body never holds a ``sys_*`` field.

    A POST that must create the record under a given id (PATCH answered 404) adds
    ``sys_id`` when it is sent (:mod:`sncli.sink.writer`); nothing else may.
    """

    op: Operation
    table: str
    sys_id: str | None
    body: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        system = sorted(name for name in self.body if is_system_field(name))
        if system:
            raise ValueError(f"a write must not carry sys_* fields: {', '.join(system)}")


@dataclass(frozen=True)
class Skip:
    """Nothing to write (a tombstone with deletes disabled, an empty body); counted, committed."""

    reason: str
    table: str
    sys_id: str | None = None


Plan = Write | Skip
# (value bytes, topic) -> the decoded value; raises RecordError("decode", ...) for bad bytes.
ValueDecoder = Callable[[bytes, str], Any]


def decode_json(value: bytes, topic: str) -> Any:
    """The default decoder: a UTF-8 JSON document (the caller checks that it is an object)."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise RecordError("decode", f"value is not valid JSON ({_first_line(str(exc))})") from None


def resolve(record: InRecord, topic: SinkTopic, decode: ValueDecoder = decode_json) -> Plan:
    """Decide the write for ``record`` under the topic's sink settings."""
    table = route(record.headers, topic)
    if record.value is None:
        return _tombstone(record, topic, table)
    decoded = decode(record.value, record.topic)
    if not isinstance(decoded, dict):
        raise RecordError("decode", f"value must be an object, got {_kind(decoded)}")
    sys_id = find_sys_id(decoded, record, topic.sys_id_from)
    body = build_body(decoded, topic)
    op: Operation = "POST" if sys_id is None else "PATCH"
    if not body:
        return Skip(reason="no fields to write", table=table, sys_id=sys_id)
    return Write(op=op, table=table, sys_id=sys_id, body=body)


def lane_key(record: InRecord, plan: Plan | None) -> bytes:
    """What orders records: the Kafka key, else the sys_id, else the record's own position.

    The Kafka key comes first because it is the producer's unit of ordering: two
    records with one key may carry no sys_id and then one, and must still apply
    in order. Keyless records without a sys_id have no order to keep.
    """
    if record.key is not None:
        return record.key
    sys_id = plan.sys_id if plan is not None else None
    if sys_id is not None:
        return sys_id.encode()
    return f"{record.topic}/{record.partition}/{record.offset}".encode()


# --------------------------------------------------------------------------- pieces


def route(headers: Headers, topic: SinkTopic) -> str:
    """The table: the topic's own, or a header's when ``route_header`` is set and allowlisted."""
    if topic.route_header is None:
        return topic.table
    raw = header_value(headers, topic.route_header)
    if raw is None:
        return topic.table
    name = _text(raw, f"header {topic.route_header}")
    if name == topic.table or (name in topic.allowed_tables and _TABLE.fullmatch(name)):
        return name
    raise RecordError(
        "record", f"header {topic.route_header} names table {_quote(name)}, which is not in allowed_tables"
    )


def header_value(headers: Headers, name: str) -> bytes | None:
    """The last value of header ``name`` (Kafka allows repeats; the latest one wins)."""
    found: bytes | None = None
    for key, value in headers:
        if key == name and value is not None:
            found = value
    return found


def find_sys_id(value: Mapping[str, Any] | None, record: InRecord, order: Sequence[str]) -> str | None:
    """The first sys_id found in ``order`` (value / header / key); a malformed one is an error."""
    for source in order:
        candidate: str | None = None
        if source == "value" and value is not None:
            raw = value.get("sys_id")
            if raw is not None and not isinstance(raw, str):
                raise RecordError("record", f"sys_id in the value must be a string, got {_kind(raw)}")
            candidate = raw
        elif source == "header":
            header = header_value(record.headers, SYS_ID_HEADER)
            candidate = None if header is None else _text(header, f"header {SYS_ID_HEADER}")
        elif source == "key" and record.key is not None:
            candidate = _text(record.key, "the record key")
        if candidate:
            if not _SYS_ID.fullmatch(candidate):
                raise RecordError(
                    "record", f"sys_id from the {source} must be 32 lowercase hex characters, got {_quote(candidate)}"
                )
            return candidate
    return None


def build_body(value: Mapping[str, Any], topic: SinkTopic) -> dict[str, str]:
    """The fields to send: nested values handled, filters and renames applied, no ``sys_*`` field.

    A ``sys_*`` field is dropped unless ``rename`` maps it to an ordinary field (config
    validation refuses a ``sys_*`` target), so ``rename: {sys_class_name: u_source_class}``
    keeps the source's class in a field of its own while the record's class is never touched.
    """
    fields: dict[str, Any] = {k: v for k, v in value.items() if not is_system_field(k) or _renamed(k, topic)}
    flat: dict[str, str] = {}
    for name, raw in fields.items():
        for out_name, out_value in _expand(name, raw, topic.nested):
            if out_name in flat:
                raise RecordError("record", f"two fields end up named {_quote(out_name)} after flattening")
            flat[out_name] = out_value
    if topic.include_fields is not None:
        allowed = set(topic.include_fields)
        flat = {k: v for k, v in flat.items() if k in allowed}
    if topic.exclude_fields:
        denied = set(topic.exclude_fields)
        flat = {k: v for k, v in flat.items() if k not in denied}
    if topic.rename:
        renamed: dict[str, str] = {}
        for name, text in flat.items():
            target = topic.rename.get(name, name)
            if target in renamed:
                raise RecordError("record", f"two fields end up named {_quote(target)} after rename")
            renamed[target] = text
        flat = renamed
    return {k: v for k, v in flat.items() if not is_system_field(k)}


def _renamed(name: str, topic: SinkTopic) -> bool:
    """Whether ``rename`` takes ``name`` (or, flattened, one of its children) to another field."""
    prefix = name + FLATTEN_SEPARATOR
    return any(source == name or source.startswith(prefix) for source in topic.rename)


def _tombstone(record: InRecord, topic: SinkTopic, table: str) -> Plan:
    sys_id = find_sys_id(None, record, topic.sys_id_from)
    if not topic.delete_on_tombstone:
        return Skip(reason="tombstone (delete_on_tombstone is off)", table=table, sys_id=sys_id)
    if sys_id is None:
        sources = "/".join(s for s in topic.sys_id_from if s != "value") or "none"
        raise RecordError("record", f"tombstone without a sys_id (sys_id_from header/key gave: {sources})")
    return Write(op="DELETE", table=table, sys_id=sys_id)


def _expand(name: str, value: Any, nested: str) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        if nested == "stringify":
            return [(name, _dumps(value, name))]
        if nested == "flatten":
            return _flatten(name, value)
        raise RecordError("record", f"field {_quote(name)} holds an object (set nested: flatten or stringify)")
    if isinstance(value, list | tuple):
        if nested == "stringify":
            return [(name, _dumps(list(value), name))]
        raise RecordError("record", f"field {_quote(name)} holds a list (set nested: stringify)")
    return [(name, scalar_text(value, name))]


def _flatten(name: str, value: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``{"a": {"b": 1}}`` -> ``a_b = "1"``, in document order; iterative, so depth costs no stack.

    A value is a few KB of brackets away from any depth; past :data:`MAX_FLATTEN_DEPTH`
    levels it is a record error like any other shape the sink cannot write.
    """
    out: list[tuple[str, str]] = []
    stack: list[tuple[str, Any, int]] = [(name, value, 1)]
    while stack:
        path, node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > MAX_FLATTEN_DEPTH:
                raise RecordError(
                    "record", f"field {_quote(name)} is nested more than {MAX_FLATTEN_DEPTH} objects deep"
                )
            children = [(f"{path}{FLATTEN_SEPARATOR}{child}", inner, depth + 1) for child, inner in node.items()]
            stack.extend(reversed(children))
        elif isinstance(node, list | tuple):
            raise RecordError("record", f"field {_quote(path)} holds a list (set nested: stringify)")
        else:
            out.append((path, scalar_text(node, path)))
    return out


def scalar_text(value: Any, name: str) -> str:
    """ServiceNow fields are strings; map JSON/Avro scalars onto the text the Table API takes."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RecordError("record", f"field {_quote(name)} is not a finite number")
        return repr(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise RecordError("record", f"field {_quote(name)} is not a finite number")
        return str(value)
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo is not None else value
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    raise RecordError("record", f"field {_quote(name)} has a value of type {_kind(value)} that cannot be written")


def _dumps(value: Any, name: str) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()
    except TypeError as exc:
        raise RecordError("record", f"field {_quote(name)} cannot be stringified: {exc}") from None


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RecordError("record", f"{what} is not UTF-8 text") from None


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return type(value).__name__


def _quote(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "...")


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else text
