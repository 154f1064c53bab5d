"""Which ServiceNow time a table's lag is measured from (sncli.source.outcome.complete_up_to)."""

from __future__ import annotations

from datetime import UTC, datetime

from sncli.source.cursor import Cursor
from sncli.source.outcome import TableOutcome, complete_up_to, lag_seconds

HI = "2026-01-01 12:00:00"
START = Cursor.at_start("1970-01-01 00:00:00")
OLD = Cursor("2026-01-01 10:00:00", "a" * 32)


def test_a_caught_up_table_is_complete_up_to_the_cycles_upper_bound_however_old_its_cursor() -> None:
    assert complete_up_to(TableOutcome("t", cursor_after=OLD, stopped="caught_up"), HI, START) == HI
    assert complete_up_to(TableOutcome("t", stopped="caught_up"), HI, START) == HI  # an empty table


def test_a_bounded_failed_or_dry_run_is_complete_only_up_to_its_cursor() -> None:
    assert complete_up_to(TableOutcome("t", cursor_after=OLD, stopped="max_records"), HI, START) == OLD.timestamp
    failed = TableOutcome("t", cursor_after=OLD, stopped="caught_up", error="boom", exit_code=1)
    assert complete_up_to(failed, HI, START) == OLD.timestamp
    assert complete_up_to(TableOutcome("t", stopped="caught_up"), HI, START, stored=False) == START.timestamp
    assert complete_up_to(TableOutcome("t", error="boom", exit_code=1), HI, START) is None


def test_lag_is_now_minus_that_time_never_negative() -> None:
    now = datetime(2026, 1, 1, 12, 0, 2, tzinfo=UTC)
    assert lag_seconds(now, HI) == 2.0
    assert lag_seconds(now, "2026-01-01 12:00:09") == 0.0
    assert lag_seconds(now, "not a time") is None
