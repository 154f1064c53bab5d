"""``backfill --deletes``: the range's deletes as tombstones, before its records, so a rebuilt topic is a mirror.

The deletes of ``[since, until)`` (``sys_audit_delete`` rows of the table,
:mod:`sncli.source.deletes`) are sent first, as one range with its own cursor
``deletes/<table>/<range-id>`` (resumed by a rerun of the same range, under its
own run lock); the windows' records follow only once every delete of the range
is acknowledged. Records are read after the deletes and show each record as it
is when read, so a record deleted and restored inside the range ends as its
record, and one deleted for good ends as a tombstone: the poll's order rule.

Refused with Parquet output (a tombstone is no row) and with ``--window i/N``
(the pods of a split run at once; the deletes must come before every window's
records): run ``--deletes`` with ``--parallel`` instead.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from typing import TYPE_CHECKING

from sncli.config.fingerprints import deletes_fingerprint
from sncli.errors import UsageError
from sncli.offsets.lock import run_lock
from sncli.offsets.model import StoredOffset, check_offset, deletes_key
from sncli.source.cursor import Cursor, UpperBound
from sncli.source.outcome import RunSummary, TableOutcome, cursor_json
from sncli.source.range_run import RangeRun

if TYPE_CHECKING:
    from sncli.config import Settings, SourceTable
    from sncli.metrics import RunMetrics
    from sncli.offsets.store import OffsetStore
    from sncli.servicenow.client import ServiceNowClient
    from sncli.source.poller import StopControl

log = logging.getLogger("sncli.source")


def check_deletes_request(*, parquet: bool, window: bool, set_cursor_without: bool = False) -> None:
    """UsageError for the combinations ``--deletes`` refuses (module doc).

    ``set_cursor_without``: ``--set-cursor`` on a ``deletes: audit`` table without
    ``--deletes``: the poll's deletes would then send the range's older tombstones
    after its records (a restored record would end deleted), so it is refused.
    """
    if set_cursor_without:
        raise UsageError("--set-cursor on a table with deletes: audit needs --deletes: the poll's deletes cursor "
                         "moves with its records cursor, so the range's deletes must be sent by the backfill")
    if parquet:
        raise UsageError("--deletes needs Kafka output: a tombstone has no Parquet row")
    if window:
        raise UsageError("--deletes cannot run with --window (every window's records must follow the deletes); "
                         "use --parallel")


def deletes_before_records(
    settings: Settings, table: SourceTable, client: ServiceNowClient, store: OffsetStore, *, rid: str,
    since: str, until: str, stop: StopControl, metrics: RunMetrics, summary: RunSummary, locks: ExitStack,
) -> bool:
    """Send the range's deletes (module doc); True when all are acknowledged and the records may follow.

    Otherwise the summary says why (a bound or a failure) and its exit code is set.
    """
    key = deletes_key(table.name, rid)
    lock = locks.enter_context(run_lock(settings, key))
    outcome = TableOutcome(f"{table.name} deletes")
    run = RangeRun(settings=settings, table=table, client=client, metrics=metrics, stop=stop, outcome=outcome,
                   key=key, fingerprint=deletes_fingerprint(settings, table), store=store, lock=lock,
                   label=f"{table.name} deletes", deletes_key=key)
    with run.guard():
        run.open_kafka(None)
        result = run.deletes(UpperBound(until, inclusive=False), Cursor.at_start(since))
        outcome.stopped = result.stopped or "caught_up"
    summary.extra["deletes"] = {"tombstones": outcome.deletes or 0, "dlq": dict(outcome.dlq),
                                "cursor_after": cursor_json(outcome.deletes_cursor),
                                "stopped": outcome.stopped, "error": outcome.error}
    summary.tables[table.name].dlq.update(outcome.dlq)  # counted with the windows' (exit 3)
    if outcome.error is not None:
        summary.exit_code = outcome.exit_code
        summary.tables[table.name].error, summary.tables[table.name].exit_code = outcome.error, outcome.exit_code
        return False
    if outcome.stopped != "caught_up":
        summary.tables[table.name].stopped = outcome.stopped
        log.info("%s: backfill stopped by %s in the deletes, before the records", table.name, outcome.stopped,
                 extra={"table": table.name})
        return False
    return True


def move_deletes_cursor(settings: Settings, store: OffsetStore, table: SourceTable, until: str) -> bool:
    """With ``--set-cursor --deletes``: the poll's deletes cursor to ``(until, "")`` too, never backwards.

    Called with the poll lock held, once the range's deletes and records are all in Kafka.
    """
    key, fingerprint = deletes_key(table.name), deletes_fingerprint(settings, table)
    stored = store.load(key)
    target = Cursor(until, "")
    if stored is not None:
        check_offset(stored, fingerprint)
        if Cursor(stored.timestamp, stored.sys_id) >= target:
            return False
    store.save(StoredOffset.new(key, target.timestamp, target.sys_id, fingerprint))
    log.info("%s: deletes cursor moved to %s with the poll cursor", table.name, until, extra={"table": table.name})
    return True
