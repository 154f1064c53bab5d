"""``sncli status`` as data (pure): what one screen shows, and what needs attention.

The gathering (:mod:`sncli.status.gather`) reads the offsets store, the
Pushgateway, the DLQ and the sink group's commits; this module only assembles
and judges. Something needs attention (exit 3) when:

- a table has no stored cursor yet, or its cursor's fingerprint no longer matches
  the config (a poll would refuse it);
- a table's freshness lag (now - its cursor's timestamp) is above ``max_lag_seconds``;
- the last run of a table (any command, as pushed) ended with exit 1 or 3;
- the DLQ holds records still pending for ``dlq replay``;
- a sink topic's group lag is above ``max_sink_lag`` (when set), or the topic is missing;
- a part could not be read (offsets store, Pushgateway, Kafka): the screen cannot vouch for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sncli.errors import UsageError
from sncli.status.pushed import LastRun

#: Exit codes of a run that mean it failed (75, lock contention, does not: the other run holds the table).
FAILED_EXIT_CODES = frozenset({1, 3})
DEFAULT_MAX_LAG_SECONDS = 3600.0
_KEY_SPLIT = re.compile(r"[/.:]")


@dataclass(frozen=True)
class Policy:
    """What counts as needing attention (``--max-lag``, ``--max-sink-lag``)."""

    max_lag_seconds: float = DEFAULT_MAX_LAG_SECONDS
    max_sink_lag: int | None = None  # None: the sink lag is shown, never judged


@dataclass(frozen=True)
class TableStatus:
    table: str
    cursor_timestamp: str | None
    cursor_sys_id: str | None
    lag_seconds: int | None
    fingerprint: str | None  # ok | mismatch | None (nothing stored)
    delete_cursor: str | None  # the sys_audit_delete stream's cursor timestamp, when one is stored
    runs: tuple[LastRun, ...] = ()
    polled: bool = True  # a source table (False: only a sink writes to it, it has no cursor)
    cursor_known: bool = True  # False: the offsets store could not be read

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table, "cursor": {"timestamp": self.cursor_timestamp, "sys_id": self.cursor_sys_id},
            "lag_seconds": self.lag_seconds, "fingerprint": self.fingerprint, "delete_cursor": self.delete_cursor,
            "runs": [run.to_json() for run in self.runs], "polled": self.polled,
        }


@dataclass(frozen=True)
class DlqStatus:
    topic: str
    pending_by_class: Mapping[str, int] | None  # None: could not be read

    @property
    def pending(self) -> int | None:
        return None if self.pending_by_class is None else sum(self.pending_by_class.values())

    def to_json(self) -> dict[str, Any]:
        by_class = None if self.pending_by_class is None else dict(sorted(self.pending_by_class.items()))
        return {"topic": self.topic, "pending": self.pending, "pending_by_class": by_class}


@dataclass(frozen=True)
class SinkLagStatus:
    topic: str
    table: str | None
    exists: bool
    lag: int | None  # None: unknown (not read, or a partition's end not learned)
    partitions: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "table": self.table, "exists": self.exists, "lag": self.lag,
                "partitions": self.partitions}


@dataclass(frozen=True)
class StatusReport:
    generated_at: datetime
    tables: list[TableStatus]
    dlq: list[DlqStatus]
    sink: list[SinkLagStatus]
    group_id: str | None
    problems: list[str] = field(default_factory=list)  # parts that could not be read
    attention: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 3 if self.attention else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tables": [t.to_json() for t in self.tables],
            "dlq": [d.to_json() for d in self.dlq],
            "sink": {"group_id": self.group_id, "topics": [s.to_json() for s in self.sink]},
            "problems": self.problems, "attention": self.attention, "exit_code": self.exit_code,
        }


def delete_cursor_key(table: str, keys: Iterable[str]) -> str | None:
    """The stored key of ``table``'s delete (``sys_audit_delete``) cursor, if one is stored.

    It lives beside the table's poll cursor under a key naming the table and the
    deletes (``incident/deletes``, ``deletes/incident``, ...); backfill windows aside.
    """
    for key in sorted(keys):
        if key == table or key.startswith("backfill/"):
            continue
        parts = _KEY_SPLIT.split(key)
        if table in parts and any("delete" in part for part in parts if part != table):
            return key
    return None


def _table_reasons(table: TableStatus, policy: Policy) -> list[str]:
    reasons = []
    if not table.polled or not table.cursor_known:
        pass
    elif table.cursor_timestamp is None:
        reasons.append(f"{table.table}: no cursor stored yet (never polled)")
    elif table.fingerprint == "mismatch":
        reasons.append(f"{table.table}: the stored cursor's fingerprint does not match the config")
    if table.lag_seconds is not None and table.lag_seconds > policy.max_lag_seconds:
        reasons.append(f"{table.table}: freshness lag {table.lag_seconds}s is above {policy.max_lag_seconds:.0f}s")
    for run in table.runs:
        if run.exit_code in FAILED_EXIT_CODES:
            where = f" window {run.window}" if run.window else ""
            reasons.append(f"{table.table}: last {run.command}{where} ended with exit {run.exit_code}")
    return reasons


def assess(
    tables: list[TableStatus], dlq: list[DlqStatus], sink: list[SinkLagStatus], problems: list[str], policy: Policy
) -> list[str]:
    """Why the deployment needs attention; empty when it does not."""
    reasons = [f"could not read {problem}" for problem in problems]
    for table in tables:
        reasons.extend(_table_reasons(table, policy))
    for queue in dlq:
        if queue.pending:
            classes = ", ".join(f"{n} {c}" for c, n in sorted((queue.pending_by_class or {}).items()))
            reasons.append(f"DLQ {queue.topic}: {queue.pending} record(s) pending ({classes})")
    for topic in sink:
        if not topic.exists:
            reasons.append(f"sink topic {topic.topic} does not exist")
        elif policy.max_sink_lag is not None and topic.lag is not None and topic.lag > policy.max_sink_lag:
            reasons.append(f"sink topic {topic.topic}: group lag {topic.lag} is above {policy.max_sink_lag}")
    return reasons


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)", re.ASCII)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h``, ``1d`` as seconds; ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ValueError(f"expected a duration like 3600, 30m, 2h or 1d, got {text!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def make_policy(max_lag: str, max_sink_lag: int | None) -> Policy:
    """The policy of the CLI options; a bad duration is a usage error (exit 2)."""
    try:
        seconds = parse_duration(max_lag)
    except ValueError as exc:
        raise UsageError(f"--max-lag: {exc}") from None
    return Policy(max_lag_seconds=seconds, max_sink_lag=max_sink_lag)


def duration_text(seconds: float | None) -> str:
    """``1d 2h``, ``5m 3s``, ``42s``: the two largest units; ``-`` when unknown."""
    if seconds is None:
        return "-"
    sign, rest = ("-", -int(seconds)) if seconds < 0 else ("", int(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count or (unit == "s" and not parts):
            parts.append(f"{count}{unit}")
    return sign + " ".join(parts[:2])
