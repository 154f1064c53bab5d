"""What ``sncli offsets show|set|reset|import`` do, without the CLI.

Edits go through the same conditional store writes as a run and hold the run
lock of each table they touch, so an operator can never move a cursor under a
running poll. Each edit takes what the operator confirmed (``expect``) and
refuses if the stored value changed in between.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sncli.config import Settings, deletes_fingerprint, source_fingerprint
from sncli.errors import UsageError
from sncli.offsets.bridge_import import BridgeFormatError, parse_bridge_offsets
from sncli.offsets.lock import run_lock
from sncli.offsets.model import (
    OFFSET_VERSION,
    OffsetConflictError,
    StoredOffset,
    backfill_prefix,
    check_sys_id,
    deletes_key,
    normalize_timestamp,
    parse_key,
    poll_key,
)

if TYPE_CHECKING:
    from pathlib import Path

    from sncli.offsets.store import OffsetStore

FINGERPRINT_OK = "ok"
FINGERPRINT_MISMATCH = "mismatch"
NOT_IN_CONFIG = "not in config"


def current_fingerprint(settings: Settings, table: str, *, deletes: bool = False) -> str:
    """The fingerprint a table's poll cursor (or, with ``deletes``, its deletes cursor) is valid for."""
    if deletes:
        return deletes_fingerprint(settings, settings.source.table(table))
    return source_fingerprint(settings, settings.source.table(table))


def require_tables(settings: Settings, tables: Iterable[str]) -> None:
    """UsageError (exit 2) naming every table that is not in ``source.tables``."""
    known = set(settings.source.table_names())
    unknown = sorted({t for t in tables if t not in known})
    if unknown:
        listed = ", ".join(sorted(known)) or "none"
        raise UsageError(f"not in source.tables: {', '.join(unknown)} (configured: {listed})")


# --------------------------------------------------------------------------- show


@dataclass(frozen=True)
class OffsetRow:
    table: str
    key: str
    stored: bool
    timestamp: str | None
    sys_id: str | None
    lag_seconds: int | None
    fingerprint: str | None  # ok | mismatch | not in config | None (nothing stored)
    stored_fingerprint: str | None
    version: int | None
    updated_at: str | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def offset_rows(
    settings: Settings, stored: dict[str, StoredOffset], tables: list[str] | None, now: datetime
) -> list[OffsetRow]:
    """One row per configured table (stored or not) and per other stored key, poll cursor first."""
    configured = settings.source.table_names()
    wanted = set(tables) if tables else None
    rows: list[OffsetRow] = []
    keys = set(stored)
    keys.update(poll_key(t) for t in configured)
    for key in keys:
        info = parse_key(key)
        if wanted is not None and info.table not in wanted:
            continue
        offset = stored.get(key)
        if offset is None:
            rows.append(OffsetRow(info.table, key, False, None, None, None, None, None, None, None))
            continue
        if info.table not in configured:
            status = NOT_IN_CONFIG
        elif offset.version != OFFSET_VERSION or offset.fingerprint != current_fingerprint(
            settings, info.table, deletes=info.kind == "deletes"
        ):
            status = FINGERPRINT_MISMATCH
        else:
            status = FINGERPRINT_OK
        lag = int((now - offset.timestamp_datetime()).total_seconds())
        rows.append(OffsetRow(info.table, key, True, offset.timestamp, offset.sys_id, lag, status,
                              offset.fingerprint, offset.version, offset.updated_at))
    rows.sort(key=lambda r: (r.table, r.key != r.table, r.key))
    return rows


# --------------------------------------------------------------------------- edits


def parse_position(timestamp: str, sys_id: str) -> tuple[str, str]:
    try:
        return normalize_timestamp(timestamp), check_sys_id(sys_id)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _changed_while_confirming(key: str) -> OffsetConflictError:
    return OffsetConflictError(
        f"the offset for {key} changed while waiting for confirmation; nothing written, run the command again"
    )


def set_offset(
    settings: Settings, store: OffsetStore, table: str, timestamp: str, sys_id: str, *, expect: StoredOffset | None
) -> StoredOffset:
    """Move the poll cursor of ``table`` to (timestamp, sys_id) with the current fingerprint."""
    require_tables(settings, [table])
    timestamp, sys_id = parse_position(timestamp, sys_id)
    key = poll_key(table)
    new = StoredOffset.new(key, timestamp, sys_id, current_fingerprint(settings, table))
    with run_lock(settings, table):
        if store.load(key) != expect:
            raise _changed_while_confirming(key)
        store.save(new)
    return new


def keys_to_reset(stored: dict[str, StoredOffset], table: str, *, backfill: bool) -> list[str]:
    """The poll and deletes cursors of ``table`` and, with ``backfill``, its backfill windows (that are stored)."""
    prefix = backfill_prefix(table)
    mine = {poll_key(table), deletes_key(table)}
    return sorted(
        k for k in stored if k in mine or (backfill and (k.startswith(prefix) or _backfill_deletes(k, table)))
    )


def _backfill_deletes(key: str, table: str) -> bool:
    info = parse_key(key)
    return info.kind == "deletes" and info.table == table and info.range_id is not None


def reset_offsets(
    settings: Settings, store: OffsetStore, table: str, *, backfill: bool, expect: dict[str, StoredOffset]
) -> list[str]:
    """Delete the keys ``keys_to_reset`` names; returns them. The next poll starts at the table's ``start``."""
    require_tables(settings, [table])
    with run_lock(settings, table):
        current = store.load_all()
        keys = keys_to_reset(current, table, backfill=backfill)
        if {k: current[k] for k in keys} != expect:
            raise _changed_while_confirming(table)
        for key in keys:
            store.delete(key)
    return keys


def read_bridge_file(path: Path) -> list[tuple[str, str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read bridge offsets {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return parse_bridge_offsets(text)
    except BridgeFormatError as exc:
        raise UsageError(f"bridge offsets {path}: {exc}") from None


def check_import_tables(settings: Settings, entries: list[tuple[str, str, str]], path: Path) -> None:
    known = set(settings.source.table_names())
    unknown = sorted(t for t, _, _ in entries if t not in known)
    if unknown:
        raise UsageError(
            f"bridge offsets {path} has tables that are not in source.tables: {', '.join(unknown)}; "
            f"add them to the config or remove them from the file. Nothing was imported"
        )


def import_offsets(
    settings: Settings,
    store: OffsetStore,
    entries: list[tuple[str, str, str]],
    *,
    expect: dict[str, StoredOffset | None],
) -> list[StoredOffset]:
    """Write each (table, timestamp, sys_id) as that table's poll cursor, holding every table's run lock."""
    require_tables(settings, [t for t, _, _ in entries])
    written: list[StoredOffset] = []
    with ExitStack() as locks:
        for table in sorted({t for t, _, _ in entries}):
            locks.enter_context(run_lock(settings, table))
        for table, _, _ in entries:
            if store.load(poll_key(table)) != expect.get(table):
                raise _changed_while_confirming(table)
        for table, timestamp, sys_id in entries:
            new = StoredOffset.new(poll_key(table), timestamp, sys_id, current_fingerprint(settings, table))
            store.save(new)
            written.append(new)
    return written


def utcnow() -> datetime:
    return datetime.now(UTC)
