"""Read the Go bridge's ``offsets.json`` so a team can switch without re-reading tables.

Pure: text in, ``(table, 'YYYY-MM-DD HH:MM:SS' UTC, sys_id)`` out. The bridge's
file has been seen in several shapes, all accepted:

- ``{"incident": {"timestamp": 1714564800, "last_identifier": "<sys_id>"}, ...}``
- the same mapping under ``{"offsets": {...}}`` (possibly next to other keys)
- a list of objects that each carry ``"table"``
- timestamps as unix seconds (int, float or digit string), RFC 3339 strings
  (Go's ``time.Time``), or ServiceNow's ``YYYY-MM-DD HH:MM:SS``
- field spellings ``timestamp``/``lastTimestamp``/``Timestamp``/``last_timestamp`` and
  ``last_identifier``/``lastID``/``LastIdentifier``/``last_id``/``sys_id``
  (compared ignoring case and underscores, as Go's encoding/json does for case).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sncli.offsets.model import check_sys_id, normalize_timestamp, sn_timestamp

_TIMESTAMP_NAMES = ("timestamp", "lasttimestamp", "lastupdated", "lastupdatedat", "ts")
_ID_NAMES = ("lastidentifier", "lastid", "lastsysid", "sysid", "identifier")
_MAX_UNIX = 253402300799  # 9999-12-31 23:59:59


class BridgeFormatError(ValueError):
    """The file is not a bridge offsets file we understand; the message says where."""


def parse_bridge_offsets(text: str) -> list[tuple[str, str, str]]:
    """``[(table, timestamp, sys_id)]`` sorted by table; BridgeFormatError for anything unexpected."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BridgeFormatError(f"not valid JSON ({exc})") from None
    entries = _entries(doc)
    if not entries:
        raise BridgeFormatError("no table offsets found")
    result = [_parse_entry(table, entry) for table, entry in entries]
    tables = [t for t, _, _ in result]
    dupes = sorted({t for t in tables if tables.count(t) > 1})
    if dupes:
        raise BridgeFormatError(f"table listed twice: {', '.join(dupes)}")
    return sorted(result)


def _norm(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def _looks_like_entry(value: Any) -> bool:
    return isinstance(value, dict) and any(_norm(str(k)) in _TIMESTAMP_NAMES for k in value)


def _entries(doc: Any) -> list[tuple[str, Any]]:
    if isinstance(doc, list):
        found: list[tuple[str, Any]] = []
        for index, item in enumerate(doc):
            table = item.get("table") if isinstance(item, dict) else None
            if not isinstance(table, str):
                raise BridgeFormatError(f"item [{index}] has no \"table\" name")
            found.append((table, item))
        return found
    if not isinstance(doc, dict):
        raise BridgeFormatError("expected a JSON object of table -> offset")
    wrapped = doc.get("offsets")
    if wrapped is not None and not _looks_like_entry(wrapped):
        return _entries(wrapped)
    return [(str(table), entry) for table, entry in doc.items()]


def _parse_entry(table: str, entry: Any) -> tuple[str, str, str]:
    if not isinstance(entry, dict):
        raise BridgeFormatError(f"{table}: expected an object with timestamp and last_identifier")
    fields = {_norm(str(k)): v for k, v in entry.items()}
    raw_ts = next((fields[n] for n in _TIMESTAMP_NAMES if n in fields), None)
    if raw_ts is None:
        raise BridgeFormatError(f"{table}: no timestamp")
    try:
        timestamp = _timestamp(raw_ts)
    except ValueError as exc:
        raise BridgeFormatError(f"{table}: {exc}") from None
    raw_id = next((fields[n] for n in _ID_NAMES if n in fields), None)
    if raw_id is None:
        raw_id = ""
    if not isinstance(raw_id, str):
        raise BridgeFormatError(f"{table}: last_identifier must be a string, got {raw_id!r}")
    try:
        sys_id = check_sys_id(raw_id.strip())
    except ValueError as exc:
        raise BridgeFormatError(f"{table}: {exc}") from None
    return table, timestamp, sys_id


def _timestamp(value: Any) -> str:
    if isinstance(value, bool):
        raise ValueError(f"timestamp must be unix seconds or a date string, got {value!r}")
    if isinstance(value, str) and value.strip().lstrip("-").replace(".", "", 1).isdigit():
        value = float(value.strip())
    if isinstance(value, int | float):
        if not 0 <= value <= _MAX_UNIX:
            raise ValueError(f"timestamp {value!r} is not unix seconds (milliseconds are not accepted)")
        return sn_timestamp(datetime.fromtimestamp(int(value), UTC))
    if isinstance(value, str):
        return normalize_timestamp(value)
    raise ValueError(f"timestamp must be unix seconds or a date string, got {value!r}")
