"""What a stored cursor means: the fingerprint an offset is only valid for."""

from __future__ import annotations

import hashlib

from sncli.config.models import Settings, SourceTable


def table_fingerprint(instance_url: str, table: str, base_query: str | None, timestamp_field: str) -> str:
    """Identify what a stored cursor means; a cursor is only valid for the same fingerprint.

    Reusing a cursor after the base query or timestamp field changed would skip or
    repeat records silently, so the offset store refuses a mismatch instead.
    """
    parts = [instance_url.rstrip("/").lower(), table, base_query or "", timestamp_field]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def source_fingerprint(settings: Settings, table: SourceTable) -> str:
    return table_fingerprint(settings.servicenow.instance_url, table.name, table.query, table.timestamp_field)


#: Where ServiceNow records deletes, and the time its rows are ordered by (sncli.source.deletes).
AUDIT_DELETE_TABLE = "sys_audit_delete"
AUDIT_DELETE_TIME = "sys_created_on"


def deletes_fingerprint(settings: Settings, table: SourceTable) -> str:
    """What the cursor of a table's deletes is valid for: its instance and ``sys_audit_delete`` rows of the table."""
    return table_fingerprint(settings.servicenow.instance_url, AUDIT_DELETE_TABLE, f"tablename={table.name}",
                             AUDIT_DELETE_TIME)
