"""The sink's keyed worker pool: parallel across keys, in read order within a key, bounded.

:class:`KeyedPool` runs ``workers`` threads; records that share a key are
handled one after another in the order they were submitted, records with
different keys run in parallel, and any idle worker takes any ready key. A
full pool blocks the submitter (backpressure), bounding memory to
``max_pending`` records. It knows nothing about ServiceNow: the handler it is
given (the drain's write step) does the work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class KeyedPool(Generic[T]):
    """``workers`` threads that run items in parallel, but one key at a time and in submit order.

    Items of one key wait in that key's queue while an item of the key runs;
    any idle worker takes the next key that is ready. Unlike fixed lanes
    (``hash(key) % workers``), no worker idles while another lane has a
    backlog, so throughput stays near ``workers / latency`` whatever the key
    distribution. At most ``max_pending`` items are queued or running: a
    submit beyond that blocks (backpressure).
    """

    def __init__(self, workers: int, max_pending: int, handle: Callable[[T], None], *, name: str = "sink") -> None:
        self.workers = max(1, workers)
        self._capacity = max(1, max_pending)
        self._handle = handle
        lock = threading.Lock()
        self._work = threading.Condition(lock)  # workers wait here for a ready key
        self._space = threading.Condition(lock)  # submitters wait here for room
        self._queues: dict[bytes, deque[T]] = {}  # keys queued or running -> their waiting items
        self._ready: deque[bytes] = deque()  # keys with a waiting item and none running
        self._pending = 0  # items queued or running
        self._closing = False
        self._abandoned = False
        self._crash: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def crash(self) -> BaseException | None:
        """An exception that escaped the handler (a bug); the pool drops its queued work after it."""
        return self._crash

    @property
    def pending(self) -> int:
        with self._work:
            return self._pending

    def submit(self, key: bytes, item: T, *, keep_waiting: Callable[[], bool] = lambda: True) -> bool:
        """Queue ``item`` behind the earlier items of ``key``, blocking while the pool is full.

        ``keep_waiting`` is called (without the pool's lock) while blocked, to
        serve callbacks and check for a stop; False gives up and submit returns False.
        """
        while True:
            with self._space:
                if self._abandoned or self._closing:
                    return False
                if self._pending < self._capacity:
                    waiting = self._queues.get(key)
                    if waiting is None:
                        self._queues[key] = deque((item,))
                        self._ready.append(key)
                        self._work.notify()
                    else:
                        waiting.append(item)  # the key is running or ready: it is picked up in turn
                    self._pending += 1
                    return True
                self._space.wait(0.05)
            if not keep_waiting():
                return False

    def wait_idle(self, *, abandon: bool = False, tick: Callable[[], bool] = lambda: False) -> None:
        """Wait until nothing is queued or running; ``tick`` runs every ~50 ms, True drops the queue.

        The pool stays open: more work may be submitted afterwards.
        """
        if abandon:
            self._drop_queued()
        while True:
            with self._space:
                if self._pending == 0:
                    return
                self._space.wait(0.05)
            if tick():
                self._drop_queued()

    def close(
        self,
        *,
        abandon: bool = False,
        timeout: float | None = None,
        abandon_if: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Stop: finish queued items, or with ``abandon`` drop the ones not started yet.

        ``abandon_if`` is called about every 50 ms while waiting (the caller also
        uses it to commit progress and serve callbacks); True cuts the queued
        work short. Returns True when every worker ended within ``timeout``.
        """
        with self._work:
            self._closing = True
            self._work.notify_all()
            self._space.notify_all()
        if abandon:
            self._abandon()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            while thread.is_alive():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                thread.join(0.05)
                if not self._abandoned and abandon_if():
                    self._abandon()
        return not any(thread.is_alive() for thread in self._threads)

    def _abandon(self) -> None:
        with self._work:
            self._abandoned = True
        self._drop_queued()

    def _drop_queued(self) -> None:
        """Forget every item not started yet (their keys included); running ones finish."""
        with self._work:
            dropped = 0
            for key in list(self._queues):
                waiting = self._queues[key]
                dropped += len(waiting)
                waiting.clear()
                if key in self._ready:  # queued, not running: forget the key
                    del self._queues[key]
            self._ready.clear()
            self._pending -= dropped
            self._work.notify_all()
            self._space.notify_all()

    def _run(self) -> None:
        while True:
            with self._work:
                while not self._ready:
                    if (self._closing and self._pending == 0) or self._abandoned:
                        return
                    self._work.wait(0.5)
                key = self._ready.popleft()
                item = self._queues[key].popleft()
            try:
                self._handle(item)
            except BaseException as exc:  # a bug in the handler: stop cleanly instead of hanging
                log.exception("sink worker crashed")
                self._crash = exc
                self._abandon()
            with self._work:
                self._pending -= 1
                waiting = self._queues.get(key)
                if waiting:
                    self._ready.append(key)  # its next item, behind the other ready keys
                    self._work.notify()
                elif waiting is not None:
                    del self._queues[key]
                if self._closing and self._pending == 0:
                    self._work.notify_all()
                self._space.notify_all()
