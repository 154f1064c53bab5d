"""The pure parts of `sncli offsets`: rows for `show`, keys for `reset`, input checks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sncli.config import Settings, parse_settings, source_fingerprint
from sncli.errors import ExitCode, UsageError
from sncli.offsets.admin import keys_to_reset, offset_rows, parse_position, require_tables
from sncli.offsets.model import OFFSET_VERSION, StoredOffset, backfill_key

NOW = datetime(2024, 5, 1, 13, 0, 0, tzinfo=UTC)


@pytest.fixture
def settings() -> Settings:
    return parse_settings({
        "servicenow": {"instance_url": "https://x.example.com",
                       "auth": {"type": "basic", "username": "u", "password": "p"}},
        "source": {"tables": [{"name": "incident", "topic": "a"}, {"name": "problem", "topic": "b"},
                              {"name": "task", "topic": "c"}]},
    })


def stored(
    settings: Settings, key: str, *, fingerprint: str | None = None, version: int = OFFSET_VERSION
) -> StoredOffset:
    table = key.split("/")[1] if key.startswith("backfill/") else key
    fp = fingerprint
    if fp is None:
        fp = source_fingerprint(settings, settings.source.table(table))
    offset = StoredOffset.new(key, "2024-05-01 12:00:00", "", fp)
    return StoredOffset(**{**offset.__dict__, "version": version})


def test_rows_cover_configured_tables_and_every_stored_key(settings: Settings) -> None:
    window = backfill_key("incident", "r1", 0, 2)
    offsets = {
        "incident": stored(settings, "incident"),
        window: stored(settings, window),
        "problem": stored(settings, "problem", fingerprint="0" * 64),
        "task": stored(settings, "task", version=OFFSET_VERSION + 1),
        "old_table": StoredOffset.new("old_table", "2024-05-01 12:59:30", "", "1" * 64),
    }
    rows = offset_rows(settings, offsets, None, NOW)
    assert [(r.table, r.key, r.fingerprint) for r in rows] == [
        ("incident", "incident", "ok"),
        ("incident", window, "ok"),
        ("old_table", "old_table", "not in config"),
        ("problem", "problem", "mismatch"),
        ("task", "task", "mismatch"),
    ]
    assert rows[0].lag_seconds == 3600
    assert rows[2].lag_seconds == 30


def test_rows_show_tables_with_nothing_stored_and_filter(settings: Settings) -> None:
    rows = offset_rows(settings, {"incident": stored(settings, "incident")}, ["problem", "incident"], NOW)
    assert [(r.table, r.stored, r.fingerprint, r.lag_seconds) for r in rows] == [
        ("incident", True, "ok", 3600), ("problem", False, None, None)]
    assert set(rows[0].to_json()) >= {"table", "key", "timestamp", "sys_id", "lag_seconds", "fingerprint",
                                      "updated_at"}


def test_keys_to_reset(settings: Settings) -> None:
    keys = ["incident", backfill_key("incident", "r", 0, 2), backfill_key("incident", "r", 1, 2),
            "incident_x", backfill_key("incident_x", "r", 0, 1)]
    offsets = {k: stored(settings, k, fingerprint="f") for k in keys}
    assert keys_to_reset(offsets, "incident", backfill=False) == ["incident"]
    assert keys_to_reset(offsets, "incident", backfill=True) == sorted(keys[:3])
    assert keys_to_reset({}, "incident", backfill=True) == []


def test_input_checks_are_usage_errors(settings: Settings) -> None:
    require_tables(settings, ["incident", "task"])
    with pytest.raises(UsageError, match="nope, zzz") as info:
        require_tables(settings, ["zzz", "incident", "nope"])
    assert info.value.exit_code == ExitCode.USAGE
    assert parse_position("2024-05-01T12:00:00Z", "") == ("2024-05-01 12:00:00", "")
    with pytest.raises(UsageError):
        parse_position("soon", "")
    with pytest.raises(UsageError):
        parse_position("2024-05-01 12:00:00", "ABC")
