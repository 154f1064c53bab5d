"""StoredOffset, keys, timestamps and the version/fingerprint check."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sncli.errors import ExitCode, OffsetsError
from sncli.offsets.model import (
    OFFSET_VERSION,
    OffsetMismatchError,
    StoredOffset,
    backfill_key,
    backfill_prefix,
    check_offset,
    check_sys_id,
    iso_utc,
    normalize_timestamp,
    parse_key,
    poll_key,
)

FP_A = "a" * 64
FP_B = "b" * 64
SYS_ID = "0123456789abcdef0123456789abcdef"


def offset(key: str = "incident", fingerprint: str = FP_A, version: int = OFFSET_VERSION) -> StoredOffset:
    base = StoredOffset.new(key, "2024-05-01 12:00:00", SYS_ID, fingerprint, now=datetime(2024, 5, 1, 12, 0, 3))
    return StoredOffset(**{**base.__dict__, "version": version})


def test_new_takes_the_table_from_the_key_and_stamps_utc() -> None:
    stored = StoredOffset.new(backfill_key("incident", "r1", 2, 4), "2024-05-01 12:00:00", "", FP_A,
                              now=datetime(2024, 5, 1, 14, 0, 3, tzinfo=UTC))
    assert stored.table == "incident"
    assert stored.key == "backfill/incident/r1/2of4"
    assert stored.updated_at == "2024-05-01T14:00:03Z"
    assert stored.version == OFFSET_VERSION


def test_json_round_trip_keeps_every_field() -> None:
    stored = offset()
    assert StoredOffset.from_json(stored.key, stored.to_json()) == stored
    assert "key" not in stored.to_json()  # the mapping key is the key


@pytest.mark.parametrize(
    "entry",
    [
        [],
        {"version": "1", "table": "t", "timestamp": "2024-05-01 12:00:00", "sys_id": "", "fingerprint": "",
         "updated_at": ""},
        {"version": 1, "table": "t", "timestamp": "yesterday", "sys_id": "", "fingerprint": "", "updated_at": ""},
        {"version": 1, "table": "t", "timestamp": "2024-05-01 12:00:00", "sys_id": 5, "fingerprint": "",
         "updated_at": ""},
        {"version": 1, "table": "t", "timestamp": "2024-05-01 12:00:00", "sys_id": ""},
        {"version": 1, "table": "other", "timestamp": "2024-05-01 12:00:00", "sys_id": "", "fingerprint": "",
         "updated_at": ""},
    ],
)
def test_from_json_rejects_malformed_entries(entry: object) -> None:
    with pytest.raises(ValueError):
        StoredOffset.from_json("t", entry)


def test_a_key_that_is_no_offset_key_is_refused() -> None:
    entry = offset().to_json()
    with pytest.raises(ValueError, match="not an offset key"):
        StoredOffset.from_json("Not A Key", {**entry, "table": "Not A Key"})


def test_check_offset_accepts_the_same_fingerprint_and_version() -> None:
    stored = offset()
    assert check_offset(stored, FP_A) is stored


def test_fingerprint_mismatch_names_both_values_and_the_reset_command() -> None:
    with pytest.raises(OffsetMismatchError) as info:
        check_offset(offset(), FP_B)
    message = str(info.value)
    assert FP_A[:12] in message and FP_B[:12] in message
    assert "`sncli offsets reset --table incident`" in message
    assert isinstance(info.value, OffsetsError)
    assert info.value.exit_code == ExitCode.USAGE


def test_version_mismatch_names_both_versions() -> None:
    with pytest.raises(OffsetMismatchError) as info:
        check_offset(offset(version=OFFSET_VERSION + 1), FP_A)
    message = str(info.value)
    assert f"version {OFFSET_VERSION + 1}" in message and f"version {OFFSET_VERSION}" in message
    assert "sncli offsets reset --table incident" in message


def test_backfill_mismatch_points_at_the_backfill_reset() -> None:
    with pytest.raises(OffsetMismatchError, match=r"reset --table incident --backfill"):
        check_offset(offset(key="backfill/incident/r1/0of4"), FP_B)


def test_keys() -> None:
    assert poll_key("incident") == "incident"
    assert parse_key("incident").kind == "poll"
    info = parse_key("backfill/u_cmdb_ci/2024-01-01T00:00:00Z_2024-02-01T00:00:00Z/3of8")
    assert (info.kind, info.table, info.range_id, info.index, info.count) == (
        "backfill", "u_cmdb_ci", "2024-01-01T00:00:00Z_2024-02-01T00:00:00Z", 3, 8)
    assert backfill_key("incident", "abc", 0, 4).startswith(backfill_prefix("incident"))
    for bad in ("Incident", "a/b", "backfill/incident/x", ""):
        with pytest.raises(ValueError):
            parse_key(bad)
    with pytest.raises(ValueError):
        backfill_key("incident", "a/b", 0, 4)
    with pytest.raises(ValueError):
        backfill_key("incident", "r", 5, 4)
    with pytest.raises(ValueError):
        poll_key("in cident")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2024-05-01 12:00:00", "2024-05-01 12:00:00"),
        ("2024-05-01T12:00:00Z", "2024-05-01 12:00:00"),
        ("2024-05-01T14:00:00.987+02:00", "2024-05-01 12:00:00"),
        ("2024-05-01T12:00:00", "2024-05-01 12:00:00"),
        ("0001-01-01T00:00:00Z", "0001-01-01 00:00:00"),
    ],
)
def test_normalize_timestamp(given: str, expected: str) -> None:
    assert normalize_timestamp(given) == expected


@pytest.mark.parametrize("bad", ["", "yesterday", "2024-13-01 00:00:00", "12:00:00"])
def test_normalize_timestamp_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM-DD HH:MM:SS"):
        normalize_timestamp(bad)


def test_sys_id_check() -> None:
    assert check_sys_id("") == ""
    assert check_sys_id(SYS_ID) == SYS_ID
    for bad in (SYS_ID.upper(), SYS_ID[:-1], SYS_ID + "^NQactive=true", "x" * 32):
        with pytest.raises(ValueError):
            check_sys_id(bad)


def test_iso_utc_converts_and_assumes_utc_for_naive() -> None:
    assert iso_utc(datetime(2024, 1, 1, 0, 0, 0)) == "2024-01-01T00:00:00Z"
    aware = datetime.fromisoformat("2024-01-01T02:00:00+02:00")
    assert iso_utc(aware) == "2024-01-01T00:00:00Z"
