"""EmulatorState: records, system fields, clock, generation, dictionary, audit, settings."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from sncli.emulator.clock import EmulatorClock
from sncli.emulator.state import DuplicateRecordError, EmulatorState


def frozen_state(at: str = "2026-03-01 10:00:00") -> EmulatorState:
    state = EmulatorState()
    state.clock.freeze(at)
    return state


def test_insert_maintains_system_fields_and_strings() -> None:
    state = frozen_state()
    row = state.insert("incident", {"short_description": "x", "priority": 3, "active": True, "u_none": None})
    assert len(row["sys_id"]) == 32 and all(c in "0123456789abcdef" for c in row["sys_id"])
    assert row["sys_created_on"] == row["sys_updated_on"] == "2026-03-01 10:00:00"
    assert row["sys_mod_count"] == "0"
    assert row["sys_created_by"] == row["sys_updated_by"] == "admin"
    assert (row["priority"], row["active"], row["u_none"]) == ("3", "true", "")
    assert state.get("incident", row["sys_id"]) == row


def test_insert_honours_client_sys_id_and_refuses_duplicates() -> None:
    state = frozen_state()
    sid = "a" * 32
    assert state.insert("incident", {"sys_id": sid})["sys_id"] == sid
    with pytest.raises(DuplicateRecordError):
        state.insert("incident", {"sys_id": sid})
    with pytest.raises(DuplicateRecordError):
        state.bulk_insert("incident", [{"sys_id": "b" * 32}, {"sys_id": "b" * 32}])
    assert state.count("incident") == 1


def test_seeding_may_set_timestamps_but_at_wins() -> None:
    state = frozen_state()
    row = state.insert("t", {"sys_updated_on": "2026-01-01 00:00:05", "sys_created_on": "2026-01-01 00:00:01"})
    assert (row["sys_created_on"], row["sys_updated_on"]) == ("2026-01-01 00:00:01", "2026-01-01 00:00:05")
    row = state.insert("t", {"sys_updated_on": "2026-01-01T00:00:07Z"})
    assert row["sys_updated_on"] == "2026-01-01 00:00:07"  # ISO text is stored the ServiceNow way
    with pytest.raises(ValueError):
        state.insert("t", {"sys_updated_on": "yesterday"})
    row = state.insert("t", {"sys_updated_on": "2026-01-01 00:00:05"}, at="2025-12-31 23:59:59")
    assert row["sys_updated_on"] == row["sys_created_on"] == "2025-12-31 23:59:59"


def test_api_insert_ignores_client_system_fields_except_sys_id() -> None:
    state = frozen_state()
    selection = state.api_insert(
        "t", {"sys_id": "c" * 32, "sys_updated_on": "1999-01-01 00:00:00", "sys_mod_count": "7", "x": 1}, "admin"
    )
    fields = selection.records[0].fields
    assert fields["sys_id"] == "c" * 32
    assert fields["sys_updated_on"] == "2026-03-01 10:00:00"
    assert fields["sys_mod_count"] == "0"


def test_update_bumps_mod_count_and_timestamp_but_not_on_no_change() -> None:
    state = frozen_state()
    row = state.insert("incident", {"state": "1"})
    state.clock.advance(5)
    updated = state.update("incident", row["sys_id"], {"state": 2, "sys_mod_count": "99", "sys_id": "zz"})
    assert updated is not None
    assert updated["state"] == "2"
    assert updated["sys_mod_count"] == "1"
    assert updated["sys_updated_on"] == "2026-03-01 10:00:05"
    assert updated["sys_created_on"] == "2026-03-01 10:00:00"
    assert updated["sys_id"] == row["sys_id"]
    state.clock.advance(5)
    same = state.update("incident", row["sys_id"], {"state": "2"})
    assert same == updated  # ServiceNow does not write (or re-stamp) an update that changes nothing
    assert state.update("incident", "f" * 32, {"state": "3"}) is None
    assert state.update("nosuchtable", "f" * 32, {"state": "3"}) is None


def test_delete_records_sys_audit_delete_row() -> None:
    state = frozen_state()
    row = state.insert("incident", {"state": "1"})
    state.clock.advance(60)
    assert state.delete("incident", row["sys_id"])
    assert not state.delete("incident", row["sys_id"])
    assert state.get("incident", row["sys_id"]) is None
    audit = state.records("sys_audit_delete")
    assert len(audit) == 1
    assert audit[0]["tablename"] == "incident"
    assert audit[0]["documentkey"] == row["sys_id"]
    assert audit[0]["sys_created_on"] == "2026-03-01 10:01:00"


def test_many_records_share_one_second_with_a_frozen_clock() -> None:
    state = frozen_state()
    rows = [state.insert("t", {"n": str(i)}) for i in range(50)]
    assert {r["sys_updated_on"] for r in rows} == {"2026-03-01 10:00:00"}
    listed = state.records("t")
    assert [r["sys_id"] for r in listed] == sorted(r["sys_id"] for r in rows)


def test_generate_spreads_timestamps_and_shares_seconds() -> None:
    state = frozen_state()
    ids = state.generate("incident", 100, at="2026-02-01 00:00:00", spread_seconds=10)
    rows = state.records("incident")
    assert len(ids) == len(set(ids)) == 100
    stamps = sorted({r["sys_updated_on"] for r in rows})
    assert stamps[0] == "2026-02-01 00:00:00" and stamps[-1] == "2026-02-01 00:00:09"
    assert len(stamps) == 10
    # default `at`: the newest record is not in the future
    state.generate("other", 10, spread_seconds=30)
    assert max(r["sys_updated_on"] for r in state.records("other")) <= "2026-03-01 10:00:00"
    assert min(r["sys_updated_on"] for r in state.records("other")) == "2026-03-01 09:59:30"


def test_generate_size_fields_and_determinism() -> None:
    one, two = frozen_state(), frozen_state()
    assert one.generate("incident", 20, seed=7) == two.generate("incident", 20, seed=7)
    assert one.generate("incident", 20, seed=7) != two.generate("incident", 20, seed=8)
    first, again = one.generate("x", 20, seed=7), one.generate("x", 20, seed=7)
    assert not set(first) & set(again)  # a repeated seed on a filled table still yields new sys_ids
    assert one.count("x") == 40
    state = frozen_state()
    state.generate("incident", 10, field_count=30, record_bytes=1024)
    for row in state.records("incident"):
        assert len(row) == 30
        assert 1000 <= len(orjson.dumps(row)) <= 1100
        assert all(isinstance(v, str) for v in row.values())
    state.generate("wide", 3, field_count=60, record_bytes=4096)
    assert all(len(r) == 60 and len(orjson.dumps(r)) >= 4000 for r in state.records("wide"))


def test_generated_tables_are_described_in_sys_dictionary_with_types() -> None:
    state = frozen_state()
    state.generate("incident", 1)
    rows = [r for r in state.records("sys_dictionary") if r["name"] == "incident"]
    types = {r["element"]: r["internal_type"] for r in rows}
    assert set(types) == set(state.records("incident")[0])
    assert {"string", "integer", "boolean", "glide_date_time", "reference", "decimal", "GUID"} <= set(types.values())
    assert types["sys_updated_on"] == "glide_date_time"
    assert types["priority"] == "integer"
    caller = next(r for r in rows if r["element"] == "caller_id")
    assert (caller["reference"], caller["max_length"]) == ("sys_user", "32")


def test_every_table_has_a_sys_db_object_row() -> None:
    state = frozen_state()
    state.generate("incident", 1)
    objects = {r["name"]: r for r in state.records("sys_db_object")}
    assert {"incident", "sys_user", "sys_dictionary", "sys_db_object", "sys_audit_delete"} <= set(objects)
    assert objects["incident"]["super_class"] == ""
    assert state.count("sys_db_object") == len(state.tables())


def test_new_fields_from_writes_become_string_columns() -> None:
    state = frozen_state()
    state.insert("u_custom", {"u_a": "1"})
    state.update("u_custom", state.records("u_custom")[0]["sys_id"], {"u_b": "2"})
    elements = {r["element"]: r["internal_type"] for r in state.records("sys_dictionary") if r["name"] == "u_custom"}
    assert elements["u_a"] == elements["u_b"] == "string"
    assert state.columns("u_custom")["u_b"] == "string"


def test_define_table_declares_types() -> None:
    state = frozen_state()
    state.define_table("t", {"amount": "decimal"})
    assert state.columns("t")["amount"] == "decimal"  # an empty table still has its columns
    state.insert("t", {"amount": "10"})
    state.insert("t", {"amount": "9"})
    table = state._tables["t"]
    page, _ = table.select("amount>9.5", limit=10, offset=0, want_count=False)
    assert [r.fields["amount"] for r in page] == ["10"]


def test_integration_user_and_time_zone_setting() -> None:
    state = EmulatorState()
    users = state.records("sys_user")
    assert [(u["user_name"], u["time_zone"]) for u in users] == [("admin", "UTC")]
    state.update_settings(user_time_zone="Europe/Paris")
    assert state.records("sys_user")[0]["time_zone"] == "Europe/Paris"
    state.settings.user_time_zone = "UTC"  # a direct assignment takes effect too
    assert state.records("sys_user")[0]["time_zone"] == "UTC"
    state.settings.denied_tables = ["x"]  # type: ignore[assignment]
    assert state.settings.denied_tables == {"x"}
    with pytest.raises(ValueError, match="unknown setting"):
        state.update_settings(nope=1)


def test_reset_restores_a_fresh_emulator() -> None:
    state = frozen_state()
    state.generate("incident", 5)
    state.update_settings(read_latency_ms=5, denied_tables=["sys_dictionary"])
    state.reset()
    assert state.count("incident") == 0
    assert state.tables().get("incident") is None  # gone (it still "exists" empty: an out-of-box table)
    assert state.settings.read_latency_ms == 0 and state.settings.denied_tables == set()
    assert not state.clock.frozen
    assert state.count("sys_user") == 1


def test_clock_freeze_set_advance_unfreeze() -> None:
    now = [datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)]
    clock = EmulatorClock(lambda: now[0])
    assert clock.stamp() == "2026-01-01 00:00:00"
    clock.set("2026-06-01 12:00:00")
    now[0] = datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)
    assert clock.stamp() == "2026-06-01 12:00:10"  # a set clock keeps running
    clock.freeze()
    now[0] = datetime(2026, 1, 1, 0, 1, 0, tzinfo=UTC)
    assert clock.stamp() == "2026-06-01 12:00:10" and clock.frozen
    clock.advance(3600)
    assert clock.stamp() == "2026-06-01 13:00:10"
    clock.set(datetime(2026, 7, 1))  # naive = UTC; stays frozen
    assert clock.stamp() == "2026-07-01 00:00:00"
    clock.unfreeze()
    now[0] = datetime(2026, 1, 1, 0, 1, 30, tzinfo=UTC)
    assert clock.stamp() == "2026-07-01 00:00:30"
    clock.reset()
    assert clock.stamp() == "2026-01-01 00:01:30"


def test_journal_is_bounded_and_clearable() -> None:
    from sncli.emulator.state import JournalEntry

    state = EmulatorState()
    state.update_settings(journal_size=3)
    for i in range(5):
        state.record_request(JournalEntry("GET", f"/p{i}", {}, 200, None, "basic", state.clock.now()))
    assert [e.path for e in state.journal()] == ["/p2", "/p3", "/p4"]
    assert state.journal()[0].to_dict()["body"] is None
    state.clear_journal()
    assert state.journal() == []
