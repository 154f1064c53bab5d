"""Fault injection rules: which request misbehaves, how, and how often.

A rule matches on method, path prefix and table; it then lets ``skip`` matching
requests through, and fires on the following ones (each with ``probability``,
drawn from its own seeded generator so a run is reproducible) until it has
fired ``times`` times (``None`` = forever). The first rule that fires wins.

Kinds and what the server does when one fires:

- ``status``: answer ``status`` (e.g. 500/502/503/401/429) without applying the
  request; ``retry_after`` (seconds, or a ready header text) sets Retry-After,
  as an HTTP-date when ``retry_after_http_date``.
- ``malformed``: apply the request, answer 200 with a body that is not JSON.
- ``truncated``: apply the request, announce the full Content-Length, send half, close.
- ``latency``: sleep ``latency_ms`` then serve normally.
- ``timeout_after_write``: apply the request, then sleep ``latency_ms`` (longer
  than the client's timeout) before answering, or with ``close`` drop the
  connection without any answer.
- ``reset``: drop the connection (TCP RST) without applying or answering.
- ``short_page``: a list answers only ``records`` records (default half the
  limit), as ServiceNow does when ACLs hide rows of a page.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

FAULT_KINDS = frozenset({"status", "malformed", "truncated", "latency", "timeout_after_write", "reset", "short_page"})


@dataclass
class Fault:
    kind: str
    method: str | None = None
    path_prefix: str | None = None
    table: str | None = None
    times: int | None = 1
    skip: int = 0
    probability: float = 1.0
    seed: int | None = None
    status: int = 500
    retry_after: float | str | None = None
    retry_after_http_date: bool = False
    latency_ms: int = 0
    close: bool = False
    records: int | None = None
    fired: int = field(default=0, compare=False)
    seen: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r} (expected one of {sorted(FAULT_KINDS)})")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        if self.kind == "status" and not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status code")
        if self.times is not None and self.times < 0:
            raise ValueError("times must be >= 0 or null")
        if self.method is not None:
            self.method = self.method.upper()
        self._rng = random.Random(self.seed)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        allowed = {f.name for f in fields(cls)} - {"fired", "seen"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def matches(self, method: str, path: str, table: str | None) -> bool:
        if self.method is not None and self.method != method:
            return False
        if self.path_prefix is not None and not path.startswith(self.path_prefix):
            return False
        return self.table is None or self.table == table

    def roll(self) -> bool:
        """Count a matching request and decide whether this rule fires on it (call under a lock)."""
        if self.exhausted:
            return False
        self.seen += 1
        if self.seen <= self.skip:
            return False
        if self.probability < 1.0 and self._rng.random() >= self.probability:
            return False
        self.fired += 1
        return True


class FaultInjector:
    """The active rules, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def pick(self, method: str, path: str, table: str | None) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path, table) and fault.roll():
                    return fault
        return None
