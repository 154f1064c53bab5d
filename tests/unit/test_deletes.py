"""Deletes as tombstones (pure): payload parsing, keys, headers, refusals; the deletes offset key."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sncli.config import FieldsKey, SysIdKey, deletes_fingerprint, parse_settings
from sncli.emulator.audit import audit_row
from sncli.offsets.admin import FINGERPRINT_MISMATCH, FINGERPRINT_OK, keys_to_reset, offset_rows
from sncli.offsets.model import StoredOffset, deletes_key, parse_key
from sncli.source.deletes import PayloadError, audit_table, build_tombstones, payload_fields
from sncli.source.keys import fields_digest, key_of
from sncli.source.record import RecordShape, TimestampCache

A = "a" * 32
FIELDS = {"sys_id": A, "number": "INC1", "company": "x & <y>", "sys_updated_on": "2026-01-01 00:00:00"}
EXTRACTED = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def _row(payload: str | None = None) -> dict[str, str]:
    row = {"sys_id": "b" * 32, "sys_created_on": "2026-01-01 00:00:09", "tablename": "incident", "documentkey": A}
    if payload is not None:
        row["payload"] = payload
    return row


def test_the_emulators_payload_parses_back_to_the_deleted_records_fields() -> None:
    assert payload_fields(audit_row("incident", FIELDS)["payload"], "incident") == FIELDS


@pytest.mark.parametrize("payload", ["", "not xml", "<record_update><problem/></record_update>", "<x><incident/></x>"])
def test_a_payload_without_the_tables_record_is_refused(payload: str) -> None:
    with pytest.raises(PayloadError):
        payload_fields(payload, "incident")


def test_tombstones_keyed_by_sys_id_or_by_the_payloads_fields_with_delete_headers() -> None:
    fields_key = FieldsKey(type="fields", fields=["number", "company"])
    by_fields = RecordShape("incident", "dev1.service-now.com", fields_key)
    payload = audit_row("incident", FIELDS)["payload"]
    msgs = build_tombstones([_row(payload)], by_fields, extracted_at=EXTRACTED, cache=TimestampCache())
    assert msgs.keys == [key_of(FIELDS, fields_key)] == [fields_digest(["INC1", "x & <y>"]).encode()]
    assert list(msgs.values) == [None] and msgs.refused == []
    assert msgs.timestamps == [int(datetime(2026, 1, 1, 0, 0, 9, tzinfo=UTC).timestamp() * 1000)]
    assert msgs.headers[0] == [
        ("sn.table", b"incident"), ("sn.instance", b"dev1.service-now.com"), ("sn.sys_id", A.encode()),
        ("sn.extracted_at", b"2026-01-02T03:04:05.678Z"), ("sn.operation", b"delete"),
    ]
    by_id = RecordShape("incident", "dev1.service-now.com", SysIdKey(type="sys_id"))
    assert build_tombstones([_row()], by_id, extracted_at=EXTRACTED, cache=TimestampCache()).keys == [A.encode()]


def test_a_fields_keyed_delete_without_a_readable_payload_is_refused_for_the_dlq() -> None:
    shape = RecordShape("incident", "i", FieldsKey(type="fields", fields=["number"]))
    msgs = build_tombstones([_row("<broken"), _row()], shape, extracted_at=EXTRACTED, cache=TimestampCache())
    assert [(r.index, r.error_class) for r in msgs.refused] == [(0, "encode"), (1, "encode")]
    assert A in msgs.refused[0].message


def test_the_audit_stream_reads_sys_audit_delete_rows_of_the_table_and_the_payload_only_for_fields_keys() -> None:
    settings = parse_settings({
        "servicenow": {"instance_url": "https://x.service-now.com", "auth": {"type": "basic", "username": "u",
                                                                          "password": "p"}},
        "source": {"tables": [
            {"name": "incident", "topic": "t", "deletes": "audit"},
            {"name": "problem", "topic": "p", "key": {"type": "fields", "fields": ["number"]}},
        ]},
    }, environ={})
    incident, problem = settings.source.tables
    assert (incident.deletes, problem.deletes) == ("audit", "none")
    audit = audit_table(incident)
    assert (audit.name, audit.query, audit.timestamp_field) == ("sys_audit_delete", "tablename=incident",
                                                                 "sys_created_on")
    assert "payload" not in (audit.fields or []) and "payload" in (audit_table(problem).fields or [])


def test_the_deletes_cursor_has_its_own_key_reset_with_the_table() -> None:
    assert deletes_key("incident") == "deletes/incident"
    assert parse_key("deletes/incident").kind == "deletes" and parse_key("deletes/incident").table == "incident"
    assert parse_key("deletes/incident/r1").range_id == "r1"
    offset = StoredOffset.new("deletes/incident", "2026-01-01 00:00:00", A, "f" * 64)
    stored = {k: offset for k in ("incident", "deletes/incident", "deletes/incident/r1", "deletes/problem")}
    assert keys_to_reset(stored, "incident", backfill=False) == ["deletes/incident", "incident"]
    assert keys_to_reset(stored, "incident", backfill=True) == ["deletes/incident", "deletes/incident/r1", "incident"]


def test_offsets_show_checks_a_deletes_cursor_against_the_deletes_fingerprint() -> None:
    settings = parse_settings({
        "servicenow": {"instance_url": "https://x.service-now.com",
                       "auth": {"type": "basic", "username": "u", "password": "p"}},
        "source": {"tables": [{"name": "incident", "topic": "t", "deletes": "audit"}]},
    }, environ={})
    table = settings.source.tables[0]
    stored = {
        "deletes/incident": StoredOffset.new("deletes/incident", "2026-01-01 00:00:00", A,
                                             deletes_fingerprint(settings, table)),
        "incident": StoredOffset.new("incident", "2026-01-01 00:00:00", A, deletes_fingerprint(settings, table)),
    }
    rows = {r.key: r.fingerprint for r in offset_rows(settings, stored, None, datetime(2026, 1, 2, tzinfo=UTC))}
    assert rows == {"deletes/incident": FINGERPRINT_OK, "incident": FINGERPRINT_MISMATCH}
