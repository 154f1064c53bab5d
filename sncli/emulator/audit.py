"""``sys_audit_delete`` of the emulator: what ServiceNow records when a record of an audited table is deleted.

One row per delete (never for a row of ``sys_audit_delete`` itself): ``tablename``,
``documentkey`` (the deleted record's sys_id), ``display_value`` and ``payload``:
the deleted record as update-set XML, as ServiceNow writes it::

    <?xml version="1.0" encoding="UTF-8"?><record_update table="incident">
    <incident action="DELETE"><number>INC1</number>...</incident></record_update>

The row's ``sys_created_on`` is the time of the delete. Every emulated table is
audited (on ServiceNow most ``sys_*`` tables are not: see the README). Pure: the
state adds the row under its lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from xml.sax.saxutils import escape, quoteattr

AUDIT_DELETE = "sys_audit_delete"
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
_DISPLAY_FIELDS = ("number", "name", "short_description", "user_name")


def update_set_xml(table: str, fields: Mapping[str, str]) -> str:
    """The deleted record as update-set XML: one element per field, named after it, text escaped."""
    body = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in fields.items() if _element_name(name))
    head = f'{XML_DECLARATION}<record_update table={quoteattr(table)}><{table} action="DELETE">'
    return f"{head}{body}</{table}></record_update>"


def display_value(fields: Mapping[str, str]) -> str:
    """What ServiceNow shows for the deleted record: its number or name when it has one, else its sys_id."""
    for name in _DISPLAY_FIELDS:
        if fields.get(name):
            return fields[name]
    return fields.get("sys_id", "")


def audit_row(table: str, fields: Mapping[str, str]) -> dict[str, str]:
    """The ``sys_audit_delete`` fields (system fields aside) for the delete of ``fields`` from ``table``."""
    return {
        "tablename": table,
        "documentkey": fields.get("sys_id", ""),
        "display_value": display_value(fields),
        "payload": update_set_xml(table, fields),
    }


def _element_name(name: str) -> bool:
    """Column names are identifiers (``[a-z0-9_]``); anything else cannot be an XML element and is left out."""
    return bool(name) and (name[0].isalpha() or name[0] == "_") and all(c.isalnum() or c == "_" for c in name)
