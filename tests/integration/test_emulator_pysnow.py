"""The emulator driven by pysnow (query builder, paging; ``use_ssl=False``), compared with what sncli sees.

Differences pysnow found, fixed in the emulator: a misspelled table answered
200 ``[]`` (the service: 400 "Invalid table"); a created record came back
without the table's other columns; an unordered list came back in
``sys_updated_on`` order; HEAD, OPTIONS and malformed requests dropped the
connection (the handler crashed) instead of answering 501 / 400; ``Request.count``
failed (no Aggregate API, ``/api/now/stats``, now served).
"""

from __future__ import annotations

import socket
import warnings

import pysnow
import pytest
import requests

from sncli.emulator.server import ServiceNowEmulator
from tests.integration.crosscheck_support import AUTH, RECORDS, seed, sncli_view

pytestmark = pytest.mark.integration


def client_for(emu: ServiceNowEmulator) -> pysnow.Client:
    return pysnow.Client(host=f"127.0.0.1:{emu.port}", use_ssl=False, user=AUTH[0], password=AUTH[1])


def plain(record: dict[str, object]) -> dict[str, str]:
    """A record as strings: references as their value (pysnow asks with reference links)."""
    return {k: str(v["value"]) if isinstance(v, dict) else str(v) for k, v in record.items()}


def test_pysnow_offset_pages_see_what_sncli_sees(emulator: ServiceNowEmulator) -> None:
    seed(emulator)
    incidents = client_for(emulator).resource(api_path="/table/incident")
    got: dict[str, dict[str, str]] = {}
    for offset in range(0, RECORDS, 64):  # no ORDERBY: the emulator's order must still be stable across pages
        for record in incidents.get(query={}, limit=64, offset=offset, stream=True).all():
            assert record["sys_id"] not in got
            got[record["sys_id"]] = plain(record)
    assert got == {sys_id: plain(r) for sys_id, r in sncli_view(emulator).items()}


def test_a_list_without_orderby_is_not_in_updated_order(emulator: ServiceNowEmulator) -> None:
    rows = seed(emulator)
    incidents = client_for(emulator).resource(api_path="/table/incident")
    order = [r["sys_id"] for r in incidents.get(query={}, fields=["sys_id"], stream=True).all()]
    assert emulator.state.journal()[-1].query["sysparm_query"] == ""
    # The service promises no order without ORDERBY; the emulator answers the primary key's (sys_id) order,
    # never the (sys_updated_on, sys_id) order a keyset client must ask for itself.
    assert order == sorted(r["sys_id"] for r in rows)
    assert order != [r["sys_id"] for r in rows]


def test_pysnow_query_builder_selects_what_sncli_selects(emulator: ServiceNowEmulator) -> None:
    seed(emulator)
    qb = (
        pysnow.QueryBuilder()
        .field("priority").less_than_or_equal(2)
        .AND().field("category").equals(["network", "database"])
        .OR().field("active").equals("false")
        .AND().field("number").order_descending()
    )  # fmt: skip
    incidents = client_for(emulator).resource(api_path="/table/incident")
    got = [r["number"] for r in incidents.get(query=qb, stream=True).all()]
    ours = sncli_view(emulator, str(qb).replace("^ORDERBYDESCnumber", ""))
    assert got == sorted((r["number"] for r in ours.values()), reverse=True) and got


def test_pysnow_legacy_paging_follows_link_next(emulator: ServiceNowEmulator) -> None:
    rows = seed(emulator)
    emulator.state.update_settings(default_limit=70)  # the page size a client gets without sysparm_limit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        request = client_for(emulator).query(table="incident", query={})
        got = [r["sys_id"] for r in request.get_multiple(fields=["sys_id"])]
    assert sorted(got) == sorted(r["sys_id"] for r in rows) and len(got) == RECORDS
    assert len([e for e in emulator.state.journal() if e.table == "incident"]) == 5  # 70 * 4 + 20


def test_pysnow_create_answers_every_column_and_a_misspelled_table_fails(emulator: ServiceNowEmulator) -> None:
    seed(emulator)
    client = client_for(emulator)
    created = client.resource(api_path="/table/incident").create(payload={"short_description": "from pysnow"}).one()
    assert set(created) == set(emulator.state.columns("incident"))
    assert created["number"] == "" and created["short_description"] == "from pysnow"
    typo = client.resource(api_path="/table/incidnet")
    for call in (lambda: typo.get(query={}).all(), lambda: typo.create(payload={"short_description": "x"}).one()):
        with pytest.raises(requests.HTTPError) as failure:
            call()
        assert failure.value.response.status_code == 400
        assert failure.value.response.json()["error"]["message"] == "Invalid table incidnet"
    assert "incidnet" not in emulator.state.tables()


def test_head_options_and_malformed_requests_are_answered(emulator: ServiceNowEmulator) -> None:
    url = f"{emulator.url}/api/now/table/incident"
    for method in ("HEAD", "OPTIONS", "PROPFIND"):
        assert requests.request(method, url, auth=AUTH, timeout=5).status_code == 501
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=5) as raw:
        raw.sendall(b"NONSENSE\r\n\r\n")
        assert raw.recv(64).startswith(b"HTTP/1.1 400")
    assert requests.get(url, auth=AUTH, timeout=5).status_code == 200  # the server is still serving


def test_legacy_count_goes_through_the_aggregate_api(emulator: ServiceNowEmulator) -> None:
    """pysnow's ``Request.count`` (the Aggregate API, ``/api/now/stats``) counts the query's records."""
    rows = seed(emulator)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        request = client_for(emulator).query(table="incident", query={"priority": "1"})
        counted = request.count
    assert counted == sum(1 for r in rows if r["priority"] == "1") > 0
