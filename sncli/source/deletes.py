"""Deletes as tombstones (pure): ``sys_audit_delete`` rows -> Kafka messages, and the order rule.

ServiceNow records each delete of an audited table in ``sys_audit_delete``:
``tablename``, ``documentkey`` (the deleted record's sys_id), ``payload`` (the
record as update-set XML) and ``sys_created_on`` (when it was deleted). A table
with ``deletes: audit`` reads those rows as a second keyset stream, with its own
cursor ``(sys_created_on, sys_id)`` under the offset key ``deletes/<table>``,
stored only once Kafka acknowledged the tombstones (like the records' cursor).

A delete becomes a **tombstone** on the table's topic: the record's key (the
sys_id, or for ``key: fields`` the digest of the fields parsed from the
payload), a null value, the delete's time as the Kafka timestamp, and the
headers ``sn.table``, ``sn.instance``, ``sn.sys_id``, ``sn.extracted_at`` and
``sn.operation: delete`` (records carry ``sn.operation: upsert``). A delete
whose key cannot be made (a ``fields`` key and no readable payload) is refused
like a record that cannot be encoded: it goes to the source DLQ and the stream
moves on.

**Order per key** (the rule of a cycle, :func:`sncli.source.cycle.poll_table`):
both streams read up to the same upper bound ``HI``; the deletes go first, and
the records only once the deletes caught up to ``HI``. Why this is ServiceNow's
order for every sys_id: the record stream holds only records that *exist* when
they are read, each at its latest version. A record read in the cycle with
``sys_updated_on <= HI`` existed after every delete of its sys_id up to ``HI``
(those happened before the read), so it was written (re-inserted, restored)
after them: its tombstones belong before it. A record deleted and not
re-inserted is not in the record stream at all, so its tombstone is the last
message of its key. A merge by time would give the same order wherever
timestamps are faithful, but needs a rule for a delete and a re-insert in the
same second (timestamps have one-second resolution) and breaks when two nodes'
clocks disagree; deletes-first needs neither. Across cycles the rule holds
because records never run ahead of the deletes: a cycle whose deletes stopped
early (``--max-records``, ``--max-seconds``, a failure) sends no records, and
a page of deletes sent again after a crash is older than every record sent
after it was stored.

What it cannot see: a restore that writes the record back with its old
``sys_updated_on`` (the record cursor is past it), and deletes of tables
ServiceNow does not audit (most ``sys_*`` tables, unless listed in
``glide.ui.audit_deleted_tables``). ``sncli verify`` finds both.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sncli.config import FieldsKey, SourceTable
from sncli.config.fingerprints import AUDIT_DELETE_TABLE, AUDIT_DELETE_TIME
from sncli.source.keys import key_of
from sncli.source.record import (
    Header,
    PageMessages,
    RecordShape,
    Refusal,
    TimestampCache,
    tombstone_headers,
)

#: The fields of a ``sys_audit_delete`` row the stream reads (the payload only when the key needs it).
AUDIT_FIELDS = ("sys_id", AUDIT_DELETE_TIME, "tablename", "documentkey")
PAYLOAD = "payload"


def audit_table(table: SourceTable) -> SourceTable:
    """The requests of ``table``'s deletes: rows of ``sys_audit_delete`` for it, in (sys_created_on, sys_id) order.

    Same topic and key as ``table``; the payload is fetched only for a ``fields`` key.
    """
    fields = [*AUDIT_FIELDS, PAYLOAD] if isinstance(table.key, FieldsKey) else list(AUDIT_FIELDS)
    return table.model_copy(update={
        "name": AUDIT_DELETE_TABLE,
        "query": f"tablename={table.name}",  # a table name is [a-z0-9_]+: nothing to escape
        "fields": fields,
        "timestamp_field": AUDIT_DELETE_TIME,
        "deletes": "none",
    })


class PayloadError(ValueError):
    """A ``sys_audit_delete`` payload that is not the update-set XML of one record."""


def payload_fields(payload: str, table: str) -> dict[str, str]:
    """The deleted record's fields from its update-set XML (``<record_update><table>...``).

    The XML comes from ServiceNow; Python's expat (2.4.1 or later) refuses entity
    expansion bombs and ElementTree resolves no external entity.
    """
    try:
        root = ET.fromstring(payload)
    except ET.ParseError as exc:
        raise PayloadError(f"payload is not XML ({exc})") from None
    record = root.find(table) if root.tag == "record_update" else None
    if record is None:
        raise PayloadError(f"payload holds no <{table}> record")
    return {child.tag: child.text or "" for child in record}


def _text(value: Any) -> str:
    if isinstance(value, dict):  # display_value=all
        value = value.get("value")
    return value if isinstance(value, str) else ""


def tombstone_key(row: dict[str, Any], shape: RecordShape) -> bytes:
    """The key the deleted record had: its sys_id, or the digest of its fields from the payload."""
    if not isinstance(shape.key, FieldsKey):
        return _text(row.get("documentkey")).encode()
    return key_of(payload_fields(_text(row.get(PAYLOAD)), shape.table), shape.key)


def build_tombstones(
    rows: Sequence[dict[str, Any]], shape: RecordShape, *, extracted_at: datetime, cache: TimestampCache
) -> PageMessages:
    """A page of ``sys_audit_delete`` rows as tombstones (module doc); a row without a key is refused."""
    keys: list[bytes] = []
    values: list[bytes | None] = []
    headers: list[list[Header]] = []
    refused: list[Refusal] = []
    for index, row in enumerate(rows):
        sys_id = _text(row.get("documentkey")).encode()
        try:
            key = tombstone_key(row, shape)
        except PayloadError as exc:
            key = sys_id
            refused.append(Refusal(index, "encode", f"the key of deleted record {sys_id.decode()}: {exc}"))
        keys.append(key)
        values.append(None)
        headers.append(tombstone_headers(shape.table, sys_id.decode(), shape.instance, extracted_at))
    timestamps = [cache.millis(row.get(AUDIT_DELETE_TIME)) for row in rows]
    return PageMessages(keys, values, headers, timestamps, refused)
