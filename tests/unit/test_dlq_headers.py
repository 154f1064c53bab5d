"""DLQ headers: built from the failure, read back, filtered; secrets never written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sncli import logs
from sncli.dlq.record import (
    ERROR_HEADERS,
    MAX_MESSAGE_CHARS,
    NOT_IN_KAFKA,
    REPLAY_COUNT,
    DeadLetterReason,
    Origin,
    dlq_headers,
    parse_entry,
)
from sncli.dlq.select import Filters, ReplayProgress, make_filters, mark_pending, parse_since
from sncli.errors import UsageError

NOW = datetime(2024, 5, 1, 12, 30, 45, 123456, tzinfo=UTC)
ORIGIN = Origin("servicenow.incident.changes", 3, 1234)
SID = "0123456789abcdef0123456789abcdef"


def as_dict(headers: list[tuple[str, bytes | None]]) -> dict[str, bytes | None]:
    return dict(headers)


def test_all_error_headers_are_present_after_the_original_ones() -> None:
    original = [("sn.sys_id", SID.encode()), ("trace", None)]
    failure = DeadLetterReason("permission", "403 Forbidden: ACL", status=403, table="incident", attempts=1)
    headers = dlq_headers(original, failure, ORIGIN, now=NOW)
    assert headers[:2] == original
    got = as_dict(headers)
    assert set(ERROR_HEADERS) <= set(got)
    assert got["sncli.error.class"] == b"permission"
    assert got["sncli.error.message"] == b"403 Forbidden: ACL"
    assert got["sncli.error.status"] == b"403"
    assert got["sncli.error.topic"] == b"servicenow.incident.changes"
    assert got["sncli.error.partition"] == b"3"
    assert got["sncli.error.offset"] == b"1234"
    assert got["sncli.error.table"] == b"incident"
    assert got["sncli.error.attempts"] == b"1"
    assert got["sncli.error.timestamp"] == b"2024-05-01T12:30:45.123Z"
    assert REPLAY_COUNT not in got


def test_status_and_table_are_empty_when_unknown() -> None:
    got = as_dict(dlq_headers([], DeadLetterReason("decode", "not JSON"), ORIGIN, now=NOW))
    assert got["sncli.error.status"] == b""
    assert got["sncli.error.table"] == b""


def test_replay_replaces_error_headers_instead_of_stacking_them() -> None:
    first = dlq_headers([("a", b"1")], DeadLetterReason("record", "400 bad"), ORIGIN, now=NOW)
    again = dlq_headers(first, DeadLetterReason("conflict", "409"), ORIGIN, now=NOW, replay_count=1)
    names = [k for k, _ in again]
    assert names.count("sncli.error.class") == 1
    assert as_dict(again)["sncli.error.class"] == b"conflict"
    assert as_dict(again)[REPLAY_COUNT] == b"1"
    third = dlq_headers(again, DeadLetterReason("conflict", "409"), ORIGIN, now=NOW, replay_count=2)
    assert [k for k, _ in third].count(REPLAY_COUNT) == 1
    assert as_dict(third)[REPLAY_COUNT] == b"2"
    assert third[0] == ("a", b"1")


def test_message_is_one_line_bounded_and_without_secrets() -> None:
    logs.register_secrets(["canary-Pa55w0rd"])
    message = "401 for user admin with password canary-Pa55w0rd\nand more\t" + "x" * 5000
    got = as_dict(dlq_headers([], DeadLetterReason("record", message), ORIGIN, now=NOW))["sncli.error.message"]
    assert got is not None
    text = got.decode()
    assert "canary-Pa55w0rd" not in text and "***" in text
    assert "\n" not in text and "\t" not in text
    assert len(text) <= MAX_MESSAGE_CHARS


def test_parse_entry_reads_back_what_was_written() -> None:
    headers = dlq_headers(
        [("sn.sys_id", SID.encode())], DeadLetterReason("not_found", "404", status=404, table="incident", attempts=2),
        ORIGIN, now=NOW, replay_count=3,
    )
    entry = parse_entry(0, 17, 1714566645000, b"k", b'{"a": 1}', headers)
    assert entry.error_class == "not_found"
    assert entry.status == 404
    assert entry.origin == ORIGIN
    assert entry.table == "incident"
    assert entry.attempts == 2
    assert entry.replay_count == 3
    assert entry.dead_lettered_at == datetime(2024, 5, 1, 12, 30, 45, 123000, tzinfo=UTC)
    assert entry.sys_id == SID
    assert entry.original_headers() == [("sn.sys_id", SID.encode())]
    row = entry.as_row()
    assert row["error_class"] == "not_found" and row["error_offset"] == 1234 and row["offset"] == 17
    assert row["headers"] == {"sn.sys_id": SID}


def test_parse_entry_tolerates_garbage() -> None:
    entry = parse_entry(0, 1, None, None, b"\xff", [("sncli.error.partition", b"x"), ("sncli.error.attempts", None)])
    assert entry.origin is None and entry.attempts == 0 and entry.status is None and entry.sys_id is None


def test_sys_id_for_display_comes_from_value_header_or_key() -> None:
    assert parse_entry(0, 0, None, None, b'{"sys_id": "%s"}' % SID.encode(), []).sys_id == SID
    assert parse_entry(0, 0, None, SID.encode(), b"nope", []).sys_id == SID
    assert parse_entry(0, 0, None, b"not-a-sys-id", None, []).sys_id is None


def test_filters() -> None:
    entry = parse_entry(0, 0, None, None, None, dlq_headers([], DeadLetterReason("permission", "x", table="incident"),
                                                            ORIGIN, now=NOW))
    assert Filters().matches(entry)
    assert Filters(table="incident", error_class="permission", since=NOW - timedelta(seconds=1)).matches(entry)
    assert not Filters(table="problem").matches(entry)
    assert not Filters(error_class="record").matches(entry)
    assert not Filters(since=NOW + timedelta(seconds=1)).matches(entry)


def test_since_parsing() -> None:
    assert parse_since("2h", now=NOW) == NOW - timedelta(hours=2)
    assert parse_since("30m", now=NOW) == NOW - timedelta(minutes=30)
    assert parse_since("7d", now=NOW) == NOW - timedelta(days=7)
    assert parse_since("2024-05-01", now=NOW) == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_since("2024-05-01 10:00:00", now=NOW) == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parse_since("2024-05-01T10:00:00Z", now=NOW) == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parse_since("2024-05-01T12:00:00+02:00", now=NOW) == datetime(2024, 5, 1, 10, tzinfo=UTC)
    for bad in ("yesterday", "2h ago", "", "2024-13-01"):
        with pytest.raises(UsageError):
            parse_since(bad, now=NOW)


def test_make_filters_rejects_unknown_classes() -> None:
    with pytest.raises(UsageError) as info:
        make_filters(None, "oops", None, now=NOW)
    assert "record" in str(info.value)
    assert make_filters("incident", "decode", "1h", now=NOW).since == NOW - timedelta(hours=1)


@settings(max_examples=200, deadline=None)
@given(
    message=st.text(max_size=3000),
    status=st.one_of(st.none(), st.integers(100, 599)),
    attempts=st.integers(0, 100),
    replay=st.integers(0, 5),
    original=st.lists(st.tuples(st.text(max_size=15), st.one_of(st.none(), st.binary(max_size=10))), max_size=5),
)
def test_headers_roundtrip(
    message: str, status: int | None, attempts: int, replay: int, original: list[tuple[str, bytes | None]]
) -> None:
    failure = DeadLetterReason("retries_exhausted", message, status=status, table="incident", attempts=attempts)
    headers = dlq_headers(original, failure, ORIGIN, now=NOW, replay_count=replay)
    entry = parse_entry(1, 2, None, None, None, headers)
    assert entry.error_class == "retries_exhausted"
    assert entry.status == status and entry.attempts == attempts and entry.replay_count == replay
    assert entry.origin == ORIGIN
    assert len(entry.message) <= MAX_MESSAGE_CHARS and "\n" not in entry.message
    kept = [(k, v) for k, v in original if not k.startswith("sncli.error.") and k != REPLAY_COUNT]
    assert entry.original_headers() == kept


def test_records_below_the_replay_groups_commit_are_history_the_rest_pending() -> None:
    entries = [parse_entry(p, o, None, None, b"{}", []) for p, o in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 5), (2, 0)]]
    progress = ReplayProgress("g", {0: 2, 1: 5})  # partition 2: never replayed
    assert [(e.partition, e.offset) for e in mark_pending(entries, progress, history=False)] == [
        (0, 2), (1, 5), (2, 0)]
    marked = list(mark_pending(entries, progress, history=True))
    assert [(e.partition, e.offset, e.pending) for e in marked] == [
        (0, 0, False), (0, 1, False), (0, 2, True), (1, 0, False), (1, 5, True), (2, 0, True)]
    assert marked[0].as_row()["pending"] is False and entries[0].as_row()["pending"] is None


# --------------------------------------------------------------------------- strict header numbers


MALFORMED = ["²", "٣", "1" * 5000, "-1", " 1", "1\n", "0x10", "1_000", "+1", "1.0", "\uff11"]
NUMBER_HEADERS = ["sncli.error.attempts", "sncli.error.status", "sncli.error.partition", "sncli.error.offset",
                  "sncli.replay.count"]
POSITIONS = ("sncli.error.partition", "sncli.error.offset")  # "-1" there: never in Kafka (the test below)


@pytest.mark.parametrize(("header", "bad"), [
    (header, bad) for header in NUMBER_HEADERS for bad in MALFORMED if not (bad == "-1" and header in POSITIONS)
])
def test_a_malformed_number_is_a_problem_not_an_exception(header: str, bad: str) -> None:
    good = dlq_headers([], DeadLetterReason("permission", "403", status=403), ORIGIN, now=NOW, replay_count=1)
    headers = [(k, bad.encode() if k == header else v) for k, v in good]
    entry = parse_entry(0, 3, None, b"k", b"{}", headers)  # '²' and 5000 digits once raised ValueError
    assert entry.problems == (header,)
    row = entry.as_row()
    assert row["problems"] == [header]
    assert entry.attempts >= 0 and entry.replay_count >= 0


def test_well_formed_numbers_have_no_problems() -> None:
    good = dlq_headers([], DeadLetterReason("permission", "403", status=403), ORIGIN, now=NOW, replay_count=1)
    entry = parse_entry(0, 3, None, b"k", b"{}", good)
    assert entry.problems == () and entry.origin == ORIGIN
    assert entry.status == 403 and entry.attempts == 1 and entry.replay_count == 1
    odd_time = parse_entry(0, 3, None, None, None, [("sncli.error.timestamp", b"0001-01-01T00:00:00+01:00")])
    assert odd_time.dead_lettered_at is None


def test_a_position_of_minus_one_is_a_record_never_in_kafka_not_a_problem() -> None:
    # The source dead-letters records Kafka refused with partition and offset -1: no origin to replay.
    nowhere = Origin("t", NOT_IN_KAFKA, NOT_IN_KAFKA)
    headers = dlq_headers([], DeadLetterReason("refused", "too large"), nowhere, now=NOW)
    entry = parse_entry(0, 3, None, b"k", b"{}", headers)
    assert (entry.problems, entry.origin) == ((), None)
    half = [(k, b"-1" if k == "sncli.error.offset" else v) for k, v in dlq_headers([], DeadLetterReason("record", "x"),
                                                                                    ORIGIN, now=NOW)]
    assert parse_entry(0, 4, None, b"k", b"{}", half).origin is None  # one position outside Kafka: no origin
