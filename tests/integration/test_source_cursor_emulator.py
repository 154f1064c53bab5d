"""Property: paging the emulator with the keyset cursor yields every record exactly once, in order.

Whatever the page size and however many records share one second, including
when the run is restarted after any page (the cursor of the last delivered page
is all that survives). The delivery side is a plain list here on purpose: this
is the pure paging property over real HTTP and the emulator's query engine;
the Kafka path is tested on the real broker in test_source_poll.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sncli.config import ServiceNowSettings
from sncli.emulator.server import ServiceNowEmulator
from sncli.servicenow.client import ServiceNowClient
from sncli.source.cursor import Cursor, UpperBound, page_query
from sncli.source.poller import Budget, StopControl, page_loop

pytestmark = pytest.mark.integration

BASE = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def emu() -> Iterator[ServiceNowEmulator]:
    emulator = ServiceNowEmulator().start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def client(emu: ServiceNowEmulator) -> Iterator[ServiceNowClient]:
    sn = ServiceNowSettings.model_validate(
        {"instance_url": emu.url, "auth": {"type": "basic", "username": "admin", "password": "admin"},
         "rate_limit": None}
    )
    with ServiceNowClient(sn) as c:
        yield c


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    groups=st.lists(st.tuples(st.integers(0, 4), st.integers(1, 25)), min_size=0, max_size=5),
    page_size=st.integers(1, 30),
    restarts=st.lists(st.tuples(st.integers(1, 30), st.booleans()), max_size=3),
    data=st.data(),
)
def test_every_record_exactly_once_in_keyset_order_across_restarts(
    emu: ServiceNowEmulator,
    client: ServiceNowClient,
    groups: list[tuple[int, int]],
    page_size: int,
    restarts: list[tuple[int, bool]],
    data: st.DataObject,
) -> None:
    emu.state.reset()
    for second, count in groups:
        emu.state.generate("incident", count, at=BASE + timedelta(seconds=second), spread_seconds=0,
                           field_count=3, record_bytes=64, seed=data.draw(st.integers(0, 10**6)))
    hi_second = data.draw(st.integers(0, 5))
    hi = UpperBound((BASE + timedelta(seconds=hi_second)).strftime("%Y-%m-%d %H:%M:%S"))
    expected = sorted((r["sys_updated_on"], r["sys_id"]) for r in emu.state.records("incident")
                      if r["sys_updated_on"] <= hi.value)

    def fetch(cursor: Cursor, limit: int) -> list[dict[str, str]]:
        query = page_query(cursor, hi, ts_field="sys_updated_on")
        return client.list_page("incident", query=query, fields=["sys_id", "sys_updated_on"], limit=limit).records

    delivered: list[tuple[str, str]] = []
    stored = Cursor.at_start("2024-01-01 00:00:00")
    pending = list(restarts)
    crashes = 0
    for _ in range(200):
        pages_before_stop, crash = pending.pop(0) if pending else (0, False)
        pages_done = 0

        def commit(cursor: Cursor, crash_at: int = pages_before_stop if crash else -1) -> None:
            nonlocal stored, pages_done
            pages_done += 1
            if pages_done == crash_at:
                raise RuntimeError("killed after producing, before storing")
            stored = cursor

        budget = Budget(pages_before_stop * page_size if pages_before_stop and not crash else None)
        try:
            result = page_loop(
                start=stored, fetch=fetch,
                deliver=lambda recs, _: delivered.extend((r["sys_updated_on"], r["sys_id"]) for r in recs) or len(recs),
                commit=commit, ts_field="sys_updated_on", page_size=page_size, stop=StopControl(), budget=budget,
            )
        except RuntimeError:
            crashes += 1
            continue
        if result.stopped is None:
            break
    unique = list(dict.fromkeys(delivered))
    assert unique == expected  # every record, in keyset order
    assert len(delivered) - len(unique) <= crashes * page_size  # at most one page re-sent per crash
    if expected:
        assert stored == Cursor(*expected[-1])
