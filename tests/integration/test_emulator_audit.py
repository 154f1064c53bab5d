"""The emulator's ``sys_audit_delete`` over real HTTP: every delete path adds a row with the record as XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import requests

from sncli.emulator.server import ServiceNowEmulator

pytestmark = pytest.mark.integration

AUTH = ("admin", "admin")


def _audit(emu: ServiceNowEmulator, query: str, **params: str) -> list[dict[str, str]]:
    r = requests.get(f"{emu.url}/api/now/table/sys_audit_delete", auth=AUTH,
                     params={"sysparm_query": query, **params}, timeout=10)
    assert r.status_code == 200, r.text
    rows: list[dict[str, str]] = r.json()["result"]
    return rows


def test_every_delete_path_is_audited_with_the_record_as_update_set_xml(emulator: ServiceNowEmulator) -> None:
    state = emulator.state
    state.clock.freeze("2026-05-01 10:00:00")
    a = state.insert("incident", {"number": "INC1", "short_description": "a <b> & \"c\""})
    b = state.insert("incident", {"number": "INC2"})
    c = state.insert("incident", {"number": "INC3"})
    state.clock.set("2026-05-01 10:00:05")
    deleted = requests.delete(f"{emulator.url}/api/now/table/incident/{a['sys_id']}", auth=AUTH, timeout=10)
    assert deleted.status_code == 204
    state.clock.set("2026-05-01 10:00:07")
    control = requests.post(f"{emulator.url}/__emulator/delete", json={"table": "incident", "sys_id": b["sys_id"]},
                            timeout=10)
    assert control.status_code == 200
    state.clock.set("2026-05-01 10:00:09")
    assert state.delete("incident", c["sys_id"])

    rows = _audit(emulator, "tablename=incident^ORDERBYsys_created_on^ORDERBYsys_id")
    assert [r["documentkey"] for r in rows] == [a["sys_id"], b["sys_id"], c["sys_id"]]
    assert [r["sys_created_on"] for r in rows] == ["2026-05-01 10:00:05", "2026-05-01 10:00:07", "2026-05-01 10:00:09"]
    assert rows[0]["display_value"] == "INC1"
    root = ET.fromstring(rows[0]["payload"])
    assert root.tag == "record_update" and root.get("table") == "incident"
    (record,) = list(root)
    assert record.tag == "incident" and record.get("action") == "DELETE"
    assert {child.tag: (child.text or "") for child in record} == a  # every field, escaped and back

    # The same keyset query the source sends: after (10:00:05, a's row) up to 10:00:07.
    first = rows[0]
    t0, t1 = "2026-05-01 10:00:05", "2026-05-01 10:00:07"
    page = _audit(emulator, f"tablename=incident^sys_created_on={t0}^sys_id>{first['sys_id']}"
                            f"^NQtablename=incident^sys_created_on>{t0}^sys_created_on<={t1}"
                            "^ORDERBYsys_created_on^ORDERBYsys_id")
    assert [r["documentkey"] for r in page] == [b["sys_id"]]
    assert _audit(emulator, "tablename=problem") == []
