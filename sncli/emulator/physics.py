"""The instance's physics: how long an exchange takes and how many run at once.

A real instance costs each call a network round trip (tens of ms from a
cluster) plus the server's time per write, and runs only a few API
transactions at once (the integration semaphore; past it, 429). The emulator
models the three separately, from its settings:

- ``round_trip_ms``: paid once per HTTP exchange (a Batch API call pays it once
  for all its items);
- ``write_time_ms``: the server's time per write (POST / PATCH / PUT / DELETE),
  also per item of a batch; a batch runs its items one after another;
- ``max_concurrent``: API exchanges in progress at once (0 = no limit). A slot
  is held for the whole exchange, round trip included (the issue's model: the
  single-call ceiling is ``max_concurrent / (round trip + write time)``); past
  it the answer is 429 with ``Retry-After`` (``concurrency_retry_after``
  seconds) and ``X-RateLimit-Limit/Remaining/Reset``.

The time is not slept while holding a CPU: the handler moves the moment its
answer may leave (``_answer_at``), so work and waiting overlap as on a server.
"""

from __future__ import annotations

import math
import threading
import time

from sncli.emulator.render import error_body
from sncli.emulator.state import EmulatorSettings

Headers = list[tuple[str, str]]

#: Paths of the Batch API (v1, and the unversioned alias).
BATCH_PATHS = frozenset({"/api/now/v1/batch", "/api/now/batch"})


class Slots:
    """The transaction slots: a counter under a lock, never blocking (a full house answers 429)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy = 0
        self.peak = 0

    def enter(self, limit: int) -> bool:
        """Take a slot; False when ``limit`` (> 0) are taken already."""
        with self._lock:
            if limit > 0 and self._busy >= limit:
                return False
            self._busy += 1
            self.peak = max(self.peak, self._busy)
            return True

    def leave(self) -> None:
        with self._lock:
            self._busy = max(0, self._busy - 1)

    @property
    def busy(self) -> int:
        with self._lock:
            return self._busy


def exchange_seconds(settings: EmulatorSettings, writes: int) -> float:
    """How long an exchange of ``writes`` writes takes on the server side, round trip included."""
    return (settings.round_trip_ms + writes * settings.write_time_ms) / 1000.0


def overloaded(settings: EmulatorSettings) -> tuple[int, bytes, Headers]:
    """The 429 of a full semaphore pool, with when to come back."""
    retry_after = max(0.0, float(settings.concurrency_retry_after))
    text = f"{retry_after:g}"
    reset = math.ceil(time.time() + retry_after)
    headers: Headers = [
        ("Retry-After", text),
        ("X-RateLimit-Limit", str(settings.max_concurrent)),
        ("X-RateLimit-Remaining", "0"),
        ("X-RateLimit-Reset", str(reset)),
        ("X-RateLimit-Rule", "emulator concurrent transactions"),
    ]
    body = error_body("Too Many Requests",
                      f"more than {settings.max_concurrent} API transactions at once; retry after {text} s")
    return 429, body, headers


def served_within_budget(index: int, settings: EmulatorSettings) -> bool:
    """Whether item ``index`` of a batch starts inside the batch's time budget (the first always does)."""
    budget = settings.batch_budget_ms
    if budget <= 0 or index == 0:
        return True
    return index * settings.write_time_ms < budget
