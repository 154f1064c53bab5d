"""Retry timing, as pure functions: the backoff schedule and ``Retry-After`` parsing.

Full jitter (a uniform draw between 0 and the exponential ceiling) spreads the
retries of many workers that failed together, so they do not come back as a
synchronized wave and knock an overloaded instance over again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Delay ceilings ``initial * 2**(n-1)`` capped at ``maximum`` (seconds), drawn with full jitter."""

    initial: float
    maximum: float

    @classmethod
    def from_ms(cls, initial_ms: int, max_ms: int) -> BackoffPolicy:
        return cls(initial=initial_ms / 1000.0, maximum=max_ms / 1000.0)

    def ceiling(self, retry: int) -> float:
        """The upper bound of the delay before retry number ``retry`` (1-based)."""
        if retry < 1:
            raise ValueError("retry numbers start at 1")
        # Cap the exponent: 2**1100 would overflow a float long before it matters.
        exponent = min(retry - 1, 64)
        return min(self.maximum, self.initial * (2.0**exponent))

    def delay(self, retry: int, rng: random.Random) -> float:
        """A delay drawn uniformly from [0, ceiling(retry)]."""
        return rng.uniform(0.0, self.ceiling(retry))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date); None if unusable.

    ``now`` should be the answer's own ``Date`` header when it has one: comparing
    the server's Retry-After date with the server's clock is immune to local
    clock skew. A date in the past means "retry now" (0).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.replace(".", "", 1).isdigit():
        seconds = float(text)
        return seconds
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # RFC 9110 dates are GMT
    reference = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - reference).total_seconds())


def parse_http_date(value: str | None) -> datetime | None:
    """An HTTP ``Date`` header as an aware UTC datetime, None when absent or unparsable."""
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)
