"""Response bodies and headers in ServiceNow's shapes (pure functions)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from email.utils import format_datetime
from urllib.parse import urlencode

import orjson

from sncli.emulator.state import Selection
from sncli.emulator.store import Record


def http_date(value: datetime) -> str:
    return format_datetime(value, usegmt=True)


def error_body(message: str, detail: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "detail": detail}, "status": "failure"})


def _shape(
    name: str,
    value: str,
    *,
    display_value: str,
    references: Mapping[str, str],
    links: bool,
    base_url: str,
) -> object:
    target = references.get(name) if links and value else None
    if display_value == "all":
        shaped: dict[str, str] = {"display_value": value, "value": value}
        if target:
            shaped["link"] = f"{base_url}/api/now/table/{target}/{value}"
        return shaped
    if target:
        key = "display_value" if display_value == "true" else "value"
        return {"link": f"{base_url}/api/now/table/{target}/{value}", key: value}
    return value


def render_record(
    record: Record,
    selection: Selection,
    *,
    fields: Sequence[str] | None,
    display_value: str,
    exclude_links: bool,
    base_url: str,
) -> bytes:
    """One record's JSON; the cached bytes whenever the request asks for the plain full record."""
    links = not exclude_links and bool(selection.references)
    plain_values = display_value not in ("all", "true")
    if fields is None and plain_values:
        return record.json_with_links(base_url, selection.references) if links else record.json
    names = [f for f in fields if f in selection.columns] if fields is not None else list(record.fields)
    source = record.fields
    out = {
        name: _shape(
            name,
            source.get(name, ""),
            display_value=display_value,
            references=selection.references,
            links=links,
            base_url=base_url,
        )
        for name in names
    }
    return orjson.dumps(out)


def list_body(parts: Sequence[bytes]) -> bytes:
    return b'{"result":[' + b",".join(parts) + b"]}"


def single_body(part: bytes) -> bytes:
    return b'{"result":' + part + b"}"


def link_header(
    base_url: str, path: str, params: Mapping[str, str], *, offset: int, limit: int, total: int | None, returned: int
) -> str:
    """ServiceNow's pagination Link header: first, prev, next, last (last only when the total is known)."""

    def url(new_offset: int) -> str:
        query = dict(params)
        query["sysparm_limit"] = str(limit)
        query["sysparm_offset"] = str(max(0, new_offset))
        return f"<{base_url}{path}?{urlencode(query)}>"

    parts = [f'{url(0)};rel="first"']
    if offset > 0:
        parts.append(f'{url(offset - limit)};rel="prev"')
    has_next = (offset + limit < total) if total is not None else returned >= limit
    if has_next and limit > 0:
        parts.append(f'{url(offset + limit)};rel="next"')
    if total is not None and limit > 0:
        last = ((max(total, 1) - 1) // limit) * limit
        parts.append(f'{url(last)};rel="last"')
    return ",".join(parts)
