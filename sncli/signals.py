"""SIGTERM and SIGINT as a request to stop: the one signal handler every long-running command shares.

Kubernetes sends SIGTERM and waits its grace period before SIGKILL; an operator
presses Ctrl-C. Both ask the run to stop at its next safe point (a page
boundary in a poll, once the writes in flight are done in a drain), never in the
middle of a commit: the handler only logs and calls the caller's ``request_stop``.
The first signal also puts back the handlers that were there before, so the
same signal sent again acts at once (SIGTERM ends the process, SIGINT raises
KeyboardInterrupt) for an operator whose run does not stop quickly.

Python runs signal handlers on the main thread only, and only the main thread
may install them: elsewhere (a test calling a command in a thread) this is a no-op.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


@contextmanager
def stop_on_signals(request_stop: Callable[[], None], *, then: str) -> Iterator[None]:
    """While inside, SIGTERM/SIGINT log ``"<SIGNAL> received: <then> ..."`` and call ``request_stop``.

    ``then`` says what the run does next (e.g. "stopping at the next page
    boundary"). The previous handlers are back after the first signal and on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[signal.Signals, _Handler] = {}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    def handler(signum: int, frame: FrameType | None) -> None:
        restore()
        log.warning("%s received: %s (send it again to stop at once)", signal.Signals(signum).name, then)
        request_stop()

    for sig in STOP_SIGNALS:
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)
    try:
        yield
    finally:
        restore()
