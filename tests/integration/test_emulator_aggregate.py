"""The emulator's Aggregate API (``GET /api/now/stats/{table}``) over HTTP, in ServiceNow's shapes."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from sncli.emulator.server import ServiceNowEmulator

pytestmark = pytest.mark.integration

AUTH = "Basic " + base64.b64encode(b"admin:admin").decode()


def _get(emu: ServiceNowEmulator, path: str, params: dict[str, str], auth: str | None = AUTH) -> tuple[int, Any]:
    url = f"{emu.url}{path}?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _seed(emu: ServiceNowEmulator) -> None:
    rows = [
        {"sys_id": f"{i:032x}", "priority": str(1 + i % 3), "sys_updated_on": f"2024-01-0{1 + i % 4} 10:00:00"}
        for i in range(20)
    ]
    emu.state.bulk_insert("incident", rows)


def test_count_with_a_query_is_a_string_and_matches_the_table_api(emulator: ServiceNowEmulator) -> None:
    _seed(emulator)
    query = "sys_updated_on>=2024-01-02 00:00:00^sys_updated_on<2024-01-04 00:00:00"
    status, body = _get(emulator, "/api/now/stats/incident", {"sysparm_count": "true", "sysparm_query": query})
    assert status == 200
    assert body == {"result": {"stats": {"count": "10"}}}
    status, whole = _get(emulator, "/api/now/v1/stats/incident", {"sysparm_count": "true"})
    assert (status, whole) == (200, {"result": {"stats": {"count": "20"}}})
    entry = emulator.state.journal()[-1]
    assert (entry.table, entry.status, entry.sys_id) == ("incident", 200, None)


def test_group_by_counts_per_value(emulator: ServiceNowEmulator) -> None:
    _seed(emulator)
    status, body = _get(emulator, "/api/now/stats/incident",
                        {"sysparm_count": "true", "sysparm_group_by": "priority", "sysparm_query": "priority!=3"})
    assert status == 200
    assert body["result"] == [
        {"stats": {"count": "7"}, "groupby_fields": [{"field": "priority", "value": "1"}]},
        {"stats": {"count": "7"}, "groupby_fields": [{"field": "priority", "value": "2"}]},
    ]


def test_without_sysparm_count_nothing_is_computed(emulator: ServiceNowEmulator) -> None:
    _seed(emulator)
    assert _get(emulator, "/api/now/stats/incident", {}) == (200, {"result": {"stats": {}}})


def test_a_row_acl_hiding_any_record_answers_403_and_auth_is_required(emulator: ServiceNowEmulator) -> None:
    _seed(emulator)
    assert _get(emulator, "/api/now/stats/incident", {"sysparm_count": "true"}, auth=None)[0] == 401
    emulator.state.update_settings(hidden_rows={"incident": "priority=2"})
    status, body = _get(emulator, "/api/now/stats/incident",
                        {"sysparm_count": "true", "sysparm_query": "priority=1"})
    assert status == 403 and body["status"] == "failure"
    emulator.state.update_settings(hidden_rows={}, denied_tables={"incident"})
    assert _get(emulator, "/api/now/stats/incident", {"sysparm_count": "true"})[0] == 403
