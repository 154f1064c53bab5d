"""The one SIGTERM/SIGINT handler: a stop request first, the previous handler for a second signal."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import pytest

from sncli.signals import stop_on_signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_requests_a_stop_second_reaches_the_previous_handler(
    sig: signal.Signals, caplog: pytest.LogCaptureFixture
) -> None:
    outer: list[int] = []

    def previous(signum: int, frame: FrameType | None) -> None:
        outer.append(signum)

    stops: list[str] = []
    old = signal.signal(sig, previous)
    try:
        with caplog.at_level(logging.WARNING), stop_on_signals(lambda: stops.append("stop"), then="stopping soon"):
            assert signal.getsignal(sig) is not previous
            signal.raise_signal(sig)
            assert stops == ["stop"] and outer == []
            assert signal.getsignal(sig) is previous  # a second signal acts at once
            signal.raise_signal(sig)
            assert stops == ["stop"] and outer == [sig]
        assert f"{sig.name} received: stopping soon (send it again to stop at once)" in caplog.text
        assert signal.getsignal(sig) is previous
    finally:
        signal.signal(sig, old)


def test_handlers_are_restored_on_exit_without_a_signal() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    with stop_on_signals(lambda: None, then="stopping"):
        assert all(signal.getsignal(sig) is not old for sig, old in before.items())
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_off_the_main_thread_it_changes_nothing() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    seen: dict[signal.Signals, object] = {}
    errors: list[BaseException] = []

    def body() -> None:
        try:
            with stop_on_signals(lambda: None, then="stopping"):
                seen.update({sig: signal.getsignal(sig) for sig in before})
        except BaseException as exc:  # signal.signal off the main thread raises ValueError
            errors.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(10)
    assert errors == [] and seen == before
