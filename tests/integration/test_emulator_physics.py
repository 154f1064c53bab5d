"""The emulator's physics: round trip per exchange, server time per write, 429 past the slots, Batch API."""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

import orjson
import pytest
import requests

from sncli.emulator.server import ServiceNowEmulator

pytestmark = pytest.mark.integration
AUTH = ("admin", "admin")
SID = "a" * 32


def batch(url: str, items: list[dict[str, Any]]) -> requests.Response:
    body = {"batch_request_id": "b1", "rest_requests": [
        {**item, "headers": [{"name": "Content-Type", "value": "application/json"}],
         "body": base64.b64encode(orjson.dumps(item.pop("json"))).decode() if "json" in item else ""}
        for item in items
    ]}
    return requests.post(f"{url}/api/now/v1/batch", json=body, auth=AUTH, timeout=10)


def test_a_batch_runs_each_item_as_the_table_api_would_and_stops_at_its_budget(emulator: ServiceNowEmulator) -> None:
    emulator.state.insert("incident", {"sys_id": SID, "state": "1"})
    emulator.state.update_settings(denied_tables={"u_denied"}, write_time_ms=10, batch_budget_ms=35)
    emulator.state.clear_journal()
    answer = batch(emulator.url, [
        {"id": "1", "method": "PATCH", "url": f"/api/now/table/incident/{SID}", "json": {"state": "2"}},
        {"id": "2", "method": "PATCH", "url": f"/api/now/table/incident/{'b' * 32}", "json": {"state": "2"}},
        {"id": "3", "method": "POST", "url": "/api/now/table/u_denied", "json": {"x": "1"}},
        {"id": "4", "method": "POST", "url": "/api/now/table/incident?sysparm_fields=sys_id", "json": {"n": "1"}},
        {"id": "5", "method": "POST", "url": "/api/now/table/incident", "json": {"n": "2"}},
    ])
    assert answer.status_code == 200
    data = answer.json()
    served = {s["id"]: s for s in data["serviced_requests"]}
    assert [(i, served[i]["status_code"]) for i in sorted(served)] == [("1", 200), ("2", 404), ("3", 403), ("4", 201)]
    assert data["unserviced_requests"] == [{"id": "5"}]  # 4 x 10 ms reached the 35 ms budget
    assert orjson.loads(base64.b64decode(served["1"]["body"]))["result"]["state"] == "2"
    assert served["4"]["execution_time"] == 10
    assert emulator.state.get("incident", SID)["state"] == "2"  # type: ignore[index]
    journal = [(e.method, e.path, e.status) for e in emulator.state.journal()]
    assert journal[-1] == ("POST", "/api/now/v1/batch", 200)
    assert [j[2] for j in journal[:-1]] == [200, 404, 403, 201]  # the items, journaled as Table API calls
    bad = requests.post(f"{emulator.url}/api/now/v1/batch", data=b"[1]", auth=AUTH, timeout=10)
    assert bad.status_code == 400


def test_round_trip_and_write_time_are_paid_per_exchange_and_per_write(emulator: ServiceNowEmulator) -> None:
    emulator.state.insert("incident", {"sys_id": SID, "state": "1"})
    emulator.state.update_settings(round_trip_ms=100, write_time_ms=50)
    t0 = time.perf_counter()
    requests.patch(f"{emulator.url}/api/now/table/incident/{SID}", json={"state": "3"}, auth=AUTH, timeout=10)
    single = time.perf_counter() - t0
    t0 = time.perf_counter()
    batch(emulator.url, [{"id": str(n), "method": "PATCH", "url": f"/api/now/table/incident/{SID}",
                          "json": {"state": str(n)}} for n in range(4)])
    four = time.perf_counter() - t0
    assert single >= 0.15
    assert four >= 0.30  # one round trip + 4 writes, not 4 round trips (0.6 s)
    assert four < 0.6 + 0.25


def test_past_the_slots_the_answer_is_429_with_when_to_come_back(emulator: ServiceNowEmulator) -> None:
    emulator.state.update_settings(max_concurrent=2, round_trip_ms=300, concurrency_retry_after=0.5)
    answers: list[requests.Response] = []
    lock = threading.Lock()

    def call() -> None:
        got = requests.get(f"{emulator.url}/api/now/table/incident", auth=AUTH, timeout=10)
        with lock:
            answers.append(got)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 200, 429, 429]
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.headers["Retry-After"] == "0.5"
    assert refused.headers["X-RateLimit-Limit"] == "2" and refused.headers["X-RateLimit-Remaining"] == "0"
    assert int(refused.headers["X-RateLimit-Reset"]) >= int(time.time())
    assert emulator.slots.peak == 2
    # a slot is given back once its answer is written, a moment after the client holds the answer
    deadline = time.monotonic() + 5
    while emulator.slots.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert emulator.slots.busy == 0
    assert sum(1 for e in emulator.state.journal() if e.fault == "concurrency") == 2
