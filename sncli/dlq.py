"""The dead letter queue: what a DLQ record carries, and reading it back.

A DLQ record is the original record (key, value, headers untouched) plus
``sncli.error.*`` headers that say why it failed and where it came from. Keeping
the original bytes means a replay resolves it exactly as the drain did, and
``sncli.error.topic`` tells the replay which ``sink.topics`` entry applies.

The first half of this module is pure (building headers, parsing them back,
filters); the I/O (bounded reads, replay, export) comes after and imports
Kafka lazily.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

from sncli import logs
from sncli.config import KafkaSettings
from sncli.errors import SncliError, UsageError

ERROR_CLASSES = ("record", "permission", "not_found", "conflict", "ambiguous", "retries_exhausted", "decode")
ErrorClass = Literal["record", "permission", "not_found", "conflict", "ambiguous", "retries_exhausted", "decode"]
ERROR_PREFIX = "sncli.error."
REPLAY_COUNT = "sncli.replay.count"
H_CLASS = ERROR_PREFIX + "class"
H_MESSAGE = ERROR_PREFIX + "message"
H_STATUS = ERROR_PREFIX + "status"
H_TOPIC = ERROR_PREFIX + "topic"
H_PARTITION = ERROR_PREFIX + "partition"
H_OFFSET = ERROR_PREFIX + "offset"
H_TABLE = ERROR_PREFIX + "table"
H_ATTEMPTS = ERROR_PREFIX + "attempts"
H_TIMESTAMP = ERROR_PREFIX + "timestamp"
ERROR_HEADERS = (H_CLASS, H_MESSAGE, H_STATUS, H_TOPIC, H_PARTITION, H_OFFSET, H_TABLE, H_ATTEMPTS, H_TIMESTAMP)
MAX_MESSAGE_CHARS = 1000
_SYS_ID = re.compile(r"^[0-9a-f]{32}$")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

Headers = Sequence[tuple[str, bytes | None]]


@dataclass(frozen=True)
class Failure:
    """Why a record failed for good; becomes the ``sncli.error.*`` headers."""

    error_class: ErrorClass
    message: str
    status: int | None = None
    table: str | None = None
    attempts: int = 1


@dataclass(frozen=True)
class Origin:
    """Where the record was first read from (kept across replays)."""

    topic: str
    partition: int
    offset: int


def clean_message(message: str) -> str:
    """One line, secrets masked, bounded: the message an operator reads in the DLQ."""
    text = " ".join(logs.redact(message).split())
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 3] + "..."
    return text


def format_timestamp(moment: datetime) -> str:
    moment = moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def dlq_headers(
    original: Headers, failure: Failure, origin: Origin, *, now: datetime, replay_count: int = 0
) -> list[tuple[str, bytes | None]]:
    """The original headers without earlier sncli error/replay headers, then the new ones.

    Earlier ``sncli.error.*`` headers are dropped (not stacked) so a record
    replayed five times still has exactly one of each; ``replay_count`` says how
    often it went round.
    """
    kept = [(k, v) for k, v in original if not k.startswith(ERROR_PREFIX) and k != REPLAY_COUNT]
    added: list[tuple[str, bytes | None]] = [
        (H_CLASS, failure.error_class.encode()),
        (H_MESSAGE, clean_message(failure.message).encode()),
        (H_STATUS, b"" if failure.status is None else str(failure.status).encode()),
        (H_TOPIC, origin.topic.encode()),
        (H_PARTITION, str(origin.partition).encode()),
        (H_OFFSET, str(origin.offset).encode()),
        (H_TABLE, (failure.table or "").encode()),
        (H_ATTEMPTS, str(failure.attempts).encode()),
        (H_TIMESTAMP, format_timestamp(now).encode()),
    ]
    if replay_count > 0:
        added.append((REPLAY_COUNT, str(replay_count).encode()))
    return kept + added


# --------------------------------------------------------------------------- reading back


@dataclass(frozen=True)
class DlqEntry:
    """One DLQ record as the tools show it."""

    partition: int
    offset: int
    kafka_timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    error_class: str
    message: str
    status: int | None
    origin: Origin | None
    table: str
    attempts: int
    dead_lettered_at: datetime | None
    replay_count: int
    sys_id: str | None

    def original_headers(self) -> list[tuple[str, bytes | None]]:
        """The headers the record had before it was dead-lettered."""
        return [(k, v) for k, v in self.headers if not k.startswith(ERROR_PREFIX) and k != REPLAY_COUNT]

    def as_row(self) -> dict[str, Any]:
        """A flat, JSON-friendly row (inspect --json, export)."""
        return {
            "partition": self.partition,
            "offset": self.offset,
            "kafka_timestamp": _ms_to_iso(self.kafka_timestamp_ms),
            "error_class": self.error_class,
            "error_message": self.message,
            "error_status": self.status,
            "error_topic": self.origin.topic if self.origin else None,
            "error_partition": self.origin.partition if self.origin else None,
            "error_offset": self.origin.offset if self.origin else None,
            "error_table": self.table or None,
            "error_attempts": self.attempts,
            "error_timestamp": format_timestamp(self.dead_lettered_at) if self.dead_lettered_at else None,
            "replay_count": self.replay_count,
            "sys_id": self.sys_id,
            "key": _text_or_none(self.key),
            "value": _text_or_none(self.value),
            "headers": {k: _text_or_none(v) for k, v in self.original_headers()},
        }


def parse_entry(
    partition: int, offset: int, timestamp_ms: int | None, key: bytes | None, value: bytes | None, headers: Headers
) -> DlqEntry:
    """Read a DLQ record back; missing or malformed headers degrade to empty values, never raise."""
    found: dict[str, str] = {}
    for name, raw in headers:
        if raw is not None and (name.startswith(ERROR_PREFIX) or name == REPLAY_COUNT):
            found[name] = raw.decode("utf-8", "replace")
    origin = None
    topic = found.get(H_TOPIC)
    partition_text, offset_text = found.get(H_PARTITION, ""), found.get(H_OFFSET, "")
    if topic and partition_text.isdigit() and offset_text.isdigit():
        origin = Origin(topic, int(partition_text), int(offset_text))
    return DlqEntry(
        partition=partition,
        offset=offset,
        kafka_timestamp_ms=timestamp_ms,
        key=key,
        value=value,
        headers=tuple(headers),
        error_class=found.get(H_CLASS, ""),
        message=found.get(H_MESSAGE, ""),
        status=_int_or_none(found.get(H_STATUS)),
        origin=origin,
        table=found.get(H_TABLE, ""),
        attempts=_int_or_none(found.get(H_ATTEMPTS)) or 0,
        dead_lettered_at=_parse_iso(found.get(H_TIMESTAMP)),
        replay_count=_int_or_none(found.get(REPLAY_COUNT)) or 0,
        sys_id=_guess_sys_id(key, value, headers),
    )


def _guess_sys_id(key: bytes | None, value: bytes | None, headers: Headers) -> str | None:
    """For display only: the value's sys_id, else the sn.sys_id header, else a sys_id-shaped key."""
    if value is not None and value[:1] == b"{":
        try:
            decoded = orjson.loads(value)
        except orjson.JSONDecodeError:
            decoded = None
        if isinstance(decoded, dict) and isinstance(decoded.get("sys_id"), str) and decoded["sys_id"]:
            return str(decoded["sys_id"])
    for name, raw in reversed(list(headers)):
        if name == "sn.sys_id" and raw:
            return raw.decode("utf-8", "replace")
    if key is not None:
        text = key.decode("utf-8", "replace")
        if _SYS_ID.match(text):
            return text
    return None


# --------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class Filters:
    table: str | None = None
    error_class: str | None = None
    since: datetime | None = None

    def matches(self, entry: DlqEntry) -> bool:
        if self.table is not None and entry.table != self.table:
            return False
        if self.error_class is not None and entry.error_class != self.error_class:
            return False
        if self.since is not None:
            when = entry.dead_lettered_at or _ms_to_datetime(entry.kafka_timestamp_ms)
            if when is None or when < self.since:
                return False
        return True

    def describe(self) -> str:
        parts = []
        if self.table is not None:
            parts.append(f"table={self.table}")
        if self.error_class is not None:
            parts.append(f"class={self.error_class}")
        if self.since is not None:
            parts.append(f"since={format_timestamp(self.since)}")
        return ",".join(parts)


def make_filters(table: str | None, error_class: str | None, since: str | None, *, now: datetime) -> Filters:
    """Validate the CLI filters (a bad one is a usage error, exit 2)."""
    if error_class is not None and error_class not in ERROR_CLASSES:
        raise UsageError(f"--error-class must be one of {', '.join(ERROR_CLASSES)}, got {error_class!r}")
    return Filters(table=table, error_class=error_class, since=None if since is None else parse_since(since, now=now))


def parse_since(text: str, *, now: datetime) -> datetime:
    """``2h`` / ``30m`` / ``7d`` ago, or an ISO / ``YYYY-MM-DD HH:MM:SS`` time (UTC unless it says otherwise)."""
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        return now - timedelta(seconds=float(relative.group(1)) * _UNITS[relative.group(2)])
    parsed = _parse_iso(value)
    if parsed is None:
        raise UsageError(f"--since must be like 2h, 7d, 2024-05-01 or 2024-05-01T12:00:00Z, got {text!r}")
    return parsed


def _parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _int_or_none(text: str | None) -> int | None:
    if text is None or not text.strip().lstrip("-").isdigit():
        return None
    return int(text)


def _ms_to_datetime(ms: int | None) -> datetime | None:
    return None if ms is None or ms <= 0 else datetime.fromtimestamp(ms / 1000, UTC)


def _ms_to_iso(ms: int | None) -> str | None:
    moment = _ms_to_datetime(ms)
    return None if moment is None else format_timestamp(moment)


def _text_or_none(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "replace")


# --------------------------------------------------------------------------- writing (I/O)


class DlqWriter:
    """Produces DLQ records; each ``send`` reports its broker acknowledgement (or failure) by callback.

    The drain must know *which* record was acknowledged before it may commit
    past it, so every record carries its own delivery callback (PageProducer
    only reports whole batches). Callbacks run on the thread that calls
    :meth:`poll` or :meth:`flush` (the drain's main loop).

    The topic is checked (and created when ``kafka.topics.create`` allows) on
    first use, not at start: a drain whose records all succeed never needs it,
    and when it is missing the run fails at the first record that needed it,
    with everything before that record committed.
    """

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        from confluent_kafka import Producer

        from sncli.kafka.conf import delivery_timeout_ms, producer_config

        config = producer_config(kafka)
        self.timeout_seconds = delivery_timeout_ms(config) / 1000.0
        config["error_cb"] = self._on_error
        self._producer = Producer(config)
        self._produce: Any = self._producer.produce
        self._kafka = kafka
        self.topic = topic
        self._lock = threading.Lock()
        self._checked = False
        self._unusable: str | None = None
        self._last_broker_error: str | None = None

    def _on_error(self, err: Any) -> None:
        self._last_broker_error = err.str()

    def _check_topic(self) -> str | None:
        with self._lock:
            if not self._checked:
                self._checked = True
                from sncli.kafka.admin import ensure_topics

                try:
                    ensure_topics(self._kafka, {self.topic: None})
                except SncliError as exc:
                    self._unusable = f"DLQ topic {self.topic}: {exc}"
            return self._unusable

    def send(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes | None]],
        on_done: Callable[[str | None], None],
    ) -> None:
        """Queue one DLQ record; ``on_done(None)`` once acknowledged, ``on_done(error)`` if it cannot be."""
        problem = self._check_topic()
        if problem is not None:
            on_done(problem)
            return

        def delivered(err: Any, _msg: Any) -> None:
            on_done(None if err is None else f"DLQ topic {self.topic}: {err.str()}")

        deadline = time.monotonic() + self.timeout_seconds
        while True:
            try:
                self._produce(self.topic, value, key, headers=headers, on_delivery=delivered)
                return
            except BufferError:
                if time.monotonic() > deadline:
                    on_done(f"DLQ topic {self.topic}: local queue full for {self.timeout_seconds:.0f}s")
                    return
                self._producer.poll(0.05)
            except Exception as exc:  # KafkaException: message too large, fatal producer state
                on_done(f"DLQ topic {self.topic}: {_kafka_text(exc)}")
                return

    def poll(self, timeout: float = 0.0) -> None:
        self._producer.poll(timeout)

    def flush(self, timeout: float | None = None) -> int:
        """Wait for outstanding acknowledgements; return how many are still missing."""
        wait = self.timeout_seconds + 5.0 if timeout is None else timeout
        remaining: int = self._producer.flush(wait)
        return remaining

    @property
    def broker_hint(self) -> str:
        return f" (last broker error: {self._last_broker_error})" if self._last_broker_error else ""


def _kafka_text(exc: BaseException) -> str:
    args = getattr(exc, "args", ())
    if args and hasattr(args[0], "str"):
        return str(args[0].str())
    return str(exc) or type(exc).__name__
