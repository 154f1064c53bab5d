"""The in-flight gate: at most the controller's limit of ServiceNow calls out at once, for every thread.

:class:`Gate` is the thread-side of :class:`~sncli.servicenow.concurrency.AimdController`:
a caller takes a :class:`Ticket` before it sends (blocking while the limit is
reached or the server asked for a pause) and gives it back with the answer's
status and headers. A 429 / 503 is a refusal for load; ``Retry-After`` and
``X-RateLimit-Remaining: 0`` + ``X-RateLimit-Reset`` pause every new call (a
pause is cut to ``max_pause`` seconds: the retry budget bounds a call's wait
anyway). It also counts what a run reports: calls, refusals, the limit.

Every wait here is bounded: ~0.1 s slices, ended by the caller's cancel event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sncli.servicenow.backoff import parse_retry_after
from sncli.servicenow.concurrency import AimdController
from sncli.servicenow.errors import CallAbandoned

log = logging.getLogger(__name__)

#: Answers that say "too much load", not "this request is wrong".
OVERLOAD_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class Ticket:
    epoch: int
    in_flight: int  # calls out when this one was let through, itself included
    started: float


@dataclass(frozen=True)
class GateStats:
    calls: int
    refused: int  # answers 429 / 503
    limit: int
    maximum: int
    ceiling: int | None
    paused_seconds: float


class Gate:
    """Thread-safe: ``acquire`` before a call, ``release`` with its outcome."""

    def __init__(
        self,
        controller: AimdController,
        *,
        adaptive: bool = True,
        max_pause: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.controller = controller
        self.adaptive = adaptive  # False: a fixed limit of controller.maximum (429s still pause)
        if not adaptive:
            controller.limit = controller.maximum
        self.max_pause = max_pause
        self._clock = clock
        self._wall = wall
        self._cond = threading.Condition()
        self._in_flight = 0
        self._calls = 0
        self._refused = 0
        self._paused = 0.0

    def acquire(self, cancel: threading.Event | None = None) -> Ticket:
        """Wait for room (and for a pause to end); CallAbandoned once ``cancel`` is set."""
        with self._cond:
            while True:
                if cancel is not None and cancel.is_set():
                    raise CallAbandoned("given up while waiting for a free ServiceNow call slot")
                now = self._clock()
                pause = self.controller.paused_for(now)
                if pause <= 0 and self._in_flight < self.controller.limit:
                    self._in_flight += 1
                    return Ticket(self.controller.epoch, self._in_flight, now)
                self._cond.wait(min(0.1, pause) if pause > 0 else 0.1)

    def release(self, ticket: Ticket, *, status: int | None, headers: Mapping[str, str] | None = None,
                size: int = 1, sent: bool = True) -> None:
        """The call is over: ``status`` None = no answer (a transport failure, no signal either way).

        ``sent`` False: the ticket was not used (a batch sender found nothing to send).
        """
        now = self._clock()
        with self._cond:
            self._in_flight -= 1
            self._calls += 1 if sent else 0
            if status in OVERLOAD_STATUSES:
                self._refused += 1
                if self.adaptive:
                    self.controller.overloaded(epoch=ticket.epoch, in_flight=ticket.in_flight)
            elif status is not None and self.adaptive:
                self.controller.succeeded(epoch=ticket.epoch, latency=now - ticket.started, size=size)
            pause = self._pause_asked(headers) if headers is not None else None
            if pause is not None and pause > 0:
                pause = min(pause, self.max_pause)
                self._paused += pause
                self.controller.pause_until(now + pause)
                log.info("ServiceNow asked for a pause of %.2f s (status %s)", pause, status)
            self._cond.notify_all()

    def stats(self) -> GateStats:
        with self._cond:
            c = self.controller
            return GateStats(self._calls, self._refused, c.limit, c.maximum, c.ceiling, round(self._paused, 3))

    def _pause_asked(self, headers: Mapping[str, str]) -> float | None:
        """Seconds the server asked for: Retry-After, or the reset of an exhausted X-RateLimit window."""
        retry_after = parse_retry_after(headers.get("Retry-After"))
        remaining = (headers.get("X-RateLimit-Remaining") or "").strip()
        reset = (headers.get("X-RateLimit-Reset") or "").strip()
        until_reset = None
        if remaining == "0" and reset.replace(".", "", 1).isdigit():
            until_reset = max(0.0, float(reset) - self._wall())
        return retry_after if retry_after is not None else until_reset  # Retry-After is the finer of the two
