"""What a stored offset is, how its key is formed, and when it may be reused.

Pure: no I/O. A cursor is only meaningful for the query it was made with, so
every stored offset carries a version (of its meaning) and the fingerprint of
(instance, table, base query, timestamp field). ``check_offset`` refuses to
resume from a cursor made for something else, because that would skip or
repeat records silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sncli.errors import ExitCode, OffsetsError

OFFSET_VERSION = 1  # meaning of (timestamp, sys_id); bump when the cursor semantics change
DOCUMENT_VERSION = 1  # layout of the JSON document holding every key
SN_FORMAT = "%Y-%m-%d %H:%M:%S"

_SYS_ID = re.compile(r"[0-9a-f]{32}")
_TABLE = re.compile(r"[a-z0-9_]+")
_RANGE_ID = re.compile(r"[A-Za-z0-9._:+-]+")
_BACKFILL_KEY = re.compile(r"backfill/(?P<table>[a-z0-9_]+)/(?P<range>[^/]+)/(?P<i>[0-9]+)of(?P<n>[0-9]+)")
_DELETES_KEY = re.compile(r"deletes/(?P<table>[a-z0-9_]+)(?:/(?P<range>[A-Za-z0-9._:+-]+))?")


# --------------------------------------------------------------------------- errors


class OffsetsCorruptError(OffsetsError):
    """The stored document cannot be read; it is never overwritten, so an operator must act."""

    exit_code = ExitCode.USAGE


class OffsetMismatchError(OffsetsError):
    """The stored cursor was made for another version or fingerprint; resuming would be wrong."""

    exit_code = ExitCode.USAGE


class OffsetConflictError(OffsetsError):
    """Another writer moved this key since we read it; ours is not written (never overwrite)."""

    exit_code = ExitCode.FAILED


# --------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class StoredOffset:
    version: int
    key: str
    table: str
    timestamp: str  # 'YYYY-MM-DD HH:MM:SS' UTC of the last acknowledged record
    sys_id: str  # its sys_id; "" = nothing at `timestamp` was read yet
    fingerprint: str
    updated_at: str  # ISO 8601 UTC, when this was stored

    def __post_init__(self) -> None:
        table = table_of_key(self.key)  # ValueError for a key that is not a poll or backfill key
        if table != self.table:
            raise ValueError(f"offset {self.key!r} belongs to table {table!r}, not {self.table!r}")

    @classmethod
    def new(
        cls,
        key: str,
        timestamp: str,
        sys_id: str,
        fingerprint: str,
        *,
        now: datetime | None = None,
    ) -> StoredOffset:
        """A current-version offset for ``key``; the table is taken from the key."""
        return cls(
            version=OFFSET_VERSION,
            key=key,
            table=table_of_key(key),
            timestamp=timestamp,
            sys_id=sys_id,
            fingerprint=fingerprint,
            updated_at=iso_utc(now or datetime.now(UTC)),
        )

    def to_json(self) -> dict[str, Any]:
        """The entry as stored under its key (the key itself is the mapping key)."""
        return {
            "version": self.version,
            "table": self.table,
            "timestamp": self.timestamp,
            "sys_id": self.sys_id,
            "fingerprint": self.fingerprint,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_json(cls, key: str, entry: Any) -> StoredOffset:
        """Parse one stored entry; ValueError names what is wrong (the store calls that corrupt)."""
        if not isinstance(entry, dict):
            raise ValueError(f"offset {key!r} is not an object")
        version = entry.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError(f"offset {key!r}: 'version' must be an integer")
        fields: dict[str, str] = {}
        for name in ("table", "timestamp", "sys_id", "fingerprint", "updated_at"):
            value = entry.get(name)
            if not isinstance(value, str):
                raise ValueError(f"offset {key!r}: {name!r} must be a string")
            fields[name] = value
        try:
            datetime.strptime(fields["timestamp"], SN_FORMAT)
        except ValueError:
            bad = fields["timestamp"]
            raise ValueError(f"offset {key!r}: timestamp {bad!r} is not 'YYYY-MM-DD HH:MM:SS'") from None
        return cls(version=version, key=key, **fields)

    def timestamp_datetime(self) -> datetime:
        return datetime.strptime(self.timestamp, SN_FORMAT).replace(tzinfo=UTC)


# --------------------------------------------------------------------------- checks


def short(fingerprint: str) -> str:
    return fingerprint[:12] if fingerprint else "(none)"


def reset_hint(key: str) -> str:
    info = parse_key(key)
    if info.kind == "backfill":
        return f"`sncli offsets reset --table {info.table} --backfill`"
    return f"`sncli offsets reset --table {info.table}`"


def check_offset(stored: StoredOffset, expected_fingerprint: str) -> StoredOffset:
    """Return ``stored`` if it may be resumed from; otherwise raise OffsetMismatchError naming both values."""
    hint = reset_hint(stored.key)
    if stored.version != OFFSET_VERSION:
        raise OffsetMismatchError(
            f"stored offset {stored.key!r} has version {stored.version}, this sncli writes version "
            f"{OFFSET_VERSION}; refusing to resume from it. Run {hint} to start again from the table's start "
            f"(or `sncli offsets set` to choose a position)"
        )
    if stored.fingerprint != expected_fingerprint:
        raise OffsetMismatchError(
            f"stored offset {stored.key!r} was made for fingerprint {short(stored.fingerprint)}, the current "
            f"config gives {short(expected_fingerprint)} (instance, base query or timestamp field changed); "
            f"refusing to resume from it. Run {hint} to start again from the table's start "
            f"(or `sncli offsets set` to choose a position)"
        )
    return stored


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class KeyInfo:
    kind: Literal["poll", "backfill", "deletes"]
    table: str
    range_id: str | None = None
    index: int | None = None
    count: int | None = None


def poll_key(table: str) -> str:
    """The regular poll cursor of a table is stored under the table's name."""
    if not _TABLE.fullmatch(table):
        raise ValueError(f"not a table name: {table!r}")
    return table


def backfill_key(table: str, range_id: str, index: int, count: int) -> str:
    """``backfill/<table>/<range-id>/<i>of<N>``: one cursor per window of one split range."""
    poll_key(table)
    if not _RANGE_ID.fullmatch(range_id):
        raise ValueError(f"range id must match [A-Za-z0-9._:+-]+, got {range_id!r}")
    if count < 1 or index < 0 or index > count:
        raise ValueError(f"window {index} of {count} is not a valid window")
    return f"backfill/{table}/{range_id}/{index}of{count}"


def deletes_key(table: str, range_id: str | None = None) -> str:
    """``deletes/<table>``: the cursor of a table's deletes (``sys_audit_delete``), beside its poll cursor.

    With ``range_id``: ``deletes/<table>/<range-id>``, the deletes of one backfill range.
    """
    poll_key(table)
    if range_id is None:
        return f"deletes/{table}"
    if not _RANGE_ID.fullmatch(range_id):
        raise ValueError(f"range id must match [A-Za-z0-9._:+-]+, got {range_id!r}")
    return f"deletes/{table}/{range_id}"


def backfill_prefix(table: str) -> str:
    """Every backfill key of ``table`` starts with this."""
    return f"backfill/{poll_key(table)}/"


def parse_key(key: str) -> KeyInfo:
    match = _BACKFILL_KEY.fullmatch(key)
    if match:
        return KeyInfo(
            kind="backfill",
            table=match.group("table"),
            range_id=match.group("range"),
            index=int(match.group("i")),
            count=int(match.group("n")),
        )
    if _TABLE.fullmatch(key):
        return KeyInfo(kind="poll", table=key)
    match = _DELETES_KEY.fullmatch(key)
    if match:
        return KeyInfo(kind="deletes", table=match.group("table"), range_id=match.group("range"))
    raise ValueError(f"not an offset key: {key!r}")


def table_of_key(key: str) -> str:
    return parse_key(key).table


# --------------------------------------------------------------------------- values


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a 'Z', seconds precision, e.g. 2024-05-01T12:00:00Z."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sn_timestamp(moment: datetime) -> str:
    """'YYYY-MM-DD HH:MM:SS' in UTC (a naive datetime is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat(sep=" ")


def normalize_timestamp(value: str) -> str:
    """Accept 'YYYY-MM-DD HH:MM:SS' (UTC) or RFC 3339 / ISO 8601; return the ServiceNow form in UTC.

    A naive ISO value is taken as UTC; fractions of a second are dropped (the cursor
    has second precision, and truncating never skips a record: the keyset re-reads
    the whole second).
    """
    text = value.strip()
    try:
        return sn_timestamp(datetime.strptime(text, SN_FORMAT))
    except ValueError:
        pass
    iso = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(f"timestamp must be 'YYYY-MM-DD HH:MM:SS' (UTC) or RFC 3339, got {value!r}") from None
    return sn_timestamp(moment)


def check_sys_id(value: str) -> str:
    """'' (no record read at that second yet) or 32 lowercase hex characters."""
    if value and not _SYS_ID.fullmatch(value):
        raise ValueError(f"sys_id must be 32 lowercase hex characters, got {value!r}")
    return value
