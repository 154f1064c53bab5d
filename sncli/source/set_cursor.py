"""Moving the poll cursor after a backfill (``backfill --set-cursor``): only when nothing is skipped.

After a backfill of ``[since, until)`` into the topic, the poll may start at
``until`` instead of its stored cursor: but only when the backfill covered
everything after that cursor (``since`` at or before it), went to the topic (not
Parquet), and ended no later than what ServiceNow holds now. Each check refuses
with a UsageError (exit 2) saying why, before any work; the move itself checks
again under the poll lock and never moves the cursor backwards.
"""

from __future__ import annotations

import logging

from sncli.config import SourceTable
from sncli.errors import UsageError
from sncli.offsets.model import StoredOffset, check_offset, normalize_timestamp, poll_key
from sncli.offsets.store import OffsetStore
from sncli.source.cursor import Cursor
from sncli.source.windows import to_sn

log = logging.getLogger("sncli.backfill")


def check_set_cursor(poll: Cursor | None, since: str, *, table: str, parquet: bool) -> None:
    """Refuse (UsageError, exit 2) a ``--set-cursor`` that could move the poll cursor past unexported records.

    A Parquet output never reaches the topic: refused whatever the cursor.
    ``poll``: where the next poll starts (the stored cursor, else the table's
    start; None = not known yet, only the output is checked). Moving it to
    ``(until, "")`` passes every record after it and before ``until``; the
    backfill delivers only ``[since, until)`` to the topic, so the move is safe
    only when ``since`` is at or before the cursor's second (records of that
    second after the cursor are at or after ``since`` too).
    """
    if parquet:
        raise UsageError(
            f"--set-cursor cannot be used with --output parquet: the range goes to files, not to the topic, "
            f"so moving the poll cursor of {table} past it would skip those records in Kafka"
        )
    if poll is not None and since > poll.timestamp:
        raise UsageError(
            f"--set-cursor: the poll cursor of {table} is at {poll.timestamp}, before --since {since}; moving it "
            f"to --until would skip every record in between, which was never exported. Use --since {poll.timestamp} "
            f"(or earlier), or leave out --set-cursor"
        )


def check_until_reached(until: int, reached: int, *, table: str) -> None:
    """Refuse (UsageError, exit 2) a ``--set-cursor`` whose ``--until`` is past what ServiceNow holds now.

    ``reached``: the end a poll cycle started now would read to (server clock
    minus the safety lag, + 1 s). The backfill reads only what exists now; moving
    the poll cursor to a later ``until`` would skip every record changed between
    now and then.
    """
    if until > reached:
        raise UsageError(
            f"--set-cursor: --until {to_sn(until)} is past what ServiceNow holds now ({to_sn(reached)}, its clock "
            f"minus safety_lag_seconds); moving the poll cursor of {table} there would skip the records changed "
            f"in between. Leave out --until (it then ends at {to_sn(reached)}), or leave out --set-cursor"
        )


def poll_position(store: OffsetStore, table: SourceTable, fingerprint: str) -> Cursor:
    """Where the next poll of ``table`` starts: its stored cursor, else the table's ``start``."""
    stored = store.load(poll_key(table.name))
    if stored is None:
        return Cursor.at_start(normalize_timestamp(table.start))
    check_offset(stored, fingerprint)
    return Cursor(stored.timestamp, stored.sys_id)


def set_poll_cursor(store: OffsetStore, table: SourceTable, since: int, until: int, fingerprint: str) -> bool:
    """Move the poll cursor to ``(until, "")`` unless it is already there or further (checked again: never a gap)."""
    current = poll_position(store, table, fingerprint)
    target = Cursor(to_sn(until), "")
    if current >= target:
        log.info("%s: the poll cursor is already at or after %s; left as it is", table.name, target.timestamp)
        return False
    check_set_cursor(current, to_sn(since), table=table.name, parquet=False)
    store.save(StoredOffset.new(poll_key(table.name), target.timestamp, target.sys_id, fingerprint))
    log.info("%s: poll cursor moved to %s (the backfill covered everything before it)", table.name,
             target.timestamp)
    return True
