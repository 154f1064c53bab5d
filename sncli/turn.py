"""One thread at a time runs the hot Python work of a run: the CPU turn.

Why: confluent-kafka takes the GIL once per record while it serves delivery
reports (``flush``/``poll``). When another thread runs Python at that moment,
every record waits for a GIL hand-over: serving 1 000 acknowledgements takes
0.3 ms alone, 220 ms beside a thread running plain Python and 1.2 s beside one
decoding JSON (measured here). A poll of several tables, or a backfill of
several windows, runs one page loop per thread; if each loop served its
acknowledgements while the others decoded, most of the run would be spent in
hand-overs.

So a page loop holds the turn while it works (decoding, building messages,
producing, serving acknowledgements, storing its cursor) and gives it up only
to wait: for ServiceNow's answer, and for the broker's acknowledgements. The
GIL already lets only one thread run Python at a time, so taking turns costs
no parallelism; it only makes the hand-overs coarse (one per wait instead of
one per record). Threads that never take the turn (the sink's writers, the
main thread) are not affected by it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType


class Turn:
    """A lock that knows its owner and how many threads wait for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._waiting = 0
        self._owner: int | None = None

    def __enter__(self) -> Turn:
        with self._count_lock:
            self._waiting += 1
        self._lock.acquire()
        with self._count_lock:
            self._waiting -= 1
        self._owner = threading.get_ident()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._owner = None
        self._lock.release()

    def held(self) -> bool:
        """Whether the calling thread holds the turn."""
        return self._owner == threading.get_ident()

    def contended(self) -> bool:
        """Whether another thread is waiting for the turn now."""
        return self._waiting > 0

    @contextmanager
    def released(self) -> Iterator[None]:
        """Give the turn up for a wait and take it back after; a no-op for a thread that does not hold it."""
        if not self.held():
            yield
            return
        self.__exit__(None, None, None)
        try:
            yield
        finally:
            self.__enter__()

    def pause(self, seconds: float) -> None:
        """Sleep ``seconds`` with the turn given up (see :meth:`released`)."""
        with self.released():
            time.sleep(seconds)


#: The process's turn: every page loop of a run shares it.
CPU = Turn()
