"""Doctor's pure verdicts: query fields, clock skew, time zone, sample records, exit code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sncli.config import SourceTable
from sncli.doctor import (
    Check,
    clock_skew_check,
    exit_code_for,
    query_fields,
    table_sample_checks,
    time_zone_check,
)
from sncli.errors import ExitCode


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("active=true", {"active"}),
        ("active=true^priority<=2^ORDERBYDESCnumber", {"active", "priority", "number"}),
        ("stateIN1,2^ORshort_descriptionLIKEdisk^NQcaller_id.name=Bob", {"state", "short_description", "caller_id"}),
        ("descriptionISEMPTY^ORDERBYsys_updated_on", {"description", "sys_updated_on"}),
        ("short_description=a^^NQb=c", {"short_description"}),  # ^^ is an escaped caret in a value
        ("", set()),
    ],
)
def test_query_fields(query: str, fields: set[str]) -> None:
    assert query_fields(query) == fields


def test_exit_code_is_worst_status() -> None:
    ok, warn, fail, skip = (Check("a", s, "") for s in ("ok", "warn", "fail", "skip"))  # type: ignore[arg-type]
    assert exit_code_for([ok, skip]) == ExitCode.OK
    assert exit_code_for([ok, warn, skip]) == ExitCode.PARTIAL
    assert exit_code_for([warn, fail]) == ExitCode.FAILED


def test_clock_skew() -> None:
    server = datetime(2026, 1, 1, tzinfo=UTC)
    assert clock_skew_check(server + timedelta(seconds=2), server).status == "ok"
    late = clock_skew_check(server - timedelta(seconds=30), server)
    assert late.status == "warn" and "behind" in late.detail


def test_time_zone() -> None:
    assert time_zone_check("svc", "UTC").status == "ok"
    assert time_zone_check("svc", "Etc/UTC").status == "ok"
    berlin = time_zone_check("svc", "Europe/Berlin")
    assert berlin.status == "warn" and "UTC" in berlin.hint
    assert time_zone_check("svc", None).status == "warn"


def table(query: str | None = None) -> SourceTable:
    return SourceTable(name="incident", topic="t", query=query)


def test_sample_with_unknown_query_field_fails() -> None:
    sample = {"sys_id": "a" * 32, "sys_updated_on": "2026-01-01 00:00:00", "active": "true"}
    checks = {c.name: c for c in table_sample_checks(table("activ=true"), sample, None)}
    assert checks["table incident cursor fields"].status == "ok"
    assert checks["table incident base query"].status == "fail"
    assert "activ" in checks["table incident base query"].detail


def test_sample_with_bad_timestamp_fails() -> None:
    sample = {"sys_id": "a" * 32, "sys_updated_on": "01/01/2026 10:00"}
    (check,) = table_sample_checks(table(), sample, None)
    assert check.status == "fail" and "YYYY-MM-DD" in check.detail


def test_missing_cursor_field_fails() -> None:
    (check,) = table_sample_checks(table(), {"sys_id": "a" * 32}, None)
    assert check.status == "fail" and "sys_updated_on" in check.detail


def test_empty_table_uses_dictionary_or_warns() -> None:
    assert table_sample_checks(table("active=true"), None, {"active"})[0].status == "ok"
    assert table_sample_checks(table("activ=true"), None, {"active"})[0].status == "fail"
    assert table_sample_checks(table("active=true"), None, None)[0].status == "warn"
