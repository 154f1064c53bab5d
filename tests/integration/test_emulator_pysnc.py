"""The emulator driven by pysnc (ServiceNow's own Python client), compared with what sncli sees.

pysnc refuses ``http://`` instance URLs (``pysnc.utils.get_instance``). The
minimal bypass: let ``pysnc.client.get_instance`` accept the emulator's URL (the
only check it makes); everything else, session, retry adapter and every request
target, then uses that URL as pysnc would use an https one.

Differences pysnc found, fixed in the emulator: a misspelled table answered 200
``[]`` and a POST created it (the service: 400 "Invalid table"); a record
created with a few fields came back without the table's other columns; a 429
lacked the ``X-RateLimit-*`` headers (pysnc itself honours ``Retry-After``).
``update_multiple`` runs through the emulator's Batch API. Pinned as a limit of
the emulator (test below): ``display_value`` of references (the service shows
the referenced record's display value).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pysnc.client
import pytest
import requests
from pysnc import ServiceNowClient
from pysnc.exceptions import InsertException, RequestException

from sncli.emulator.faults import Fault
from sncli.emulator.server import ServiceNowEmulator
from tests.integration.crosscheck_support import AUTH, RECORDS, seed, sncli_client, sncli_view

pytestmark = pytest.mark.integration


@pytest.fixture
def client(emulator: ServiceNowEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServiceNowClient]:
    monkeypatch.setattr(pysnc.client, "get_instance", lambda instance: instance.rstrip("/"))
    yield ServiceNowClient(emulator.url, auth=AUTH)


def values(gr: Any, fields: list[str]) -> dict[str, str]:
    return {f: gr.get_value(f) for f in fields}


def test_pysnc_pages_without_orderby_and_sees_what_sncli_sees(
    emulator: ServiceNowEmulator, client: ServiceNowClient
) -> None:
    rows = seed(emulator)
    fields = sorted(rows[0])
    gr = client.GlideRecord("incident", batch_size=70)  # offset pages, no ORDERBY: 5 GETs
    gr.query()
    assert gr.get_row_count() == RECORDS
    got = {r.get_value("sys_id"): values(r, fields) for r in gr}
    assert len(got) == RECORDS  # no record twice, none skipped: the unordered pages are stable
    ours = sncli_view(emulator)
    assert got == {sys_id: {f: str(record[f]) for f in fields} for sys_id, record in ours.items()}
    lists = [e for e in emulator.state.journal() if e.method == "GET" and e.query.get("sysparm_offset") is not None]
    assert [e.query["sysparm_offset"] for e in lists][:5] == ["0", "70", "140", "210", "280"]


def test_pysnc_orders_by_sys_id_itself(emulator: ServiceNowEmulator, client: ServiceNowClient) -> None:
    rows = seed(emulator)
    gr = client.GlideRecord("incident", batch_size=RECORDS)
    gr.fields = "sys_id"
    gr.query()
    # pysnc adds ORDERBYsys_id to every query (its issue #96: offset pages need an order), so
    # pysnc cannot see the emulator's order without ORDERBY; test_emulator_pysnow checks that one.
    assert emulator.state.journal()[-1].query["sysparm_query"] == "ORDERBYsys_id"
    assert [r.get_value("sys_id") for r in gr] == sorted(r["sys_id"] for r in rows)


def test_pysnc_crud_agrees_with_sncli(emulator: ServiceNowEmulator, client: ServiceNowClient) -> None:
    seed(emulator)
    gr = client.GlideRecord("incident")
    gr.initialize()
    gr.short_description = "Keyboard missing keys"
    sys_id = str(gr.insert())
    # The service stores and answers every column of the table, empty when not given.
    columns = set(emulator.state.columns("incident"))
    assert set(gr.serialize()) == columns
    assert gr.get_value("priority") == "" and gr.get_value("short_description") == "Keyboard missing keys"
    with sncli_client(emulator) as ours:
        seen = ours.get("incident", sys_id)
        assert seen is not None and set(seen) == columns and seen["category"] == ""
        found = client.GlideRecord("incident")
        assert found.get(sys_id)
        found.priority = "1"
        assert found.update() == sys_id
        seen = ours.get("incident", sys_id)
        assert seen is not None and (seen["priority"], seen["sys_mod_count"]) == ("1", "1")
        assert found.delete()
        assert ours.get("incident", sys_id) is None


def test_a_misspelled_table_is_invalid_and_never_created(
    emulator: ServiceNowEmulator, client: ServiceNowClient
) -> None:
    seed(emulator)
    gr = client.GlideRecord("incidnet")
    with pytest.raises(RequestException, match="Invalid table incidnet"):
        gr.query()
    gr.initialize()
    gr.short_description = "typo"
    with pytest.raises((InsertException, RequestException), match="Invalid table incidnet"):
        gr.insert()
    assert "incidnet" not in emulator.state.tables()
    # An out-of-box table nobody wrote to yet exists, empty, as on a new instance.
    problems = client.GlideRecord("problem")
    problems.query()
    assert problems.get_row_count() == 0


def test_row_acls_total_counts_hidden_rows_and_both_clients_see_the_same_rows(
    emulator: ServiceNowEmulator, client: ServiceNowClient
) -> None:
    rows = seed(emulator)
    emulator.state.update_settings(hidden_rows={"incident": "category=network"})
    visible = {r["sys_id"] for r in rows if r["category"] != "network"}
    gr = client.GlideRecord("incident", batch_size=RECORDS)  # one page: pysnc's offsets assume full pages
    gr.query()
    assert gr.get_row_count() == RECORDS  # X-Total-Count is counted before the ACLs, as on the service
    assert {r.get_value("sys_id") for r in gr} == visible
    assert set(sncli_view(emulator)) == visible  # sncli follows Link next through short pages


def test_429_tells_retry_after_and_the_rate_limit_rule(emulator: ServiceNowEmulator, client: ServiceNowClient) -> None:
    seed(emulator)
    emulator.state.faults.add(Fault(kind="status", status=429, retry_after=1, table="incident", times=1))
    gr = client.GlideRecord("incident")
    gr.query()  # pysnc's retry honours Retry-After and asks again
    assert gr.get_row_count() == RECORDS
    assert [e.status for e in emulator.state.journal() if e.table == "incident"] == [429, 200]
    emulator.state.faults.add(Fault(kind="status", status=429, retry_after=7, table="incident", times=1))
    r = requests.get(f"{emulator.url}/api/now/table/incident", auth=AUTH, params={"sysparm_limit": "1"})
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    assert r.headers["Date"].endswith("GMT")
    assert int(r.headers["X-RateLimit-Limit"]) > 0 and len(r.headers["X-RateLimit-Rule"]) == 32
    assert int(r.headers["X-RateLimit-Reset"]) == 1_772_542_800  # UNIX time of 13:00, the frozen clock's next hour


# ----------------------------------------------------------------------------- documented limits


def test_update_multiple_goes_through_the_batch_api(emulator: ServiceNowEmulator, client: ServiceNowClient) -> None:
    """pysnc's update_multiple (the Batch API, ``/api/now/v1/batch``) updates exactly the records it changed."""
    rows = seed(emulator)
    gr = client.GlideRecord("incident")
    gr.add_query("priority", "1")
    gr.query()
    changed = []
    for record in gr:
        record.urgency = "1"
        changed.append(record.get_value("sys_id"))
    assert changed
    assert gr.update_multiple() is True
    after = {r["sys_id"]: r for r in emulator.state.records("incident")}
    assert all(after[s]["urgency"] == "1" for s in changed)
    untouched = [r for r in rows if r["priority"] != "1"]
    assert all(after[r["sys_id"]]["urgency"] == r["urgency"] for r in untouched)
    batches = [e for e in emulator.state.journal() if e.path.endswith("/batch")]
    assert batches, "update_multiple did not use the Batch API"


def test_limit_display_value_of_a_reference_is_its_sys_id(
    emulator: ServiceNowEmulator, client: ServiceNowClient
) -> None:
    """LIMIT: the service shows a reference's display value (the caller's name); the emulator its sys_id."""
    rows = seed(emulator)
    gr = client.GlideRecord("incident")
    assert gr.get(rows[0]["sys_id"])
    assert gr.get_value("caller_id") == rows[0]["caller_id"]
    assert gr.get_display_value("caller_id") == rows[0]["caller_id"]
