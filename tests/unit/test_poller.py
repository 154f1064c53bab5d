"""The page loop's order of work (sncli.source.poller): pure logic, with in-memory pages and outputs."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from sncli.source import poller
from sncli.source.cursor import Cursor, CursorOrderError
from sncli.source.poller import Budget, StopControl, page_loop

TS = "sys_updated_on"


def records(first: int, count: int) -> list[dict[str, Any]]:
    return [{TS: "2024-01-01 00:00:00", "sys_id": f"{i:032x}"} for i in range(first, first + count)]


class World:
    """A table of ``total`` records served ``page`` at a time, and an output; every step lands in ``log``."""

    def __init__(self, total: int, *, ready: bool = True, out_of_order_page: int | None = None,
                 silent_page: int | None = None) -> None:
        self.rows = records(0, total)
        self.bad = out_of_order_page  # this page comes back in reverse order
        self.silent = silent_page  # this page's answer never comes
        self.ready = ready
        self.log: list[str] = []
        self.cancelled: list[int] = []
        self.stored: Cursor | None = None
        self.pages_started = 0

    # input
    def start_fetch(self, cursor: Cursor, limit: int) -> Any:
        world = self
        number = self.pages_started = self.pages_started + 1
        self.log.append(f"request {number}")

        class Pending:
            def answered(self, timeout: float) -> bool:
                return number != world.silent

            def ready(self, timeout: float) -> bool:
                return world.ready and number != world.silent

            def result(self) -> list[dict[str, Any]]:
                world.log.append(f"read {number}")
                start = 0 if not cursor.sys_id else int(cursor.sys_id, 16) + 1
                page = [dict(r) for r in world.rows[start:start + limit]]
                if number == world.bad and len(page) > 1:
                    page.reverse()
                return page

            def cancel(self) -> None:
                world.cancelled.append(number)

        return Pending()

    # output
    def prepare(self, recs: Any) -> str:
        self.log.append(f"prepare {self._page(recs)}")
        return "messages"

    def send(self, recs: Any, prepared: Any) -> Any:
        page = self._page(recs)
        self.log.append(f"send {page}")

        def settle() -> int:
            self.log.append(f"settle {page}")
            return len(recs)

        return settle

    def commit(self, cursor: Cursor) -> None:
        self.log.append(f"commit {int(cursor.sys_id, 16) // 10 + 1}")
        self.stored = cursor

    @staticmethod
    def _page(recs: Any) -> int:
        return min(int(r["sys_id"], 16) for r in recs) // 10 + 1

    def run(self, **kwargs: Any) -> poller.LoopResult:
        options: dict[str, Any] = {"page_size": 10, "stop": StopControl(), **kwargs}
        return page_loop(start=Cursor.at_start("1970-01-01 00:00:00"), start_fetch=self.start_fetch,
                         send=self.send, prepare=self.prepare, commit=self.commit, ts_field=TS, **options)


def test_the_next_page_is_read_and_prepared_before_this_one_is_settled() -> None:
    world = World(25)
    result = world.run()
    assert world.log == [
        "request 1", "read 1", "request 2", "prepare 1",
        "send 1", "read 2", "request 3", "prepare 2", "settle 1", "commit 1",
        "send 2", "read 3", "request 4", "prepare 3", "settle 2", "commit 2",
        "send 3", "read 4", "settle 3", "commit 3",  # page 4 is empty: caught up
    ]
    assert (result.records, result.pages, result.delivered, result.stopped) == (25, 3, 25, None)
    assert world.stored == Cursor("2024-01-01 00:00:00", f"{24:032x}")


def test_a_page_is_never_sent_before_the_previous_one_is_stored() -> None:
    world = World(47)
    world.run()
    for n in range(2, 6):
        assert world.log.index(f"commit {n - 1}") < world.log.index(f"send {n}")


def test_a_late_next_page_lets_this_one_be_settled_and_stored_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(poller, "SETTLE_WAIT_SECONDS", 0.0)
    world = World(15, ready=False)  # the next answer is never there in time
    world.run()
    assert world.log[:9] == [
        "request 1", "read 1", "request 2", "prepare 1",
        "send 1", "settle 1", "commit 1", "read 2", "request 3",
    ]


def test_a_bad_next_page_is_refused_only_after_this_page_is_stored() -> None:
    world = World(30, out_of_order_page=2)
    with pytest.raises(CursorOrderError):
        world.run()
    assert world.stored is not None and world.stored.sys_id == f"{9:032x}"
    assert world.log.index("commit 1") > world.log.index("read 2")
    assert "send 2" not in world.log


def test_a_stop_drops_the_pages_requested_ahead_and_returns_their_budget() -> None:
    world = World(100)
    budget = Budget(100)
    stop = StopControl()
    real_commit = world.commit

    def commit(cursor: Cursor) -> None:
        real_commit(cursor)
        stop.request("signal")

    world.commit = commit  # type: ignore[method-assign]
    result = world.run(stop=stop, budget=budget)
    assert (result.pages, result.records, result.stopped) == (1, 10, "signal")
    assert world.cancelled == [2, 3]  # page 2 read ahead (and dropped), page 3 requested
    assert budget.take(1000) == 90  # only what was delivered is spent


def test_a_stop_ends_the_wait_for_an_answer_after_the_previous_page_is_stored() -> None:
    world = World(100, silent_page=2)
    budget = Budget(100)
    stop = StopControl()
    real_commit = world.commit

    def commit(cursor: Cursor) -> None:
        real_commit(cursor)
        threading.Timer(0.2, stop.request, ("signal",)).start()  # while the loop waits for page 2

    world.commit = commit  # type: ignore[method-assign]
    result = world.run(stop=stop, budget=budget)
    assert (result.pages, result.records, result.stopped) == (1, 10, "signal")
    assert "read 2" not in world.log and 2 in world.cancelled  # dropped unread
    assert budget.take(1000) == 90


def test_max_records_is_exact_and_requests_nothing_past_it() -> None:
    world = World(100)
    result = world.run(budget=Budget(25))
    assert (result.records, result.stopped) == (25, "max_records")
    assert world.pages_started == 3


def test_a_failed_settle_stores_nothing_and_cancels_what_was_requested() -> None:
    world = World(30)

    def send(recs: Any, prepared: Any) -> Any:
        def settle() -> int:
            raise RuntimeError("broker down")

        return settle

    with pytest.raises(RuntimeError):
        page_loop(start=Cursor.at_start("1970-01-01 00:00:00"), start_fetch=world.start_fetch, send=send,
                  commit=world.commit, ts_field=TS, page_size=10, stop=StopControl())
    assert world.stored is None
    assert world.cancelled == [3]  # page 2 was read during the wait; the request for page 3 is abandoned


def test_a_plain_fetch_and_deliver_work_the_same() -> None:
    world = World(25)
    delivered: list[str] = []

    def fetch(cursor: Cursor, limit: int) -> list[dict[str, Any]]:
        return list(world.start_fetch(cursor, limit).result())

    result = page_loop(start=Cursor.at_start("1970-01-01 00:00:00"), fetch=fetch,
                       deliver=lambda recs, _: delivered.extend(r["sys_id"] for r in recs) or len(recs),
                       commit=world.commit, ts_field=TS, page_size=10, stop=StopControl())
    assert result.records == 25 and delivered == [f"{i:032x}" for i in range(25)]


def test_page_loop_refuses_two_inputs_or_two_outputs() -> None:
    world = World(1)
    with pytest.raises(TypeError):
        page_loop(start=Cursor.at_start("1970-01-01 00:00:00"), fetch=lambda c, n: [],
                  start_fetch=world.start_fetch, send=world.send, commit=world.commit, ts_field=TS, page_size=10,
                  stop=StopControl())
    with pytest.raises(TypeError):
        page_loop(start=Cursor.at_start("1970-01-01 00:00:00"), start_fetch=world.start_fetch, send=world.send,
                  deliver=lambda r, p: 0, commit=world.commit, ts_field=TS, page_size=10, stop=StopControl())


def test_a_page_servicenow_fails_is_raised_after_the_previous_is_stored_and_its_budget_returned() -> None:
    world = World(100)
    budget = Budget(100)
    real_start = world.start_fetch

    def start_fetch(cursor: Cursor, limit: int) -> Any:
        pending = real_start(cursor, limit)
        if world.pages_started == 2:
            def fail() -> list[dict[str, Any]]:
                raise RuntimeError("ServiceNow gave up")

            pending.result = fail
        return pending

    with pytest.raises(RuntimeError, match="gave up"):
        page_loop(start=Cursor.at_start("1970-01-01 00:00:00"), start_fetch=start_fetch, send=world.send,
                  commit=world.commit, ts_field=TS, page_size=10, stop=StopControl(), budget=budget)
    assert world.stored == Cursor("2024-01-01 00:00:00", f"{9:032x}")  # page 1 stored before the failure
    assert budget.take(1000) == 90  # page 2's share went back


# --------------------------------------------------------------------------- the end: what lies past an empty page


class Hidden:
    """40 rows, one per sys_id; ``hidden`` ones are read by a page's limit and dropped (ServiceNow's row ACLs)."""

    def __init__(self, hidden: set[int], total: int = 40) -> None:
        self.rows = records(0, total)
        self.hidden = hidden
        self.asked: list[tuple[Cursor, int]] = []  # what look_past was asked
        self.committed: list[Cursor] = []
        self.delivered: list[int] = []

    def _after(self, cursor: Cursor) -> list[int]:
        start = 0 if not cursor.sys_id else int(cursor.sys_id, 16) + 1
        return list(range(start, len(self.rows)))

    def fetch(self, cursor: Cursor, limit: int) -> list[dict[str, Any]]:
        return [self.rows[i] for i in self._after(cursor)[:limit] if i not in self.hidden]

    def look_past(self, cursor: Cursor, limit: int) -> poller.Beyond:
        self.asked.append((cursor, limit))
        rest = self._after(cursor)
        visible = [i for i in rest if i not in self.hidden]
        if not visible:
            return poller.Beyond([], hidden=len(rest), past=Cursor.at_start("2024-01-01 00:00:01") if rest else None)
        kept = visible[:limit]
        passed = sum(1 for i in rest if i < kept[-1] and i in self.hidden)
        return poller.Beyond([self.rows[i] for i in kept], hidden=passed)

    def deliver(self, recs: Any, prepared: Any) -> int:
        self.delivered.extend(int(r["sys_id"], 16) for r in recs)
        return len(recs)

    def run(self, **kwargs: Any) -> poller.LoopResult:
        options: dict[str, Any] = {"page_size": 10, "stop": StopControl(), **kwargs}
        return page_loop(start=Cursor.at_start("1970-01-01 00:00:00"), fetch=self.fetch, deliver=self.deliver,
                         commit=self.committed.append, ts_field=TS, look_past=self.look_past, **options)


def test_visible_rows_after_a_hidden_run_come_in_the_same_loop_and_the_hidden_are_counted() -> None:
    world = Hidden(hidden=set(range(10, 30)))  # two whole pages hidden
    result = world.run()
    assert world.delivered == [*range(10), *range(30, 40)]
    assert (result.records, result.hidden, result.stopped) == (20, 20, None)
    assert result.cursor == Cursor("2024-01-01 00:00:00", f"{39:032x}")
    assert world.asked[0] == (Cursor("2024-01-01 00:00:00", f"{9:032x}"), 10)


def test_a_hidden_rest_moves_the_cursor_past_it_once_everything_before_is_stored() -> None:
    world = Hidden(hidden=set(range(25, 40)))
    result = world.run()
    assert world.delivered == list(range(25))
    assert world.committed[-2:] == [Cursor("2024-01-01 00:00:00", f"{24:032x}"), Cursor.at_start("2024-01-01 00:00:01")]
    assert (result.cursor, result.hidden, result.stopped) == (Cursor.at_start("2024-01-01 00:00:01"), 15, None)


def test_nothing_hidden_and_nothing_left_is_the_end_as_before() -> None:
    world = Hidden(hidden=set())
    result = world.run()
    assert (result.records, result.hidden, result.stopped) == (40, 0, None)
    assert result.cursor == world.committed[-1] == Cursor("2024-01-01 00:00:00", f"{39:032x}")


def test_the_look_past_takes_its_share_of_the_budget_so_max_records_stays_exact() -> None:
    world = Hidden(hidden=set(range(10, 30)))
    budget = Budget(15)
    result = world.run(budget=budget)
    assert world.delivered == [*range(10), *range(30, 35)]
    assert world.asked == [(Cursor("2024-01-01 00:00:00", f"{9:032x}"), 5)]  # the 5 records left, not a page
    assert (result.records, result.stopped) == (15, "max_records")
    assert budget.take(100) == 0


def test_a_failed_look_past_is_raised_and_the_cursor_stays_at_the_last_stored_page() -> None:
    world = Hidden(hidden=set(range(10, 30)))

    def failing(cursor: Cursor, limit: int) -> poller.Beyond:
        raise RuntimeError("ServiceNow is down")

    world.look_past = failing  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="down"):
        world.run()
    assert world.committed == [Cursor("2024-01-01 00:00:00", f"{9:032x}")]
