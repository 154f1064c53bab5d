"""The dead letter queue: what a DLQ record carries, and reading it back.

A DLQ record is the original record (key, value, headers untouched) plus
``sncli.error.*`` headers that say why it failed and where it came from. Keeping
the original bytes means a replay resolves it exactly as the drain did, and
``sncli.error.topic`` tells the replay which ``sink.topics`` entry applies.

That header hands out the rights of a sink topic (its table, routing, deletes),
so replay must not take it from whoever can produce to the DLQ: every record
sncli writes there is signed (:class:`DlqSigner`, an HMAC over the key, the
value and every header, with ``sink.dlq_signing_key``) and replay writes only
records whose signature checks out, unless the operator vouches for unsigned
ones of one named topic (``--trust-unsigned --topic``).

The first half of this module is pure (building headers, parsing them back,
filters); the I/O (bounded reads, replay, export) comes after and imports
Kafka lazily.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from sncli import logs
from sncli.config import KafkaSettings, Settings, SinkSettings
from sncli.errors import SncliError, UsageError
from sncli.private_files import create_private, make_dirs

if TYPE_CHECKING:
    from sncli.metrics import RunMetrics
    from sncli.sink.drain import DrainSummary
    from sncli.sink.resolve import InRecord

log = logging.getLogger(__name__)

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
H_SIGNATURE = ERROR_PREFIX + "signature"  # v1:<key id>:<hex HMAC-SHA256>; see DlqSigner
ERROR_HEADERS = (H_CLASS, H_MESSAGE, H_STATUS, H_TOPIC, H_PARTITION, H_OFFSET, H_TABLE, H_ATTEMPTS, H_TIMESTAMP)
MAX_MESSAGE_CHARS = 1000
_SYS_ID = re.compile(r"[0-9a-f]{32}")
#: A header number: ASCII digits only (int() also takes '٣', str.isdigit() '²'), at most an int64's length.
_NUMBER = re.compile(r"[0-9]{1,19}")
#: ``sncli.error.partition`` / ``offset`` of a record that never was in Kafka (a source record Kafka refused).
NOT_IN_KAFKA = -1
_SIGNATURE = re.compile(r"v1:(?P<kid>[0-9a-f]{16}):(?P<mac>[0-9a-f]{64})")
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.ASCII)
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


# --------------------------------------------------------------------------- signing

Verdict = Literal["valid", "unsigned", "invalid", "unchecked"]


@dataclass(frozen=True)
class DlqSigner:
    """Signs DLQ records and checks them: who can produce to the DLQ gains no sink topic's rights.

    The signature is an HMAC-SHA256, keyed with ``sink.dlq_signing_key``, over the
    record's key, its value and every header in order except the signature
    itself: the ``sncli.error.*`` headers replay trusts (topic, partition, offset,
    table, class, ...) and the original ones resolve reads (``sn.table``,
    ``sn.sys_id``). Each part is framed with its length, so no bytes can move from
    one part to another. The header carries a key id (derived from the key, not
    revealing it) so a rotated key still verifies as ``dlq_previous_signing_key``.

    ``keys[0]`` signs; every key verifies. No key: :meth:`sign` leaves the record
    unsigned and :meth:`verify` answers ``unchecked``.
    """

    keys: tuple[bytes, ...] = ()

    @classmethod
    def of(cls, sink: SinkSettings) -> DlqSigner:
        found = (sink.dlq_signing_key, sink.dlq_previous_signing_key)
        return cls(tuple(k.get_secret_value().strip().encode() for k in found if k is not None))

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def sign(self, key: bytes | None, value: bytes | None, headers: Headers) -> list[tuple[str, bytes | None]]:
        """``headers`` without any earlier signature, then this record's (unchanged without a key)."""
        kept = [(k, v) for k, v in headers if k != H_SIGNATURE]
        if not self.keys:
            return kept
        secret = self.keys[0]
        signature = f"v1:{_key_id(secret)}:{_mac(secret, key, value, kept).hex()}"
        return [*kept, (H_SIGNATURE, signature.encode())]

    def verify(self, key: bytes | None, value: bytes | None, headers: Headers) -> Verdict:
        """``valid`` only when the signature matches the record as read, under a configured key."""
        signatures = [v for k, v in headers if k == H_SIGNATURE]
        if not signatures:
            return "unsigned"
        if not self.keys:
            return "unchecked"
        raw = signatures[0]
        if len(signatures) != 1 or raw is None:
            return "invalid"
        match = _SIGNATURE.fullmatch(raw.decode("ascii", "replace"))
        if match is None:
            return "invalid"
        for secret in self.keys:
            if hmac.compare_digest(_key_id(secret), match.group("kid")):
                expected = _mac(secret, key, value, [(k, v) for k, v in headers if k != H_SIGNATURE]).hex()
                return "valid" if hmac.compare_digest(expected, match.group("mac")) else "invalid"
        return "invalid"  # signed with a key this config does not have


def _key_id(secret: bytes) -> str:
    return hmac.new(secret, b"sncli-dlq-key-id", hashlib.sha256).hexdigest()[:16]


def _mac(secret: bytes, key: bytes | None, value: bytes | None, headers: Headers) -> bytes:
    mac = hmac.new(secret, b"sncli-dlq-v1\n", hashlib.sha256)

    def part(raw: bytes | None) -> None:
        if raw is None:
            mac.update(b"\x00")
        else:
            mac.update(b"\x01" + len(raw).to_bytes(8, "big"))
            mac.update(raw)

    part(key)
    part(value)
    mac.update(len(headers).to_bytes(8, "big"))
    for name, raw in headers:
        part(name.encode("utf-8", "surrogateescape"))
        part(raw)
    return mac.digest()


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
    pending: bool | None = None  # still to be handled by a replay (None: not asked, see View)
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
        dead_lettered_at=_parse_iso(found.get(H_TIMESTAMP)),
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


# --------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class Filters:
    """Which DLQ records a tool acts on; ``since_text`` keeps the option as typed, for messages."""

    table: str | None = None
    error_class: str | None = None
    since: datetime | None = None
    topic: str | None = None  # the original (source) topic
    since_text: str | None = None

    def matches(self, entry: DlqEntry) -> bool:
        if self.table is not None and entry.table != self.table:
            return False
        if self.error_class is not None and entry.error_class != self.error_class:
            return False
        if self.topic is not None and (entry.origin is None or entry.origin.topic != self.topic):
            return False
        if self.since is not None:
            when = entry.dead_lettered_at or _ms_to_datetime(entry.kafka_timestamp_ms)
            if when is None or when < self.since:
                return False
        return True

    @property
    def empty(self) -> bool:
        return self.table is None and self.error_class is None and self.since is None and self.topic is None

    def describe(self) -> str:
        """A stable text of the filters as given (``--since 2h`` stays ``since=2h``)."""
        parts = []
        if self.topic is not None:
            parts.append(f"topic={self.topic}")
        if self.table is not None:
            parts.append(f"table={self.table}")
        if self.error_class is not None:
            parts.append(f"class={self.error_class}")
        if self.since is not None:
            parts.append(f"since={self.since_text or format_timestamp(self.since)}")
        return ",".join(parts)


def make_filters(
    table: str | None, error_class: str | None, since: str | None, *, now: datetime, topic: str | None = None
) -> Filters:
    """Validate the CLI filters (a bad one is a usage error, exit 2)."""
    if error_class is not None and error_class not in ERROR_CLASSES:
        raise UsageError(f"--error-class must be one of {', '.join(ERROR_CLASSES)}, got {error_class!r}")
    return Filters(
        table=table,
        error_class=error_class,
        since=None if since is None else parse_since(since, now=now),
        topic=topic,
        since_text=None if since is None else since.strip(),
    )


def parse_since(text: str, *, now: datetime) -> datetime:
    """``2h`` / ``30m`` / ``7d`` ago, or an ISO / ``YYYY-MM-DD HH:MM:SS`` time (UTC unless it says otherwise)."""
    value = text.strip()
    relative = _RELATIVE.fullmatch(value)
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
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: year 1 with a positive offset
        return None


def _ms_to_datetime(ms: int | None) -> datetime | None:
    return None if ms is None or ms <= 0 else datetime.fromtimestamp(ms / 1000, UTC)


def _ms_to_iso(ms: int | None) -> str | None:
    moment = _ms_to_datetime(ms)
    return None if moment is None else format_timestamp(moment)


def _text_or_none(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "replace")


# --------------------------------------------------------------------------- pending or history


@dataclass(frozen=True)
class ReplayProgress:
    """How far a replay group got in each DLQ partition: the records below it are history.

    A replay finishes every record it reads before its commit passes it: the record
    was written to ServiceNow (fixed), or produced again at the DLQ's end, failed
    again with ``sncli.replay.count`` raised or carried forward unchanged (a copy
    that now stands for it). Either way a record below the group's commit is no
    longer pending, and every copy made for it lies past the end that replay read
    to, so at or past the commit. A replay killed after a copy was acknowledged but
    before its commit leaves both pending until the next replay (which re-reads
    the original: at-least-once, as the sink).
    """

    group: str
    committed: Mapping[int, int]  # partition -> the offset the next replay starts at (absent: nothing replayed)

    def start(self, partition: int) -> int:
        return self.committed.get(partition, 0)

    def pending(self, entry: DlqEntry) -> bool:
        return entry.offset >= self.start(entry.partition)


@dataclass(frozen=True)
class View:
    """Which DLQ records a listing (inspect, export) shows.

    ``replay_group`` None: every record, not marked (no replay group is asked).
    Otherwise only the records still pending for that group's replays, or with
    ``history`` every record, each marked pending or not.
    """

    replay_group: str | None = None
    history: bool = False


def mark_pending(entries: Iterable[DlqEntry], progress: ReplayProgress, *, history: bool) -> Iterator[DlqEntry]:
    """The entries marked pending or not; without ``history`` only the pending ones."""
    for entry in entries:
        pending = progress.pending(entry)
        if pending or history:
            yield replace(entry, pending=pending)


# --------------------------------------------------------------------------- writing (I/O)


#: librdkafka properties that only consumers know (CONFIGURATION.md, scope "C").
CONSUMER_ONLY_KEYS = frozenset({
    "group.id", "group.instance.id", "partition.assignment.strategy", "session.timeout.ms",
    "heartbeat.interval.ms", "group.protocol.type", "group.protocol", "group.remote.assignor",
    "coordinator.query.interval.ms", "max.poll.interval.ms", "enable.auto.commit", "auto.commit.interval.ms",
    "enable.auto.offset.store", "queued.min.messages", "queued.max.messages.kbytes", "fetch.wait.max.ms",
    "fetch.queue.backoff.ms", "fetch.message.max.bytes", "max.partition.fetch.bytes", "fetch.max.bytes",
    "fetch.min.bytes", "fetch.error.backoff.ms", "isolation.level", "enable.partition.eof", "check.crcs",
    "auto.offset.reset",
})


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

    Every record is signed with ``signer`` (see :class:`DlqSigner`) unless the
    caller passes ``sign=False``: only a record re-queued unchanged is sent as it
    was read, so an unverified record is never given a valid signature.
    """

    def __init__(self, kafka: KafkaSettings, topic: str, *, signer: DlqSigner) -> None:
        from confluent_kafka import Producer

        from sncli.kafka.conf import delivery_timeout_ms, producer_config

        # kafka.client serves consumers and producers alike; consumer-only keys would make
        # librdkafka warn (CONFWARN) on every run.
        config = {k: v for k, v in producer_config(kafka).items() if k not in CONSUMER_ONLY_KEYS}
        self.timeout_seconds = delivery_timeout_ms(config) / 1000.0
        config["error_cb"] = self._on_error
        self._producer = Producer(config)
        self._produce: Any = self._producer.produce
        self._kafka = kafka
        self.topic = topic
        self.signer = signer
        self._warned_unsigned = False
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
        *,
        sign: bool = True,
    ) -> None:
        """Queue one DLQ record; ``on_done(None)`` once acknowledged, ``on_done(error)`` if it cannot be.

        ``sign=False``: the headers are sent as given (a record carried forward unchanged).
        """
        problem = self._check_topic()
        if problem is not None:
            on_done(problem)
            return
        if sign:
            if not self.signer.enabled and not self._warned_unsigned:
                self._warned_unsigned = True
                log.warning("sink.dlq_signing_key is not set: DLQ records are written unsigned, and dlq replay "
                            "writes them only with --trust-unsigned --topic")
            headers = self.signer.sign(key, value, headers)

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


# --------------------------------------------------------------------------- reading (I/O)

#: A bounded read gives up when no record or end-of-partition event arrived for this long.
READ_STALL_SECONDS = 60.0


def read_dlq(
    kafka: KafkaSettings,
    topic: str,
    *,
    start: Mapping[int, int] | None = None,
    stall_seconds: float = READ_STALL_SECONDS,
) -> Iterator[DlqEntry]:
    """Every record of the DLQ topic from the beginning (or ``start[partition]``) up to its end as seen at start.

    Reads by assignment (no group join, nothing committed). The end of each
    partition comes from fetch responses (partition EOF / fetch-cached high
    watermark, :mod:`sncli.kafka.consumer`), never a ListOffsets answer, so the
    read is complete on Tansu as on Kafka. A missing topic reads as empty.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from sncli.kafka.admin import existing_topics
    from sncli.kafka.conf import consumer_config
    from sncli.kafka.consumer import EndTracker, Polled, track
    from sncli.kafka.errors import KafkaError

    partitions = existing_topics(kafka).get(topic)
    if not partitions:
        return
    consumer = Consumer(consumer_config(kafka, f"sncli-dlq-reader-{uuid.uuid4().hex[:12]}"))
    try:
        ends = EndTracker()
        ends.assign((topic, p) for p in range(partitions))
        first = start or {}
        consumer.assign([TopicPartition(topic, p, first.get(p, OFFSET_BEGINNING)) for p in range(partitions)])
        last_progress = time.monotonic()
        last_error: str | None = None
        while not ends.all_finished():
            msg: Any = consumer.poll(0.2)
            if msg is None:
                if time.monotonic() - last_progress > stall_seconds:
                    hint = f" (last error: {last_error})" if last_error else ""
                    raise KafkaError(f"reading {topic}: no progress for {stall_seconds:.0f}s{hint}")
                continue
            kind = track(consumer, ends, msg)
            if kind is Polled.ERROR:
                last_error = msg.error().str()
                continue
            last_progress = time.monotonic()
            if kind is Polled.DATA:
                timestamp_type, timestamp_ms = msg.timestamp()
                yield parse_entry(
                    msg.partition(), msg.offset(), timestamp_ms if timestamp_type else None,
                    msg.key(), msg.value(), msg.headers() or [],
                )
    finally:
        consumer.close()


def read_replay_progress(kafka: KafkaSettings, topic: str, group: str, partitions: int) -> ReplayProgress:
    """The replay group's committed offsets on ``topic`` (an OffsetFetch: no group join, nothing committed)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from sncli.kafka.conf import consumer_config
    from sncli.kafka.consumer import COMMITTED_TIMEOUT_SECONDS
    from sncli.kafka.errors import KafkaError

    # Never assigned nor subscribed: closing it cannot commit, whatever kafka.client says.
    consumer = Consumer(consumer_config(kafka, group, enable_auto_commit=False))
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)],
                                   timeout=COMMITTED_TIMEOUT_SECONDS)
    except KafkaException as exc:
        raise KafkaError(f"reading the progress of replay group {group} on {topic}: {_kafka_text(exc)}") from None
    finally:
        consumer.close()
    committed: dict[int, int] = {}
    for tp in found:
        if tp.error is not None:
            raise KafkaError(f"reading the progress of replay group {group} on {topic}[{tp.partition}]: "
                             f"{tp.error.str()}")
        if tp.offset >= 0:  # negative: the group never committed this partition
            committed[tp.partition] = tp.offset
    return ReplayProgress(group, committed)


def read_view(kafka: KafkaSettings, topic: str, view: View) -> Iterator[DlqEntry]:
    """The DLQ records ``view`` selects; the pending view reads from the replay group's commit on."""
    if view.replay_group is None:
        yield from read_dlq(kafka, topic)
        return
    from sncli.kafka.admin import existing_topics

    partitions = existing_topics(kafka).get(topic)
    if not partitions:
        return
    progress = read_replay_progress(kafka, topic, view.replay_group, partitions)
    start = None if view.history else dict(progress.committed)
    yield from mark_pending(read_dlq(kafka, topic, start=start), progress, history=view.history)


def with_signatures(entries: Iterable[DlqEntry], signer: DlqSigner | None) -> Iterator[DlqEntry]:
    """The entries with their signature checked (``valid``, ``unsigned``, ...); unchanged without a signer."""
    for entry in entries:
        yield entry if signer is None else replace(
            entry, signature=signer.verify(entry.key, entry.value, entry.headers))


def inspect_dlq(
    kafka: KafkaSettings, topic: str, filters: Filters, limit: int, *, view: View | None = None,
    signer: DlqSigner | None = None,
) -> list[DlqEntry]:
    """The ``limit`` most recently dead-lettered records that match, oldest first."""
    newest: list[tuple[tuple[str, int, int], DlqEntry]] = []
    for entry in with_signatures(read_view(kafka, topic, view or View()), signer):
        if not filters.matches(entry):
            continue
        when = format_timestamp(entry.dead_lettered_at) if entry.dead_lettered_at else ""
        item = ((when, entry.partition, entry.offset), entry)
        if len(newest) < limit:
            heapq.heappush(newest, item)
        elif item[0] > newest[0][0]:
            heapq.heapreplace(newest, item)
    return [entry for _key, entry in sorted(newest, key=lambda pair: pair[0])]


# --------------------------------------------------------------------------- export


EXPORT_FORMATS = ("parquet", "jsonl")


def export_dlq(
    kafka: KafkaSettings,
    topic: str,
    filters: Filters,
    output: Path,
    fmt: str,
    *,
    view: View | None = None,
    batch_rows: int = 1000,
    signer: DlqSigner | None = None,
) -> int:
    """Write the matching DLQ records, one row each with the error headers as columns; returns the count.

    The file is written next to its final name and renamed into place at the end,
    so a failed export never leaves a half-written file that looks complete.
    The file holds whole records: it is created 0600 (new directories 0700).
    """
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    make_dirs(output.parent)
    partial = output.with_name(output.name + ".partial")
    entries = (e for e in with_signatures(read_view(kafka, topic, view or View()), signer) if filters.matches(e))
    try:
        count = _write_parquet(entries, partial, batch_rows) if fmt == "parquet" else _write_jsonl(entries, partial)
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return count


def _export_row(entry: DlqEntry) -> dict[str, Any]:
    row = entry.as_row()
    row["headers"] = orjson.dumps(row["headers"]).decode()
    return row


def _write_jsonl(entries: Iterable[DlqEntry], path: Path) -> int:
    count = 0
    with open(create_private(path), "wb") as out:
        for entry in entries:
            row = entry.as_row()
            for name, raw in (("key", entry.key), ("value", entry.value)):
                row[name], row[f"{name}_encoding"] = _text_or_base64(raw)
            out.write(orjson.dumps(row) + b"\n")
            count += 1
    return count


def _text_or_base64(raw: bytes | None) -> tuple[str | None, str | None]:
    if raw is None:
        return None, None
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def _parquet_schema() -> Any:
    import pyarrow as pa

    ts = pa.timestamp("ms", tz="UTC")
    return pa.schema([
        ("partition", pa.int32()), ("offset", pa.int64()), ("kafka_timestamp", ts),
        ("error_class", pa.string()), ("error_message", pa.string()), ("error_status", pa.int32()),
        ("error_topic", pa.string()), ("error_partition", pa.int32()), ("error_offset", pa.int64()),
        ("error_table", pa.string()), ("error_attempts", pa.int32()), ("error_timestamp", ts),
        ("replay_count", pa.int32()), ("sys_id", pa.string()), ("pending", pa.bool_()),
        ("problems", pa.list_(pa.string())), ("signature", pa.string()),
        ("key", pa.binary()), ("value", pa.binary()), ("headers", pa.string()),
    ])


def _write_parquet(entries: Iterable[DlqEntry], path: Path, batch_rows: int) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _parquet_schema()
    count = 0
    batch: list[dict[str, Any]] = []
    with open(create_private(path), "wb") as out, pq.ParquetWriter(out, schema) as writer:
        for entry in entries:
            row = _export_row(entry)
            row["key"], row["value"] = entry.key, entry.value
            row["kafka_timestamp"] = entry.kafka_timestamp_ms and datetime.fromtimestamp(
                entry.kafka_timestamp_ms / 1000, UTC)
            row["error_timestamp"] = entry.dead_lettered_at
            batch.append(row)
            count += 1
            if len(batch) >= batch_rows:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        if batch or count == 0:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    return count


# --------------------------------------------------------------------------- replay


def replay_group(sink_group: str, explicit: str | None = None) -> str:
    """The consumer group replay progress is committed in: one per DLQ, whatever the filters."""
    return explicit or f"{sink_group}-dlq-replay"


def run_replay(
    settings: Settings,
    filters: Filters,
    *,
    group_id: str | None = None,
    dry_run: bool = False,
    workers: int | None = None,
    stop: threading.Event | None = None,
    metrics: RunMetrics | None = None,
    trust_unsigned: bool = False,
    drop_unsigned: bool = False,
) -> DrainSummary:
    """Re-attempt the selected DLQ records through the sink's resolve/write path.

    Successes are counted; failures go to the DLQ again with ``sncli.replay.count``
    incremented and their original topic/partition/offset kept. Progress is
    committed in the replay group (:func:`replay_group`), so a second replay
    resumes after the first and never repeats finished work. Records
    re-dead-lettered by this run land past the end seen at start: not re-read.

    Records the filters do not select are *carried forward*: produced again,
    unchanged, at the end of the DLQ (acknowledged before the commit passes
    them). So one group serves every filter: a replay of ``--table incident``
    never hides the problem records from a later replay, and a later unfiltered
    replay never re-sends (and duplicates) what an earlier filtered one wrote.

    A selected record is written only when its signature checks out
    (:class:`DlqSigner`). Refused records are counted in ``summary.refused`` (exit
    3) and never written: an unsigned one is carried forward (it may predate the
    key: ``trust_unsigned`` with a ``--topic`` filter replays those), or passed
    over with ``drop_unsigned`` (junk someone produced to the DLQ would otherwise
    be carried by every replay); one with a wrong signature or unparseable
    headers is passed over (committed past; still in ``dlq inspect --all``).
    """
    from sncli.sink.drain import DrainOptions, Job, SinkRun
    from sncli.sink.resolve import InRecord

    signer = DlqSigner.of(settings.sink)
    check_replay_trust(signer, filters, trust_unsigned=trust_unsigned)
    topics = {t.topic: t for t in settings.sink.topics}
    dlq_topic = settings.sink.dlq_topic
    group = replay_group(settings.sink.group_id, group_id)

    def refuse(msg: Any, entry: DlqEntry, reason: RefusedReason, *, park: bool) -> Job | None:
        claimed = entry.origin.topic if entry.origin else "?"
        log.warning("%s[%d]@%d refused (%s; claims to come from %s): %s", dlq_topic, entry.partition,
                    entry.offset, reason, claimed, "kept in the DLQ" if park else "not replayed")
        summary = run.summary
        summary.refused[reason] = summary.refused.get(reason, 0) + 1
        if summary.plan is not None:
            origin = entry.origin or Origin(claimed, -1, -1)
            summary.plan.append({
                "topic": origin.topic, "partition": origin.partition, "offset": origin.offset,
                "dlq_partition": entry.partition, "dlq_offset": entry.offset, "operation": "REFUSED", "error": reason,
            })
        if not park:
            return None
        return Job((dlq_topic, entry.partition), entry.offset, _placeholder(entry), None, carry=msg)

    def prepare(msg: Any) -> Job | None:
        timestamp_type, timestamp_ms = msg.timestamp()
        headers = msg.headers() or []
        entry = parse_entry(msg.partition(), msg.offset(), timestamp_ms if timestamp_type else None,
                            msg.key(), msg.value(), headers)
        if entry.problems and filters.matches(entry):
            return refuse(msg, entry, "malformed", park=False)
        if not filters.matches(entry) or entry.origin is None:
            if entry.origin is None:
                log.warning("%s[%d]@%d has no origin offset (a source record, or not by sncli): carried forward",
                            dlq_topic, entry.partition, entry.offset)
            return Job((dlq_topic, entry.partition), entry.offset, _placeholder(entry), None, carry=msg)
        verdict = signer.verify(entry.key, entry.value, headers)
        if verdict == "invalid":
            return refuse(msg, entry, "bad_signature", park=False)
        if verdict != "valid" and not trust_unsigned:
            return refuse(msg, entry, "unsigned", park=not drop_unsigned)
        origin = entry.origin
        record = InRecord(origin.topic, origin.partition, origin.offset, entry.key, entry.value,
                          tuple(entry.original_headers()), timestamp_ms if timestamp_type else None)
        return Job((dlq_topic, entry.partition), entry.offset, record, topics.get(origin.topic),
                   replay_count=entry.replay_count + 1)

    run = SinkRun(
        settings,
        DrainOptions(workers=workers, dry_run=dry_run),
        group_id=group,
        read_topics=[dlq_topic],
        mode="assign",
        prepare=prepare,
        stop=stop,
        metrics=metrics,
        wait_for_ends=True,
    )
    log.info("replaying %s%s in group %s", dlq_topic, f" ({filters.describe()})" if not filters.empty else "", group)
    from sncli.sink.drain import sink_tables

    return run.run_and_push("dlq_replay", [filters.table] if filters.table else sink_tables(topics.values()))


RefusedReason = Literal["unsigned", "bad_signature", "malformed"]


def check_replay_trust(signer: DlqSigner, filters: Filters, *, trust_unsigned: bool) -> None:
    """Refuse a replay that would hand out sink topics' rights on a DLQ producer's word (exit 2)."""
    if trust_unsigned and filters.topic is None:
        raise UsageError("--trust-unsigned needs --topic: name the one sink topic whose settings (table, routing, "
                         "deletes) the unsigned records may use")
    if not signer.enabled and not trust_unsigned:
        raise UsageError("sink.dlq_signing_key is not set, so DLQ records cannot be verified and replay writes "
                         "none of them: whoever can produce to the DLQ could claim any sink topic. Set the key "
                         "(the sink signs what it dead-letters from then on), or replay the records of one topic "
                         "you vouch for with --trust-unsigned --topic TOPIC")


def _placeholder(entry: DlqEntry) -> InRecord:
    from sncli.sink.resolve import InRecord

    return InRecord("", entry.partition, entry.offset, entry.key, entry.value, tuple(entry.headers))
