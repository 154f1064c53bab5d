"""Fidelity: the emulator driven by ServiceNow clients nobody here wrote (pysnc, pysnow).

pysnc refuses ``http://`` instance URLs (``pysnc.utils.get_instance`` raises
"Must provide https:// url not http://"); the emulator speaks plain HTTP on
127.0.0.1, so the client is built for an https URL and its private instance
attribute is pointed at the emulator afterwards. Every request pysnc makes goes
through ``TableAPI._target``, which reads that attribute, so nothing else changes.
pysnow supports plain HTTP itself (``use_ssl=False``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pysnow
import pytest
import requests
from pysnc import ServiceNowClient

from sncli.emulator.server import ServiceNowEmulator

pytestmark = pytest.mark.integration

AUTH = ("admin", "admin")


def pysnc_client(emu: ServiceNowEmulator) -> ServiceNowClient:
    client = ServiceNowClient("https://127.0.0.1", auth=AUTH)
    client._ServiceNowClient__instance = emu.url  # type: ignore[attr-defined]
    assert client.instance == emu.url
    return client


def seed(emu: ServiceNowEmulator) -> list[dict[str, str]]:
    emu.state.clock.freeze("2026-03-03 12:00:00")
    emu.state.generate("incident", 40, at="2026-03-01 00:00:00", spread_seconds=4, seed=5)
    return emu.state.records("incident")


# ----------------------------------------------------------------------------- pysnc


def test_pysnc_insert_get_update_delete(emulator: ServiceNowEmulator) -> None:
    client = pysnc_client(emulator)
    gr = client.GlideRecord("incident")
    gr.initialize()
    gr.short_description = "Keyboard missing keys"
    gr.priority = "2"
    sys_id = gr.insert()
    assert sys_id is not None
    stored = emulator.state.get("incident", str(sys_id))
    assert stored is not None
    assert (stored["short_description"], stored["priority"], stored["sys_mod_count"]) == (
        "Keyboard missing keys",
        "2",
        "0",
    )

    found = client.GlideRecord("incident")
    assert found.get(str(sys_id))
    assert found.get_value("short_description") == "Keyboard missing keys"
    found.priority = "1"
    assert found.update() == sys_id
    stored = emulator.state.get("incident", str(sys_id))
    assert stored is not None and (stored["priority"], stored["sys_mod_count"]) == ("1", "1")

    # pysnc sends only the changed fields on update (PATCH)
    patch = [e for e in emulator.state.journal() if e.method == "PATCH"][-1]
    assert patch.body is not None and b"priority" in patch.body and b"short_description" not in patch.body

    assert found.delete()
    assert emulator.state.get("incident", str(sys_id)) is None
    assert not client.GlideRecord("incident").get(str(sys_id))
    audit = emulator.state.records("sys_audit_delete")
    assert [a["documentkey"] for a in audit] == [str(sys_id)]


def test_pysnc_queries_match_independent_filters(emulator: ServiceNowEmulator) -> None:
    rows = seed(emulator)
    client = pysnc_client(emulator)

    gr = client.GlideRecord("incident")
    gr.add_active_query()
    condition = gr.add_query("priority", "<=", "2")
    condition.add_or_condition("urgency", "5")
    gr.order_by("number")
    gr.query()
    got = [r.get_value("number") for r in gr]
    expected = sorted(
        r["number"] for r in rows if r["active"] == "true" and (int(r["priority"]) <= 2 or r["urgency"] == "5")
    )
    assert got == expected and got
    assert gr.get_row_count() == len(expected)

    gr = client.GlideRecord("incident")
    gr.add_null_query("resolved_at")
    gr.add_query("short_description", "STARTSWITH", "VPN")
    gr.query()
    assert sorted(r.get_value("sys_id") for r in gr) == sorted(
        r["sys_id"] for r in rows if not r["resolved_at"] and r["short_description"].startswith("VPN")
    )

    gr = client.GlideRecord("incident")
    gr.add_encoded_query("category=network^NQcategory=database^priority=1^ORDERBYDESCnumber")
    gr.query()
    assert [r.get_value("number") for r in gr] == sorted(
        (
            r["number"]
            for r in rows
            if r["category"] == "network" or (r["category"] == "database" and r["priority"] == "1")
        ),
        reverse=True,
    )


def test_pysnc_pages_through_offsets_with_x_total_count(emulator: ServiceNowEmulator) -> None:
    rows = seed(emulator)
    client = pysnc_client(emulator)
    gr = client.GlideRecord("incident", batch_size=7)
    gr.order_by("number")
    gr.query()
    assert [r.get_value("number") for r in gr] == sorted(r["number"] for r in rows)
    lists = [e for e in emulator.state.journal() if e.method == "GET"]
    assert len(lists) == 6  # 40 records in pages of 7
    assert [e.query["sysparm_offset"] for e in lists] == ["0", "7", "14", "21", "28", "35"]


def test_pysnc_display_value_all_is_understood(emulator: ServiceNowEmulator) -> None:
    seed(emulator)
    client = pysnc_client(emulator)
    gr = client.GlideRecord("incident")
    gr.add_query("number", "INC0000001")
    gr.query()
    assert gr.next()
    assert gr.get_value("number") == "INC0000001"
    assert gr.get_display_value("number") == "INC0000001"
    assert emulator.state.journal()[-1].query["sysparm_display_value"] == "all"


# ----------------------------------------------------------------------------- pysnow


def raw_query(emu: ServiceNowEmulator, query: str) -> list[dict[str, Any]]:
    r = requests.get(
        f"{emu.url}/api/now/table/incident",
        auth=AUTH,
        params={"sysparm_query": query, "sysparm_exclude_reference_link": "true"},
    )
    assert r.status_code == 200
    result: list[dict[str, Any]] = r.json()["result"]
    return result


def test_pysnow_query_builder_queries(emulator: ServiceNowEmulator) -> None:
    rows = seed(emulator)
    qb = (
        pysnow.QueryBuilder()
        .field("active").equals("true")
        .AND().field("priority").less_than_or_equal(2)
        .OR().field("category").equals(["network", "database"])
        .NQ().field("short_description").contains("Printer")
        .AND().field("sys_updated_on").greater_than(datetime(2026, 3, 1, 0, 0, 1))
        .AND().field("number").order_descending()
    )  # fmt: skip
    got = [r["number"] for r in raw_query(emulator, str(qb))]
    expected = sorted(
        (
            r["number"]
            for r in rows
            if (r["active"] == "true" and (int(r["priority"]) <= 2 or r["category"] in ("network", "database")))
            or ("printer" in r["short_description"].lower() and r["sys_updated_on"] > "2026-03-01 00:00:01")
        ),
        reverse=True,
    )
    assert got == expected and got

    qb = (
        pysnow.QueryBuilder()
        .field("resolved_at").is_not_empty()
        .AND().field("number").not_equals(["INC0000001", "INC0000002"])
        .AND().field("short_description").not_contains("VPN")
        .AND().field("number").order_ascending()
    )  # fmt: skip
    expected = sorted(
        r["number"]
        for r in rows
        if r["resolved_at"]
        and r["number"] not in ("INC0000001", "INC0000002")
        and "vpn" not in r["short_description"].lower()
    )
    assert [r["number"] for r in raw_query(emulator, str(qb))] == expected

    qb = (
        pysnow.QueryBuilder()
        .field("sys_updated_on").between(datetime(2026, 3, 1, 0, 0, 1), datetime(2026, 3, 1, 0, 0, 2))
    )  # fmt: skip
    # pysnow writes date BETWEEN bounds as javascript:gs.dateGenerate("..."); the emulator evaluates that script.
    assert sorted(r["sys_id"] for r in raw_query(emulator, str(qb))) == sorted(
        r["sys_id"] for r in rows if "2026-03-01 00:00:01" <= r["sys_updated_on"] <= "2026-03-01 00:00:02"
    )
    qb = pysnow.QueryBuilder().field("priority").between(2, 3)
    assert sorted(r["sys_id"] for r in raw_query(emulator, str(qb))) == sorted(
        r["sys_id"] for r in rows if 2 <= int(r["priority"]) <= 3
    )


def test_pysnow_client_crud_and_streaming(emulator: ServiceNowEmulator) -> None:
    rows = seed(emulator)
    client = pysnow.Client(host=f"127.0.0.1:{emulator.port}", use_ssl=False, user="admin", password="admin")
    incidents = client.resource(api_path="/table/incident")

    query = pysnow.QueryBuilder().field("category").equals("hardware").AND().field("number").order_ascending()
    streamed = list(incidents.get(query=query, stream=True).all())
    assert [r["number"] for r in streamed] == sorted(r["number"] for r in rows if r["category"] == "hardware")
    # pysnow does not ask to exclude reference links: references come as {link, value}, like the real thing
    assert streamed[0]["caller_id"]["link"].startswith(f"{emulator.url}/api/now/table/sys_user/")

    created = incidents.create(payload={"number": "PYSNOW1", "short_description": "from pysnow"}).one()
    assert created["number"] == "PYSNOW1"
    updated = incidents.update(query={"number": "PYSNOW1"}, payload={"short_description": "changed"}).one()
    assert updated["short_description"] == "changed" and updated["sys_mod_count"] == "1"
    assert incidents.delete(query={"number": "PYSNOW1"})["status"] == "record deleted"
    assert emulator.state.get("incident", created["sys_id"]) is None
    with pytest.raises(pysnow.exceptions.NoResults):
        incidents.get(query={"number": "PYSNOW1"}).one()
