"""The ServiceNow emulator over real HTTP on 127.0.0.1: Table API, auth, headers, journal, sys_audit_delete."""

from __future__ import annotations

import http.client
import time
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from sncli.emulator.server import ServiceNowEmulator

pytestmark = pytest.mark.integration

AUTH = ("admin", "admin")


def api(emu: ServiceNowEmulator, table: str, sys_id: str | None = None, *, v2: bool = False) -> str:
    base = f"{emu.url}/api/now/{'v2/' if v2 else ''}table/{table}"
    return f"{base}/{sys_id}" if sys_id else base


@pytest.fixture
def session() -> requests.Session:
    s = requests.Session()
    s.auth = AUTH
    return s


# ----------------------------------------------------------------------------- CRUD


@pytest.mark.parametrize("v2", [False, True])
def test_crud_round_trip(emulator: ServiceNowEmulator, session: requests.Session, v2: bool) -> None:
    emulator.state.clock.freeze("2026-04-01 08:00:00")
    r = session.post(api(emulator, "incident", v2=v2), json={"short_description": "disk full", "priority": 2})
    assert r.status_code == 201
    created = r.json()["result"]
    sid = created["sys_id"]
    assert r.headers["Location"].endswith(f"/api/now/table/incident/{sid}")
    assert created["priority"] == "2" and created["sys_mod_count"] == "0"
    assert created["sys_created_on"] == "2026-04-01 08:00:00"

    r = session.get(api(emulator, "incident", sid, v2=v2))
    assert r.status_code == 200 and r.json()["result"] == created

    emulator.state.clock.advance(3)
    r = session.patch(api(emulator, "incident", sid, v2=v2), json={"priority": "1"})
    assert r.status_code == 200
    assert (r.json()["result"]["priority"], r.json()["result"]["sys_mod_count"]) == ("1", "1")
    assert r.json()["result"]["sys_updated_on"] == "2026-04-01 08:00:03"

    r = session.put(api(emulator, "incident", sid, v2=v2), json={"state": "6"})
    assert r.status_code == 200
    assert r.json()["result"]["state"] == "6" and r.json()["result"]["priority"] == "1"  # PUT updates given fields

    r = session.delete(api(emulator, "incident", sid, v2=v2))
    assert r.status_code == 204 and r.content == b"" and r.headers["Content-Length"] == "0"
    assert session.get(api(emulator, "incident", sid, v2=v2)).status_code == 404


def test_post_with_client_sys_id_and_duplicate(emulator: ServiceNowEmulator, session: requests.Session) -> None:
    sid = "0123456789abcdef0123456789abcdef"
    r = session.post(api(emulator, "incident"), json={"sys_id": sid, "number": "INC9"})
    assert r.status_code == 201 and r.json()["result"]["sys_id"] == sid
    r = session.post(api(emulator, "incident"), json={"sys_id": sid, "number": "INC9"})
    assert r.status_code == 409
    assert r.json()["status"] == "failure" and sid in r.json()["error"]["detail"]


def test_error_shapes(emulator: ServiceNowEmulator, session: requests.Session) -> None:
    missing = session.get(api(emulator, "incident", "f" * 32))
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {"message": "No Record found", "detail": "Record doesn't exist or ACL restricts the record retrieval"},
        "status": "failure",
    }
    assert session.patch(api(emulator, "incident", "f" * 32), json={"a": "b"}).status_code == 404
    assert session.delete(api(emulator, "incident", "f" * 32)).status_code == 404
    bad = session.post(api(emulator, "incident"), data=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["status"] == "failure"
    assert session.post(api(emulator, "incident"), json=[1, 2]).status_code == 400
    assert session.delete(api(emulator, "incident")).status_code == 405
    assert session.post(api(emulator, "incident", "f" * 32), json={}).status_code == 405
    assert session.get(f"{emulator.url}/api/now/nothing/here").status_code == 400
    assert session.get(api(emulator, "incident"), params={"sysparm_limit": "ten"}).status_code == 400


def test_unknown_table_is_invalid_unless_lenient(emulator: ServiceNowEmulator, session: requests.Session) -> None:
    r = session.get(api(emulator, "u_never_seen"))
    assert r.status_code == 400 and r.json()["error"]["message"] == "Invalid table u_never_seen"
    assert session.post(api(emulator, "u_never_seen"), json={"a": "b"}).status_code == 400
    emulator.state.update_settings(strict_tables=False)
    r = session.get(api(emulator, "u_never_seen"))
    assert r.status_code == 200 and r.json() == {"result": []} and r.headers["X-Total-Count"] == "0"


# ----------------------------------------------------------------------------- auth


def test_basic_auth_required(emulator: ServiceNowEmulator) -> None:
    for auth in (None, ("admin", "wrong"), ("someone", "admin")):
        r = requests.get(api(emulator, "incident"), auth=auth)
        assert r.status_code == 401
        assert r.json()["error"]["message"] == "User Not Authenticated"
    r = requests.get(api(emulator, "incident"), headers={"Authorization": "Negotiate xyz"})
    assert r.status_code == 401
    assert requests.get(api(emulator, "incident"), auth=AUTH).status_code == 200


def oauth(emu: ServiceNowEmulator, **form: str) -> requests.Response:
    data = {"client_id": "sncli", "client_secret": "sncli-secret", **form}
    return requests.post(f"{emu.url}/oauth_token.do", data=data)


def test_oauth_password_grant_refresh_and_expiry(emulator: ServiceNowEmulator) -> None:
    emulator.state.update_settings(token_ttl_seconds=1)
    r = oauth(emulator, grant_type="password", username="admin", password="admin")
    assert r.status_code == 200
    token = r.json()
    assert token["token_type"] == "Bearer" and token["expires_in"] == 1
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    created = requests.post(api(emulator, "incident"), json={"a": "1"}, headers=bearer)
    assert created.status_code == 201 and created.json()["result"]["sys_created_by"] == "admin"
    time.sleep(1.1)
    assert requests.get(api(emulator, "incident"), headers=bearer).status_code == 401
    r = oauth(emulator, grant_type="refresh_token", refresh_token=token["refresh_token"])
    assert r.status_code == 200
    fresh = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert requests.get(api(emulator, "incident"), headers=fresh).status_code == 200
    assert emulator.state.token_issue_count() == 2
    grants = [e.grant_type for e in emulator.state.journal() if e.path == "/oauth_token.do"]
    assert grants == ["password", "refresh_token"]


def test_oauth_failures_and_unknown_bearer(emulator: ServiceNowEmulator) -> None:
    assert oauth(emulator, grant_type="password", username="admin", password="nope").status_code == 401
    assert oauth(emulator, grant_type="client_credentials", client_secret="nope").status_code == 401
    assert oauth(emulator, grant_type="device_code").status_code == 400
    assert requests.get(f"{emulator.url}/oauth_token.do").status_code == 405
    r = requests.get(api(emulator, "incident"), headers={"Authorization": "Bearer made-up"})
    assert r.status_code == 401
    ok = oauth(emulator, grant_type="client_credentials")
    assert ok.status_code == 200
    emulator.state.tokens.expire_all()
    bearer = {"Authorization": f"Bearer {ok.json()['access_token']}"}
    assert requests.get(api(emulator, "incident"), headers=bearer).status_code == 401
    assert emulator.state.token_issue_count() == 1


def test_denied_tables_answer_403_and_dictionary_can_be_hidden(
    emulator: ServiceNowEmulator, session: requests.Session
) -> None:
    emulator.state.generate("incident", 3)
    r = session.get(api(emulator, "sys_dictionary"), params={"sysparm_query": "name=incident"})
    assert r.status_code == 200 and len(r.json()["result"]) == 30
    emulator.state.update_settings(denied_tables=["sys_dictionary"])
    r = session.get(api(emulator, "sys_dictionary"), params={"sysparm_query": "name=incident"})
    assert r.status_code == 403 and r.json()["status"] == "failure"
    assert session.get(api(emulator, "incident")).status_code == 200


def test_integration_user_time_zone_is_readable(emulator: ServiceNowEmulator, session: requests.Session) -> None:
    params = {"sysparm_query": "user_name=admin", "sysparm_fields": "user_name,time_zone"}
    assert session.get(api(emulator, "sys_user"), params=params).json()["result"] == [
        {"user_name": "admin", "time_zone": "UTC"}
    ]
    emulator.state.update_settings(user_time_zone="America/New_York")
    assert session.get(api(emulator, "sys_user"), params=params).json()["result"][0]["time_zone"] == "America/New_York"


# ----------------------------------------------------------------------------- listing and headers


def test_list_paging_headers(emulator: ServiceNowEmulator, session: requests.Session) -> None:
    emulator.state.generate("incident", 25, spread_seconds=5)
    r = session.get(
        api(emulator, "incident"),
        params={"sysparm_limit": "10", "sysparm_offset": "10", "sysparm_query": "ORDERBYnumber"},
    )
    assert r.status_code == 200
    assert r.headers["X-Total-Count"] == "25"
    assert [x["number"] for x in r.json()["result"]] == [f"INC{n:07d}" for n in range(11, 21)]
    links = {}
    for part in r.headers["Link"].split(","):
        url, rel = part.split(";")
        links[rel.split('"')[1]] = parse_qs(urlsplit(url.strip("<>")).query)
    assert {k: v["sysparm_offset"][0] for k, v in links.items()} == {
        "first": "0",
        "prev": "0",
        "next": "20",
        "last": "20",
    }
    assert links["next"]["sysparm_query"] == ["ORDERBYnumber"]
    # following "next" through the Link header yields the rest
    nxt = r.headers["Link"].split(",")[2].split(";")[0].strip("<>")
    assert [x["number"] for x in session.get(nxt).json()["result"]] == [f"INC{n:07d}" for n in range(21, 26)]

    r = session.get(api(emulator, "incident"), params={"sysparm_no_count": "true", "sysparm_limit": "5"})
    assert "X-Total-Count" not in r.headers and len(r.json()["result"]) == 5
    r = session.get(api(emulator, "incident"), params={"sysparm_suppress_pagination_header": "true"})
    assert "Link" not in r.headers and len(r.json()["result"]) == 25  # default limit 10000


def test_fields_display_value_and_reference_links(emulator: ServiceNowEmulator, session: requests.Session) -> None:
    emulator.state.generate("incident", 1)
    r = session.get(api(emulator, "incident"), params={"sysparm_fields": "number,caller_id,nosuch"})
    row = r.json()["result"][0]
    assert set(row) == {"number", "caller_id"}
    assert row["caller_id"]["link"].startswith(f"{emulator.url}/api/now/table/sys_user/")
    r = session.get(api(emulator, "incident"), params={"sysparm_exclude_reference_link": "true"})
    assert isinstance(r.json()["result"][0]["caller_id"], str)
    r = session.get(
        api(emulator, "incident"),
        params={"sysparm_display_value": "all", "sysparm_fields": "number", "sysparm_exclude_reference_link": "true"},
    )
    assert r.json()["result"][0]["number"] == {"display_value": "INC0000001", "value": "INC0000001"}


def test_date_header_follows_the_emulator_clock_on_every_response(
    emulator: ServiceNowEmulator, session: requests.Session
) -> None:
    emulator.state.clock.freeze("2031-05-06 07:08:09")
    responses = [
        session.get(api(emulator, "incident")),
        session.get(api(emulator, "incident", "f" * 32)),
        requests.get(api(emulator, "incident")),
        oauth(emulator, grant_type="password", username="admin", password="admin"),
        requests.get(f"{emulator.url}/__emulator/health"),
    ]
    for r in responses:
        assert r.headers["Date"] == "Tue, 06 May 2031 07:08:09 GMT"
        assert parsedate_to_datetime(r.headers["Date"]).year == 2031
        assert "Content-Length" in r.headers


def test_keep_alive_serves_many_requests_on_one_connection(emulator: ServiceNowEmulator) -> None:
    emulator.state.generate("incident", 3)
    conn = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=5)
    headers = {"Authorization": "Basic YWRtaW46YWRtaW4="}
    try:
        for _ in range(5):
            conn.request("GET", "/api/now/table/incident?sysparm_limit=2", headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200 and int(resp.headers["Content-Length"]) == len(body)
            assert resp.headers.get("Connection") != "close"
        first_sock = conn.sock
        conn.request("DELETE", "/api/now/table/incident/" + "f" * 32, headers=headers)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 404 and conn.sock is first_sock
    finally:
        conn.close()


def test_keyset_walk_over_http_with_records_sharing_seconds(
    emulator: ServiceNowEmulator, session: requests.Session
) -> None:
    emulator.state.generate("incident", 2500, at="2026-01-01 00:00:00", spread_seconds=3)
    emulator.state.generate("incident", 10, at="2026-01-01 00:00:05")  # beyond HI
    hi = "2026-01-01 00:00:02"
    ts, sid, seen = "1970-01-01 00:00:00", "", []
    while True:
        query = (
            f"active=true^sys_updated_on={ts}^sys_id>{sid}^NQactive=true^sys_updated_on>{ts}"
            f"^sys_updated_on<={hi}^ORDERBYsys_updated_on^ORDERBYsys_id"
        )
        r = session.get(
            api(emulator, "incident"),
            params={
                "sysparm_query": query,
                "sysparm_limit": "300",
                "sysparm_no_count": "true",
                "sysparm_exclude_reference_link": "true",
            },
        )
        page = r.json()["result"]
        if not page:
            break
        seen.extend((x["sys_updated_on"], x["sys_id"]) for x in page)
        ts, sid = seen[-1]
    expected = sorted(
        (x["sys_updated_on"], x["sys_id"])
        for x in emulator.state.records("incident")
        if x["active"] == "true" and x["sys_updated_on"] <= hi
    )
    assert seen == expected and len(expected) > 1000


# ----------------------------------------------------------------------------- journal and audit


def test_journal_records_every_api_request(emulator: ServiceNowEmulator, session: requests.Session) -> None:
    session.get(api(emulator, "incident"), params={"sysparm_query": "active=true", "sysparm_limit": "5"})
    body = b'{"short_description":"x"}'
    created = session.post(api(emulator, "incident"), data=body, headers={"Content-Type": "application/json"})
    requests.get(api(emulator, "incident"))
    requests.get(f"{emulator.url}/__emulator/health")  # control calls are not journaled
    entries = emulator.state.journal()
    assert [(e.method, e.status, e.auth) for e in entries] == [
        ("GET", 200, "basic"),
        ("POST", 201, "basic"),
        ("GET", 401, "none"),
    ]
    assert entries[0].query == {"sysparm_query": "active=true", "sysparm_limit": "5"}
    assert entries[0].body is None and entries[1].body == body
    assert entries[1].table == "incident" and entries[0].path == "/api/now/table/incident"
    assert entries[1].user == "admin" and entries[2].user is None
    assert entries[0].at <= entries[1].at
    emulator.state.clear_journal()
    session.delete(api(emulator, "incident", created.json()["result"]["sys_id"]))
    assert [(e.method, e.sys_id) for e in emulator.state.journal()] == [("DELETE", created.json()["result"]["sys_id"])]


def test_delete_over_http_is_audited(emulator: ServiceNowEmulator, session: requests.Session) -> None:
    emulator.state.clock.freeze("2026-09-09 09:09:09")
    ids = emulator.state.generate("incident", 3)
    for sid in ids[:2]:
        assert session.delete(api(emulator, "incident", sid)).status_code == 204
    r = session.get(api(emulator, "sys_audit_delete"), params={"sysparm_query": "tablename=incident^ORDERBYsys_id"})
    rows = r.json()["result"]
    assert sorted(x["documentkey"] for x in rows) == sorted(ids[:2])
    assert all(x["sys_created_on"] == "2026-09-09 09:09:09" for x in rows)
    assert r.headers["X-Total-Count"] == "2"


def test_stop_cuts_open_keep_alive_connections() -> None:
    emu = ServiceNowEmulator().start()
    url = api(emu, "incident")
    s = requests.Session()
    s.auth = AUTH
    assert s.get(url).status_code == 200
    emu.stop()
    with pytest.raises(requests.ConnectionError):
        s.get(url, timeout=2)
    assert emu.url == url.split("/api/")[0]  # the address stays known after stop


def test_chunked_request_body(emulator: ServiceNowEmulator, session: requests.Session) -> None:
    chunks = iter([b'{"short_description":', b'"sent in chunks"}'])
    r = session.post(api(emulator, "incident"), data=chunks, headers={"Content-Type": "application/json"})
    assert r.status_code == 201 and r.json()["result"]["short_description"] == "sent in chunks"
    assert emulator.state.journal()[-1].body == b'{"short_description":"sent in chunks"}'


def test_concurrent_writers_and_readers(emulator: ServiceNowEmulator) -> None:
    from concurrent.futures import ThreadPoolExecutor

    emulator.state.clock.freeze("2026-01-01 00:00:00")  # every write lands in the same second

    def writer(n: int) -> list[int]:
        s = requests.Session()
        s.auth = AUTH
        codes = []
        for i in range(25):
            codes.append(s.post(api(emulator, "incident"), json={"number": f"W{n}-{i}"}).status_code)
            codes.append(s.get(api(emulator, "incident"), params={"sysparm_limit": "50"}).status_code)
        return codes

    with ThreadPoolExecutor(8) as pool:
        codes = [c for result in pool.map(writer, range(8)) for c in result]
    assert set(codes) == {200, 201}
    rows = emulator.state.records("incident")
    assert len(rows) == 200 and len({r["sys_id"] for r in rows}) == 200
    assert {r["number"] for r in rows} == {f"W{n}-{i}" for n in range(8) for i in range(25)}
