"""Client-side token bucket shared by every thread of one ServiceNow client.

ServiceNow enforces rate limits per user across the instance; a run that
respects its own budget gets fewer 429s and leaves room for other
integrations. Tokens are *reserved*: a caller that finds the bucket empty takes
a token on credit (the balance goes negative) and sleeps until it would have
been refilled, outside the lock. Waiters are therefore served in arrival order
and nobody spins.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; starts full."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._updated = clock()
        self.taken = 0  # tokens handed out
        self.waits = 0  # of them, how many had to wait
        self.waited_seconds = 0.0  # summed over the callers (they wait in parallel)

    def reserve(self, tokens: float = 1.0) -> float:
        """Take ``tokens`` now (on credit if need be); return how long the caller must wait."""
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._updated)
            self._updated = now
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._tokens -= tokens
            self.taken += 1
            if self._tokens >= 0:
                return 0.0
            wait = -self._tokens / self.rate
            self.waits += 1
            self.waited_seconds += wait
            return wait

    def acquire(self, tokens: float = 1.0) -> float:
        """Block until ``tokens`` are available; return the time waited."""
        wait = self.reserve(tokens)
        if wait > 0:
            self._sleep(wait)
        return wait

    @property
    def available(self) -> float:
        """Tokens in the bucket right now (negative while callers wait on credit)."""
        with self._lock:
            elapsed = max(0.0, self._clock() - self._updated)
            return min(self.burst, self._tokens + elapsed * self.rate)
