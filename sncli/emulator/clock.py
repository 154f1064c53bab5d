"""The emulator's clock: real time by default, but settable, freezable and advanceable.

Tests need many records to share one second (bulk updates) and need the
server's ``Date`` to sit where they want relative to the data, without
sleeping. Everything time-stamped by the emulator (records, ``Date`` headers,
journal entries) reads this clock; token expiry deliberately does not (it uses
the monotonic clock, as a client's token cache does).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

SN_FORMAT = "%Y-%m-%d %H:%M:%S"


def parse_time(value: datetime | str) -> datetime:
    """A UTC datetime from a datetime (naive = UTC) or 'YYYY-MM-DD HH:MM:SS' / ISO-8601 text."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    text = value.strip()
    try:
        parsed = datetime.strptime(text, SN_FORMAT)
    except ValueError:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def format_time(value: datetime) -> str:
    """ServiceNow's UTC glide_date_time text (one-second resolution)."""
    return value.astimezone(UTC).strftime(SN_FORMAT)


class EmulatorClock:
    def __init__(self, source: Callable[[], datetime] | None = None) -> None:
        self._source = source or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._offset = timedelta(0)
        self._frozen: datetime | None = None

    def now(self) -> datetime:
        with self._lock:
            if self._frozen is not None:
                return self._frozen
            return self._source() + self._offset

    def set(self, value: datetime | str) -> datetime:
        """Jump to ``value``; a frozen clock stays frozen there, a running one keeps running from it."""
        target = parse_time(value)
        with self._lock:
            if self._frozen is not None:
                self._frozen = target
            else:
                self._offset = target - self._source()
        return target

    def freeze(self, at: datetime | str | None = None) -> datetime:
        with self._lock:
            self._frozen = (
                parse_time(at)
                if at is not None
                else (self._frozen if self._frozen is not None else self._source() + self._offset)
            )
            return self._frozen

    def unfreeze(self) -> datetime:
        with self._lock:
            if self._frozen is not None:
                self._offset = self._frozen - self._source()
                self._frozen = None
            return self._source() + self._offset

    def advance(self, seconds: float) -> datetime:
        delta = timedelta(seconds=seconds)
        with self._lock:
            if self._frozen is not None:
                self._frozen += delta
                return self._frozen
            self._offset += delta
            return self._source() + self._offset

    @property
    def frozen(self) -> bool:
        return self._frozen is not None

    def reset(self) -> None:
        with self._lock:
            self._offset = timedelta(0)
            self._frozen = None

    def stamp(self) -> str:
        return format_time(self.now())
