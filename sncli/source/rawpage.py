"""A page kept as the bytes ServiceNow sent: the fast path of the source's JSON output.

Decoding a page into dicts (orjson) and encoding every record back to JSON for
its Kafka value is most of the source's CPU: ~30 string objects and a dict per
record built only to be serialized again, then freed. When the value is the
record as JSON anyway, the record's own bytes in the response already are that
value. :class:`RawPage` keeps them (``msgspec.Raw`` slices of the body, no copy)
and decodes only the few fields the source reads: ``sys_id`` (key, header,
cursor), the cursor's timestamp field, ``sys_updated_on`` (Kafka timestamp) and
the key strategy's fields: far less work per record, and far fewer objects for
the allocator and the garbage collector (the README's benchmark has the figures).

A value is therefore the record exactly as ServiceNow encoded it: the same JSON
object (same fields and values), byte for byte what was received rather than
re-serialized (escapes and spacing as ServiceNow wrote them).

A RawPage is a ``Sequence`` of small dicts holding only the decoded fields, so
code that walks records generically (cursor checks, counting) works on it; the
hot paths use :meth:`RawPage.column` and :attr:`RawPage.values`. Anything that
needs whole records (Avro, Parquet) must decode to dicts instead: it never gets
a RawPage (see :class:`sncli.source.fetch.TableRequests`).

msgspec is optional: without it :func:`raw_page_decoder` returns None and the
caller keeps the dict path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import attrgetter, itemgetter
from typing import Any, overload

import orjson

Decoder = Callable[[bytes], "RawPage"]


class RawPage(Sequence[dict[str, Any]]):
    """Each record's JSON (``values``) plus the decoded ``columns`` (field -> one value per record)."""

    __slots__ = ("_columns", "values")

    def __init__(self, values: list[bytes], columns: dict[str, list[Any]]) -> None:
        self.values = values
        self._columns = columns

    def column(self, name: str) -> list[Any]:
        """Field ``name`` of every record (None where a record lacks it); only decoded fields exist."""
        return self._columns[name]

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self._columns)

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("RawPage index out of range")
        return {name: values[index] for name, values in self._columns.items() if values[index] is not None}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]


def raw_page_decoder(fields: Iterable[str]) -> Decoder | None:
    """A decoder of Table API bodies into RawPages with ``fields`` decoded, or None without msgspec.

    The decoder raises ValueError when the body is not ``{"result": [object, ...]}``,
    which the client treats as a malformed answer (retried like any other).
    """
    try:
        import msgspec  # optional dependency: without it the dict path is used
    except ImportError:
        return None

    names = list(dict.fromkeys(fields))
    # Attribute names f0, f1, ... renamed to the JSON names: a ServiceNow field name
    # need not be a Python identifier. gc=False: these hold strings only, never cycles.
    record_type: Any = msgspec.defstruct(
        "RecordFields", [(f"f{i}", Any, None) for i in range(len(names))],
        rename={f"f{i}": name for i, name in enumerate(names)}, gc=False,
    )
    split_type: Any = msgspec.defstruct("RawBody", [("result", list[msgspec.Raw])], gc=False)
    fields_type: Any = msgspec.defstruct("FieldsBody", [("result", list[record_type])], gc=False)
    split = msgspec.json.Decoder(split_type)
    decode_fields = msgspec.json.Decoder(fields_type)
    getters = [(name, attrgetter(f"f{i}")) for i, name in enumerate(names)]

    def decode(body: bytes) -> RawPage:
        try:
            values: list[bytes] = split.decode(body).result
            rows = decode_fields.decode(body).result
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ValueError(f"not a Table API page ({exc})") from None
        return RawPage(values, {name: list(map(get, rows)) for name, get in getters})

    return decode


def page_values(records: Sequence[dict[str, Any]]) -> list[bytes] | None:
    """The records' own JSON when ``records`` is a RawPage, else None."""
    return records.values if isinstance(records, RawPage) else None


def head(records: Sequence[dict[str, Any]], count: int) -> Sequence[dict[str, Any]]:
    """The first ``count`` records, of the same kind (a RawPage keeps each record's JSON)."""
    if len(records) <= count:
        return records
    if isinstance(records, RawPage):
        return RawPage(records.values[:count], {name: records.column(name)[:count] for name in records.fields})
    return list(records[:count])


def column(records: Sequence[dict[str, Any]], name: str) -> list[Any]:
    """``record.get(name)`` of every record, with C-level loops (a RawPage's decoded column, or dict lookups)."""
    if isinstance(records, RawPage):
        return records.column(name)
    try:
        return list(map(itemgetter(name), records))
    except KeyError:
        return [r.get(name) for r in records]


def decode_records(body: bytes) -> list[dict[str, Any]]:
    """A Table API body as its list of records (dicts); ValueError when it is not ``{"result": [object, ...]}``."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at byte {exc.pos})") from None
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
        raise ValueError("no 'result' list of records")
    return result
