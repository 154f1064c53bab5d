"""How many calls may be in flight: AIMD with a remembered ceiling (pure, no I/O, no clock of its own).

An instance runs a few API transactions at once (the integration semaphore) and
answers 429 past it; more client workers than slots only earn 429s. The
controller finds the number the instance accepts and stays there:

- **additive increase**: every ``limit`` successful calls (about one round trip
  of them) the limit grows by one, never above ``maximum`` (``sink.workers``);
- **multiplicative decrease**: a call refused for load (429, 503) or a latency
  that rose well above the best seen for calls of that size multiplies the limit
  by ``decrease`` (never below 1), at most once per round of calls in flight
  (the answers of calls sent before a decrease say nothing about the new limit);
- **remembered ceiling**: a refusal at ``n`` calls in flight remembers ``n - 1``
  as the ceiling. Up to it the limit regrows at the additive pace; above it the
  controller probes only after ``probe_windows`` (32) rounds of success, and every
  refusal at the same ceiling doubles that wait (up to ``MAX_PROBE_WINDOWS``).
  A run against a fixed semaphore therefore sees a handful of 429s, not one per
  few dozen calls as plain AIMD's sawtooth would give.
- **the server's word**: ``Retry-After`` and ``X-RateLimit-Remaining: 0`` with
  ``X-RateLimit-Reset`` pause every new call until then (:meth:`pause_until`).

The caller (:class:`sncli.servicenow.gate.Gate`) owns the threads and the clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Where the limit starts: about one node's worth of integration semaphores.
INITIAL_LIMIT = 4
#: How far a latency may rise above the best seen (same call size) before it counts as congestion.
LATENCY_TOLERANCE = 3.0
#: Smoothing of the latency signal (one slow answer is noise, a trend is not).
LATENCY_SMOOTHING = 0.2
MAX_PROBE_WINDOWS = 256


@dataclass
class AimdController:
    """The in-flight limit; feed it every call's end with :meth:`succeeded` / :meth:`overloaded`."""

    maximum: int
    initial: int = INITIAL_LIMIT
    decrease: float = 0.75
    limit: int = 0
    ceiling: int | None = None  # the last level the instance refused above, minus one
    probe_windows: int = 32  # rounds of success before probing above the ceiling; doubles per refusal there
    epoch: int = 0  # bumped by every decrease: calls sent before it do not count against the new limit
    overloads: int = 0
    _credit: float = 0.0
    _best: dict[int, float] = field(default_factory=dict)  # size bucket -> best latency seen
    _smoothed: dict[int, float] = field(default_factory=dict)
    _paused_until: float = 0.0

    def __post_init__(self) -> None:
        if self.maximum < 1:
            raise ValueError("maximum must be >= 1")
        self.limit = max(1, min(self.maximum, self.initial)) if self.limit < 1 else min(self.limit, self.maximum)

    def succeeded(self, *, epoch: int, latency: float, size: int = 1) -> None:
        """A call sent in ``epoch`` was answered (not refused for load) after ``latency`` seconds."""
        bucket = max(0, int(math.log2(max(1, size))))
        best = min(self._best.get(bucket, latency), latency)
        self._best[bucket] = best
        smooth = self._smoothed.get(bucket, latency)
        smooth += LATENCY_SMOOTHING * (latency - smooth)
        self._smoothed[bucket] = smooth
        if best > 0 and smooth > LATENCY_TOLERANCE * best and epoch == self.epoch and self.limit > 1:
            self._cut()
            self._smoothed[bucket] = best * 2  # judge the new limit afresh, not by the old trend
            return
        self._grow()

    def overloaded(self, *, epoch: int, in_flight: int) -> None:
        """A call sent in ``epoch`` with ``in_flight`` calls out (itself included) was refused for load."""
        self.overloads += 1
        if epoch != self.epoch:
            return  # sent before the last decrease: that one already answered for it
        refused_at = max(1, in_flight - 1)
        if self.ceiling is not None and refused_at >= self.ceiling:
            self.probe_windows = min(MAX_PROBE_WINDOWS, self.probe_windows * 2)  # it failed here before
        self.ceiling = refused_at
        self._cut()
        self.limit = min(self.limit, refused_at)

    def pause_until(self, moment: float) -> None:
        """The server asked for no call before ``moment`` (Retry-After, X-RateLimit-Reset)."""
        self._paused_until = max(self._paused_until, moment)

    def paused_for(self, now: float) -> float:
        """Seconds until a call may be sent (0: now)."""
        return max(0.0, self._paused_until - now)

    def _cut(self) -> None:
        self.limit = max(1, math.floor(self.limit * self.decrease))
        self.epoch += 1
        self._credit = 0.0

    def _grow(self) -> None:
        if self.limit >= self.maximum:
            return
        self._credit += 1.0 / self.limit
        needed = 1.0 if self.ceiling is None or self.limit < self.ceiling else float(self.probe_windows)
        if self._credit >= needed:
            self._credit = 0.0
            self.limit += 1
