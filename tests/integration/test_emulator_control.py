"""The emulator's HTTP control API (/__emulator/), as subprocesses (demo, benchmarks, e2e) drive it."""

from __future__ import annotations

import orjson
import pytest
import requests

from sncli.emulator.server import ServiceNowEmulator

pytestmark = pytest.mark.integration

AUTH = ("admin", "admin")


def ctl(emu: ServiceNowEmulator, verb: str, route: str, body: object = None, **params: str) -> requests.Response:
    return requests.request(verb, f"{emu.url}/__emulator/{route}", json=body, params=params or None)


def test_health_and_unknown_routes(emulator: ServiceNowEmulator) -> None:
    assert ctl(emulator, "GET", "health").json() == {"result": {"ok": True}}
    assert ctl(emulator, "GET", "nope").status_code == 404
    bad = requests.post(f"{emulator.url}/__emulator/records", data=b"{oops")
    assert bad.status_code == 400


def test_generate_records_and_dump(emulator: ServiceNowEmulator) -> None:
    r = ctl(
        emulator,
        "POST",
        "generate",
        {
            "table": "incident",
            "count": 30,
            "at": "2026-01-01 00:00:00",
            "spread_seconds": 3,
            "record_bytes": 512,
            "field_count": 20,
            "seed": 3,
        },
    )
    assert r.status_code == 200 and r.json()["result"]["count"] == 30
    ids = r.json()["result"]["sys_ids"]
    r = ctl(
        emulator,
        "POST",
        "records",
        {
            "table": "incident",
            "at": "2026-01-02 00:00:00",
            "records": [{"number": "X1"}, {"number": "X2", "sys_id": "e" * 32}],
        },
    )
    assert r.status_code == 200
    assert [x["sys_updated_on"] for x in r.json()["result"]] == ["2026-01-02 00:00:00"] * 2
    dump = ctl(emulator, "GET", "tables/incident").json()["result"]
    assert len(dump) == 32
    assert [x["sys_id"] for x in dump[:30]] == sorted(
        ids, key=lambda s: (next(x["sys_updated_on"] for x in dump if x["sys_id"] == s), s)
    )
    assert len(dump[0]) == 20
    assert ctl(emulator, "GET", "tables").json()["result"]["incident"] == 32
    assert ctl(emulator, "GET", "tables/nosuch").status_code == 404
    assert ctl(emulator, "POST", "records", {"table": "incident", "records": [{"sys_id": "e" * 32}]}).status_code == 400
    assert ctl(emulator, "POST", "generate", {"count": 1}).status_code == 400


def test_update_delete_and_columns(emulator: ServiceNowEmulator) -> None:
    sid = emulator.state.insert("incident", {"state": "1"})["sys_id"]
    r = ctl(
        emulator,
        "POST",
        "update",
        {"table": "incident", "sys_id": sid, "fields": {"state": "2"}, "at": "2027-01-01 00:00:00"},
    )
    assert r.json()["result"]["sys_updated_on"] == "2027-01-01 00:00:00"
    assert ctl(emulator, "POST", "update", {"table": "incident", "sys_id": "0" * 32, "fields": {}}).status_code == 404
    assert ctl(emulator, "POST", "delete", {"table": "incident", "sys_id": sid}).status_code == 200
    assert ctl(emulator, "POST", "delete", {"table": "incident", "sys_id": sid}).status_code == 404
    assert emulator.state.records("sys_audit_delete")[0]["documentkey"] == sid
    r = ctl(emulator, "POST", "columns", {"table": "cmdb_ci", "columns": {"u_weight": "decimal"}})
    assert r.json()["result"]["u_weight"] == "decimal"


def test_clock_control(emulator: ServiceNowEmulator) -> None:
    r = ctl(emulator, "POST", "clock", {"set": "2026-05-05 05:05:05", "freeze": True})
    assert r.json()["result"] == {"now": "2026-05-05 05:05:05", "frozen": True}
    assert ctl(emulator, "POST", "clock", {"advance": 60}).json()["result"]["now"] == "2026-05-05 05:06:05"
    assert ctl(emulator, "GET", "clock").json()["result"]["now"] == "2026-05-05 05:06:05"
    emulator.state.insert("incident", {})
    assert emulator.state.records("incident")[0]["sys_created_on"] == "2026-05-05 05:06:05"
    assert ctl(emulator, "POST", "clock", {"unfreeze": True}).json()["result"]["frozen"] is False
    assert ctl(emulator, "POST", "clock", {"warp": 1}).status_code == 400


def test_faults_control(emulator: ServiceNowEmulator) -> None:
    r = ctl(emulator, "POST", "faults", {"kind": "status", "status": 503, "times": 1})
    assert r.status_code == 200 and r.json()["result"][0]["status"] == 503
    r = ctl(emulator, "POST", "faults", {"faults": [{"kind": "latency", "latency_ms": 1}]})
    assert len(r.json()["result"]) == 2
    assert ctl(emulator, "POST", "faults", {"kind": "boom"}).status_code == 400
    assert requests.get(f"{emulator.url}/api/now/table/incident", auth=AUTH).status_code == 503
    listed = ctl(emulator, "GET", "faults").json()["result"]
    assert listed[0]["fired"] == 1
    assert ctl(emulator, "DELETE", "faults").json()["result"] == []
    assert requests.get(f"{emulator.url}/api/now/table/incident", auth=AUTH).status_code == 200


def test_journal_control(emulator: ServiceNowEmulator) -> None:
    requests.get(f"{emulator.url}/api/now/table/incident", auth=AUTH, params={"sysparm_limit": "1"})
    requests.post(f"{emulator.url}/api/now/table/problem", auth=AUTH, json={"a": "1"})
    requests.post(
        f"{emulator.url}/oauth_token.do",
        data={"grant_type": "client_credentials", "client_id": "sncli", "client_secret": "sncli-secret"},
    )
    result = ctl(emulator, "GET", "journal").json()["result"]
    assert result["token_issues"] == 1
    entries = result["entries"]
    assert [(e["method"], e["path"], e["status"]) for e in entries] == [
        ("GET", "/api/now/table/incident", 200),
        ("POST", "/api/now/table/problem", 201),
        ("POST", "/oauth_token.do", 200),
    ]
    assert entries[0]["query"] == {"sysparm_limit": "1"} and orjson.loads(entries[1]["body"]) == {"a": "1"}
    assert entries[2]["body"] is None and entries[2]["grant_type"] == "client_credentials"  # no secrets kept
    assert len(ctl(emulator, "GET", "journal", table="problem").json()["result"]["entries"]) == 1
    assert len(ctl(emulator, "GET", "journal", method="get").json()["result"]["entries"]) == 1
    assert len(ctl(emulator, "GET", "journal", path_prefix="/oauth").json()["result"]["entries"]) == 1
    assert ctl(emulator, "DELETE", "journal").status_code == 200
    assert ctl(emulator, "GET", "journal").json()["result"]["entries"] == []


def test_settings_control_and_expire_tokens(emulator: ServiceNowEmulator) -> None:
    r = ctl(
        emulator,
        "POST",
        "settings",
        {"token_ttl_seconds": 5, "denied_tables": ["sys_dictionary"], "user_time_zone": "Asia/Tokyo"},
    )
    settings = r.json()["result"]
    assert settings["token_ttl_seconds"] == 5 and settings["denied_tables"] == ["sys_dictionary"]
    assert ctl(emulator, "POST", "settings", {"bogus": 1}).status_code == 400
    assert requests.get(f"{emulator.url}/api/now/table/sys_dictionary", auth=AUTH).status_code == 403
    assert emulator.state.records("sys_user")[0]["time_zone"] == "Asia/Tokyo"
    token = requests.post(
        f"{emulator.url}/oauth_token.do",
        data={
            "grant_type": "password",
            "client_id": "sncli",
            "client_secret": "sncli-secret",
            "username": "admin",
            "password": "admin",
        },
    ).json()
    assert token["expires_in"] == 5
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    assert requests.get(f"{emulator.url}/api/now/table/incident", headers=bearer).status_code == 200
    assert ctl(emulator, "POST", "expire_tokens").status_code == 200
    assert requests.get(f"{emulator.url}/api/now/table/incident", headers=bearer).status_code == 401


def test_reset_control(emulator: ServiceNowEmulator) -> None:
    emulator.state.generate("incident", 5)
    ctl(emulator, "POST", "faults", {"kind": "status", "times": None})
    ctl(emulator, "POST", "clock", {"set": "2030-01-01 00:00:00", "freeze": True})
    assert ctl(emulator, "POST", "reset").status_code == 200
    assert requests.get(f"{emulator.url}/api/now/table/incident", auth=AUTH).json()["result"] == []
    assert ctl(emulator, "GET", "clock").json()["result"]["frozen"] is False
    assert ctl(emulator, "GET", "faults").json()["result"] == []
