"""What a DLQ record carries: the ``sncli.error.*`` headers, written and read back (pure).

A DLQ record is the original record (key, value, headers untouched) plus
``sncli.error.*`` headers that say why it failed and where it came from. Keeping
the original bytes means a replay resolves it exactly as the drain did, and
``sncli.error.topic`` tells the replay which ``sink.topics`` entry applies.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from sncli import logs

# The last two are the source's (sncli.source.deadletter): Kafka refused the record / its value could not be encoded.
ERROR_CLASSES = ("record", "permission", "not_found", "conflict", "ambiguous", "retries_exhausted", "decode",
                 "refused", "encode")
ErrorClass = Literal["record", "permission", "not_found", "conflict", "ambiguous", "retries_exhausted", "decode",
                     "refused", "encode"]
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
H_SIGNATURE = ERROR_PREFIX + "signature"  # v1:<key id>:<hex HMAC-SHA256>; see sncli.dlq.signing
ERROR_HEADERS = (H_CLASS, H_MESSAGE, H_STATUS, H_TOPIC, H_PARTITION, H_OFFSET, H_TABLE, H_ATTEMPTS, H_TIMESTAMP)
MAX_MESSAGE_CHARS = 1000
_SYS_ID = re.compile(r"[0-9a-f]{32}")
#: A header number: ASCII digits only (int() also takes '٣', str.isdigit() '²'), at most an int64's length.
_NUMBER = re.compile(r"[0-9]{1,19}")
#: ``sncli.error.partition`` / ``offset`` of a record that never was in Kafka (a source record Kafka refused).
NOT_IN_KAFKA = -1

Headers = Sequence[tuple[str, bytes | None]]
#: What a signature check makes of a record (see :class:`sncli.dlq.signing.DlqSigner`).
Verdict = Literal["valid", "unsigned", "invalid", "unchecked"]


@dataclass(frozen=True)
class DeadLetterReason:
    """Why a record failed for good; becomes the ``sncli.error.*`` headers.

    (Not :class:`sncli.servicenow.policy.Failure`, which is how one HTTP attempt failed.)
    """

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
    original: Headers, reason: DeadLetterReason, origin: Origin, *, now: datetime, replay_count: int = 0
) -> list[tuple[str, bytes | None]]:
    """The original headers without earlier sncli error/replay headers, then the new ones.

    Earlier ``sncli.error.*`` headers are dropped (not stacked) so a record
    replayed five times still has exactly one of each; ``replay_count`` says how
    often it went round.
    """
    kept = [(k, v) for k, v in original if not k.startswith(ERROR_PREFIX) and k != REPLAY_COUNT]
    added: list[tuple[str, bytes | None]] = [
        (H_CLASS, reason.error_class.encode()),
        (H_MESSAGE, clean_message(reason.message).encode()),
        (H_STATUS, b"" if reason.status is None else str(reason.status).encode()),
        (H_TOPIC, origin.topic.encode()),
        (H_PARTITION, str(origin.partition).encode()),
        (H_OFFSET, str(origin.offset).encode()),
        (H_TABLE, (reason.table or "").encode()),
        (H_ATTEMPTS, str(reason.attempts).encode()),
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
    pending: bool | None = None  # still to be handled by a replay (None: not asked, see sncli.dlq.select.View)
    problems: tuple[str, ...] = ()  # sncli headers that could not be parsed: shown, never replayed
    signature: Verdict | None = None  # what replay would make of it (None: not checked, see with_signatures)

    def original_headers(self) -> list[tuple[str, bytes | None]]:
        """The headers the record had before it was dead-lettered."""
        return [(k, v) for k, v in self.headers if not k.startswith(ERROR_PREFIX) and k != REPLAY_COUNT]

    def as_row(self) -> dict[str, Any]:
        """A flat, JSON-friendly row (inspect --json, export)."""
        return {
            "partition": self.partition,
            "offset": self.offset,
            "kafka_timestamp": ms_to_iso(self.kafka_timestamp_ms),
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
            "pending": self.pending,
            "problems": list(self.problems),
            "signature": self.signature,
            "key": _text_or_none(self.key),
            "value": _text_or_none(self.value),
            "headers": {k: _text_or_none(v) for k, v in self.original_headers()},
        }


def parse_entry(
    partition: int, offset: int, timestamp_ms: int | None, key: bytes | None, value: bytes | None, headers: Headers
) -> DlqEntry:
    """Read a DLQ record back; never raises.

    Missing headers degrade to empty values. Malformed numbers (anything but up
    to 19 ASCII digits; a partition and offset of exactly :data:`NOT_IN_KAFKA`
    mean a record that never was in Kafka, with no origin) are listed in
    ``problems``: the tools show such a record and replay refuses it.
    """
    found: dict[str, str] = {}
    for name, raw in headers:
        if raw is not None and (name.startswith(ERROR_PREFIX) or name == REPLAY_COUNT):
            found[name] = raw.decode("utf-8", "replace")
    problems: list[str] = []

    def number(name: str) -> int | None:
        text = found.get(name, "")
        if text == "":
            return None
        if _NUMBER.fullmatch(text):
            return int(text)
        problems.append(name)
        return None

    def position(name: str) -> int | None:
        return NOT_IN_KAFKA if found.get(name) == str(NOT_IN_KAFKA) else number(name)

    origin = None
    topic = found.get(H_TOPIC)
    origin_partition, origin_offset = position(H_PARTITION), position(H_OFFSET)
    if topic and origin_partition is not None and origin_offset is not None and NOT_IN_KAFKA not in (
            origin_partition, origin_offset):
        origin = Origin(topic, origin_partition, origin_offset)
    status, attempts, replay_count = number(H_STATUS), number(H_ATTEMPTS), number(REPLAY_COUNT)
    return DlqEntry(
        partition=partition,
        offset=offset,
        kafka_timestamp_ms=timestamp_ms,
        key=key,
        value=value,
        headers=tuple(headers),
        error_class=found.get(H_CLASS, ""),
        message=found.get(H_MESSAGE, ""),
        status=status,
        origin=origin,
        table=found.get(H_TABLE, ""),
        attempts=attempts or 0,
        dead_lettered_at=parse_iso(found.get(H_TIMESTAMP)),
        replay_count=replay_count or 0,
        sys_id=_guess_sys_id(key, value, headers),
        problems=tuple(problems),
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
        if _SYS_ID.fullmatch(text):
            return text
    return None


# --------------------------------------------------------------------------- times


def parse_iso(text: str | None) -> datetime | None:
    """An ISO 8601 time (``Z`` allowed; UTC unless it says otherwise), or None when it is not one."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: year 1 with a positive offset
        return None


def ms_to_datetime(ms: int | None) -> datetime | None:
    """A Kafka timestamp (milliseconds since the epoch) as a UTC time; None when there is none."""
    return None if ms is None or ms <= 0 else datetime.fromtimestamp(ms / 1000, UTC)


def ms_to_iso(ms: int | None) -> str | None:
    moment = ms_to_datetime(ms)
    return None if moment is None else format_timestamp(moment)


def _text_or_none(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "replace")
