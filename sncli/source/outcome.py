"""What a source run reports: per table (:class:`TableOutcome`) and per run (:class:`RunSummary`).

Also the rules that turn outcomes into an exit code (:func:`combined_exit_code`:
0 every table finished, 3 some failed or dead-lettered records, else the
tables' common code) and into the offset lag metric (:func:`complete_up_to`,
:func:`lag_seconds`). Shared by ``source poll`` and ``backfill``; pure, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sncli.errors import ExitCode, SncliError
from sncli.source.cursor import Cursor, parse_sn_time


def cursor_json(cursor: Cursor | None) -> dict[str, str] | None:
    return None if cursor is None else {"timestamp": cursor.timestamp, "sys_id": cursor.sys_id}


@dataclass
class TableOutcome:
    name: str
    records: int = 0
    pages: int = 0
    produced: int = 0
    cursor_before: Cursor | None = None
    cursor_after: Cursor | None = None
    stopped: str | None = None  # caught_up / max_records / max_seconds / signal
    error: str | None = None
    exit_code: int = 0
    dlq: dict[str, int] = field(default_factory=dict)  # records dead-lettered instead of produced, per class
    hidden: int = 0  # rows hidden by ACLs that the cursor passed (see sncli.source.fetch.TableRequests.look_past)
    deletes: int | None = None  # tombstones acknowledged (None: the table's deletes were not read)
    deletes_cursor: Cursor | None = None  # the deletes cursor stored last (sncli.source.deletes)

    def to_json(self) -> dict[str, Any]:
        data = self._json()
        if self.deletes is not None:
            data["deletes"] = self.deletes
            data["deletes_cursor_after"] = cursor_json(self.deletes_cursor)
        return data

    def _json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "pages": self.pages,
            "produced": self.produced,
            "dlq": dict(self.dlq),
            "hidden_by_acl": self.hidden,
            "cursor_before": cursor_json(self.cursor_before),
            "cursor_after": cursor_json(self.cursor_after),
            "stopped": self.stopped,
            "error": self.error,
        }


@dataclass
class RunSummary:
    command: str
    tables: dict[str, TableOutcome] = field(default_factory=dict)
    duration_seconds: float = 0.0
    exit_code: int = 0
    upper_bound: str | None = None
    error: str | None = None  # a failure before any table ran
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "command": self.command,
            "tables": {name: t.to_json() for name, t in sorted(self.tables.items())},
            "duration_seconds": round(self.duration_seconds, 3),
            "exit_code": self.exit_code,
        }
        if self.upper_bound is not None:
            data["upper_bound"] = self.upper_bound
        if self.error is not None:
            data["error"] = self.error
        data.update(self.extra)
        return data


def combined_exit_code(outcomes: list[TableOutcome]) -> int:
    failed = [o for o in outcomes if o.error is not None]
    if not failed:
        # Records dead-lettered instead of produced: the rest is committed, those need attention.
        return int(ExitCode.PARTIAL) if any(o.dlq for o in outcomes) else int(ExitCode.OK)
    if len(failed) < len(outcomes):
        return int(ExitCode.PARTIAL)
    codes = {o.exit_code for o in failed}
    return codes.pop() if len(codes) == 1 else int(ExitCode.FAILED)


def describe_error(exc: BaseException) -> tuple[str, int]:
    if isinstance(exc, SncliError):
        return str(exc), int(exc.exit_code)
    return f"{type(exc).__name__}: {exc}", int(ExitCode.FAILED)



def complete_up_to(outcome: TableOutcome, upper: str | None, start: Cursor, *, stored: bool = True) -> str | None:
    """The ServiceNow time up to which the topic is known to hold the table (None: unknown).

    A table whose cycle caught up (an empty page below ``HI``, its cursor stored)
    holds everything up to ``HI``, however old its newest record: an idle table is
    not behind. Otherwise it holds what its stored cursor covers (its ``start``
    when nothing was ever stored and the run did not fail).
    """
    if stored and outcome.error is None and outcome.stopped == "caught_up" and upper is not None:
        return upper
    if outcome.cursor_after is not None:
        return outcome.cursor_after.timestamp
    return start.timestamp if outcome.error is None else None


def lag_seconds(now: datetime, complete: str) -> float | None:
    """How far behind ServiceNow's ``now`` a table complete up to ``complete`` is (never negative)."""
    try:
        return max(0.0, (now - parse_sn_time(complete)).total_seconds())
    except ValueError:
        return None



def show(cursor: Cursor | None) -> str:
    if cursor is None:
        return "(none)"
    return f"{cursor.timestamp} {cursor.sys_id or '(start of second)'}"

