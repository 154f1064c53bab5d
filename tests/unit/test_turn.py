"""The CPU turn (sncli.turn): ownership, waiting threads, and giving it up only to wait."""

from __future__ import annotations

import threading
import time

from sncli.turn import Turn


def test_released_gives_the_turn_to_a_waiting_thread_and_takes_it_back() -> None:
    turn = Turn()
    order: list[str] = []
    with turn:
        assert turn.held() and not turn.contended()

        def other() -> None:
            with turn:
                order.append("other")

        thread = threading.Thread(target=other)
        thread.start()
        deadline = time.monotonic() + 5
        while not turn.contended() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert turn.contended()
        order.append("owner before")
        with turn.released():
            thread.join(5)
        order.append("owner after")
        assert turn.held()
    assert order == ["owner before", "other", "owner after"]
    assert not turn.held()


def test_released_and_pause_are_no_ops_for_a_thread_without_the_turn() -> None:
    turn = Turn()
    with turn.released():
        assert not turn.held()
    turn.pause(0)
    with turn:  # still free
        assert turn.held()
