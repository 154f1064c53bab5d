"""Emulator building blocks: fault rules, OAuth grants, response rendering."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from sncli.emulator.auth import Credentials, TokenStore, parse_basic, parse_bearer, token_grant
from sncli.emulator.faults import Fault, FaultInjector
from sncli.emulator.render import link_header, render_record
from sncli.emulator.state import Selection
from sncli.emulator.store import Record
from sncli.transport_security import is_loopback

# ----------------------------------------------------------------------------- faults


def test_fault_matching_skip_and_times() -> None:
    injector = FaultInjector()
    injector.add(
        Fault("status", method="get", path_prefix="/api/now/table/incident", table="incident", skip=1, times=2)
    )
    picks = [injector.pick("GET", "/api/now/table/incident", "incident") for _ in range(5)]
    assert [p is not None for p in picks] == [False, True, True, False, False]
    assert injector.pick("POST", "/api/now/table/incident", "incident") is None


def test_fault_table_and_prefix_filters() -> None:
    injector = FaultInjector()
    injector.add(Fault("reset", table="problem", times=None))
    assert injector.pick("GET", "/api/now/table/incident", "incident") is None
    assert injector.pick("GET", "/api/now/table/problem", "problem") is not None
    assert injector.pick("GET", "/api/now/table/problem", "problem") is not None  # times=None: forever


def test_first_firing_rule_wins_and_clear() -> None:
    injector = FaultInjector()
    injector.add(Fault("latency", latency_ms=1))
    injector.add(Fault("status", status=503))
    assert injector.pick("GET", "/x", None).kind == "latency"  # type: ignore[union-attr]
    assert injector.pick("GET", "/x", None).kind == "status"  # type: ignore[union-attr]
    assert injector.pick("GET", "/x", None) is None
    injector.add(Fault("status"))
    injector.clear()
    assert injector.pick("GET", "/x", None) is None


def test_probability_is_reproducible_with_a_seed() -> None:
    def run(seed: int) -> list[bool]:
        injector = FaultInjector()
        injector.add(Fault("status", probability=0.3, seed=seed, times=None))
        return [injector.pick("GET", "/x", None) is not None for _ in range(200)]

    first = run(42)
    assert first == run(42)
    assert first != run(43)
    assert 30 < sum(first) < 90


def test_fault_validation_and_dict_round_trip() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("explode")
    with pytest.raises(ValueError, match="probability"):
        Fault("status", probability=2)
    with pytest.raises(ValueError, match="unknown fault field"):
        Fault.from_dict({"kind": "status", "colour": "red"})
    fault = Fault.from_dict({"kind": "status", "status": 429, "retry_after": 2, "times": 3})
    data = fault.to_dict()
    assert (data["kind"], data["status"], data["retry_after"], data["times"]) == ("status", 429, 2, 3)


# ----------------------------------------------------------------------------- auth


CREDS = Credentials()


def test_parse_basic_and_bearer() -> None:
    header = "Basic " + base64.b64encode(b"admin:pa:ss").decode()
    assert parse_basic(header) == ("admin", "pa:ss")
    assert parse_basic("Basic !!!") is None
    assert parse_basic("Basic " + base64.b64encode(b"nocolon").decode()) is None
    assert parse_basic("Bearer abc") is None
    assert parse_bearer("Bearer abc") == "abc"
    assert parse_bearer("Bearer ") is None
    assert parse_bearer("Basic abc") is None


def grant(store: TokenStore, **form: str) -> tuple[int, dict[str, object]]:
    base = {"client_id": "sncli", "client_secret": "sncli-secret"}
    return token_grant({**base, **form}, CREDS, store, ttl=60, refresh_ttl=600)


def test_password_grant_issues_bearer_token_with_ttl() -> None:
    store = TokenStore()
    status, body = grant(store, grant_type="password", username="admin", password="admin")
    assert status == 200
    assert body["token_type"] == "Bearer" and body["expires_in"] == 60
    assert store.user_for(str(body["access_token"])) == "admin"
    assert store.issued == 1


def test_grant_failures() -> None:
    store = TokenStore()
    assert grant(store, grant_type="password", username="admin", password="bad")[0] == 401
    assert grant(store, grant_type="password", client_secret="bad", username="admin", password="admin")[0] == 401
    status, body = grant(store, grant_type="implicit")
    assert status == 400 and body["error"] == "unsupported_grant_type"
    assert grant(store, grant_type="refresh_token", refresh_token="unknown")[0] == 401
    assert store.issued == 0


def test_client_credentials_and_refresh_grants() -> None:
    store = TokenStore()
    status, body = grant(store, grant_type="client_credentials")
    assert status == 200
    status, refreshed = grant(store, grant_type="refresh_token", refresh_token=str(body["refresh_token"]))
    assert status == 200 and refreshed["access_token"] != body["access_token"]
    assert store.issued == 2


def test_tokens_expire_on_the_monotonic_clock() -> None:
    now = [1000.0]
    store = TokenStore(lambda: now[0])
    _, body = grant(store, grant_type="password", username="admin", password="admin")
    token, refresh = str(body["access_token"]), str(body["refresh_token"])
    now[0] += 59
    assert store.user_for(token) == "admin"
    now[0] += 1
    assert store.user_for(token) is None
    assert grant(store, grant_type="refresh_token", refresh_token=refresh)[0] == 200
    now[0] += 600
    assert grant(store, grant_type="refresh_token", refresh_token=refresh)[0] == 401


def test_expire_all_invalidates_access_tokens() -> None:
    store = TokenStore()
    _, body = grant(store, grant_type="client_credentials")
    store.expire_all()
    assert store.user_for(str(body["access_token"])) is None


# ----------------------------------------------------------------------------- rendering


def _offsets(header: str) -> dict[str, int]:
    out = {}
    for part in header.split(","):
        url, rel = part.split(";")
        query = parse_qs(urlsplit(url.strip("<>")).query)
        out[rel.split('"')[1]] = int(query["sysparm_offset"][0])
    return out


def test_link_header_first_prev_next_last() -> None:
    params = {"sysparm_query": "active=true^ORDERBYnumber", "sysparm_limit": "10", "sysparm_offset": "10"}
    header = link_header("http://h", "/api/now/table/t", params, offset=10, limit=10, total=35, returned=10)
    assert _offsets(header) == {"first": 0, "prev": 0, "next": 20, "last": 30}
    assert "sysparm_query=active%3Dtrue%5EORDERBYnumber" in header
    header = link_header("http://h", "/api/now/table/t", params, offset=30, limit=10, total=35, returned=5)
    assert _offsets(header) == {"first": 0, "prev": 20, "last": 30}
    header = link_header("http://h", "/api/now/table/t", {}, offset=0, limit=10, total=None, returned=10)
    assert _offsets(header) == {"first": 0, "next": 10}
    header = link_header("http://h", "/api/now/table/t", {}, offset=0, limit=10, total=0, returned=0)
    assert _offsets(header) == {"first": 0, "last": 0}


def _selection(record: Record) -> Selection:
    return Selection([record], None, frozenset(record.fields), {"caller_id": "sys_user"}, True)


RECORD = Record({"sys_id": "a" * 32, "sys_updated_on": "2026-01-01 00:00:00", "caller_id": "b" * 32, "number": "INC1"})


def test_render_plain_record_reuses_cached_json() -> None:
    out = render_record(
        RECORD, _selection(RECORD), fields=None, display_value="false", exclude_links=True, base_url="http://h"
    )
    assert out is RECORD.json


def test_render_reference_links_by_default() -> None:
    out = orjson.loads(
        render_record(
            RECORD, _selection(RECORD), fields=None, display_value="false", exclude_links=False, base_url="http://h"
        )
    )
    assert out["caller_id"] == {"link": f"http://h/api/now/table/sys_user/{'b' * 32}", "value": "b" * 32}
    assert out["number"] == "INC1"


def test_render_fields_projection_and_display_value_all() -> None:
    out = orjson.loads(
        render_record(
            RECORD,
            _selection(RECORD),
            fields=["number", "nosuch", "sys_id"],
            display_value="all",
            exclude_links=True,
            base_url="http://h",
        )
    )
    assert out == {
        "number": {"display_value": "INC1", "value": "INC1"},
        "sys_id": {"display_value": "a" * 32, "value": "a" * 32},
    }


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("example.com", False), ("", False),
])
def test_only_loopback_hosts_count_as_local(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
