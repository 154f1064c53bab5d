"""How long a topic keeps its records: the configs sncli creates topics with, and the doctor's verdict (pure).

Why this matters: a source record's Kafka timestamp is its ``sys_updated_on``
(the time it changed in ServiceNow, not the time it was produced). With the
broker's defaults (``cleanup.policy=delete``, ``retention.ms`` = 7 days,
``message.timestamp.type=CreateTime``) Kafka deletes
a segment once its *largest record timestamp* is older than ``retention.ms``,
the active segment included. A backfill, or the first poll of a table, writes
records changed months ago: their segments are past retention the moment they
are written and go at the next retention check (minutes). Nothing fails; the
records are just gone.

So topics sncli creates never use time (or size) retention, whatever the
broker's defaults (``kafka.topics.retention``):

- ``mirror`` (the default): a source topic whose records are keyed by
  ``sys_id`` is compacted (``cleanup.policy=compact``): Kafka keeps the latest
  version of every record forever and drops superseded ones; a tombstone for a
  deleted record (value null, same key) removes the key after
  ``delete.retention.ms``. That is a mirror of the table, and stays right when
  deletes arrive as tombstones (``deletes: audit``, :mod:`sncli.source.deletes`).
  A consumer must read past a tombstone within ``delete.retention.ms`` (Kafka's
  default: one day) or it misses that delete: raise it for consumers that may
  stop longer. Every other topic sncli creates (a source topic
  keyed by ``fields``, whose keys are shared by many records, and the DLQ) keeps
  every record: ``cleanup.policy=delete`` with ``retention.ms=-1``.
- ``keep_all``: every topic keeps every record (and every version of it):
  ``cleanup.policy=delete``, ``retention.ms=-1``. The topic grows forever.
- ``broker_default``: no retention config: the broker's defaults apply (the
  old behaviour; ``sncli doctor`` warns about what they delete).

``retention.ms=-1`` and ``retention.bytes=-1`` are set under ``compact`` too: they
are inert there, and keep the topic safe if someone later adds ``delete`` to its
cleanup policy. ``kafka.topics.config`` adds (or overrides) topic configs for
every topic sncli creates. Existing topics are never altered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

RetentionPolicy = Literal["mirror", "keep_all", "broker_default"]
RETENTION_POLICIES: tuple[RetentionPolicy, ...] = ("mirror", "keep_all", "broker_default")

KEEP_ALL: dict[str, str] = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
COMPACT: dict[str, str] = {"cleanup.policy": "compact", "retention.ms": "-1", "retention.bytes": "-1"}

#: Kafka's topic defaults, for configs a broker does not report (some report only what was set at creation).
KAFKA_DEFAULTS: dict[str, str] = {
    "cleanup.policy": "delete",
    "retention.ms": "604800000",
    "retention.bytes": "-1",
    "message.timestamp.type": "CreateTime",
}
#: Configs that make the broker refuse records whose timestamp is too far in the past (Kafka 3.6+ and older).
_TIMESTAMP_LIMITS = ("message.timestamp.before.max.ms", "message.timestamp.difference.max.ms")
_NO_LIMIT = 2**63 - 1


def creation_config(
    policy: RetentionPolicy, extra: Mapping[str, str], *, mirror: bool
) -> dict[str, str]:
    """The topic configs a new topic is created with; ``mirror``: its records are keyed by sys_id."""
    if policy == "broker_default":
        base: dict[str, str] = {}
    elif policy == "mirror" and mirror:
        base = dict(COMPACT)
    else:
        base = dict(KEEP_ALL)
    return {**base, **extra}


def mirror_topics(tables: Iterable[tuple[str, bool]]) -> set[str]:
    """Topics every one of whose writers keys records by sys_id; ``tables``: (topic, keyed by sys_id) pairs.

    A topic that a ``fields``-keyed table also writes is not a mirror: compaction
    would keep one record per shared key.
    """
    verdict: dict[str, bool] = {}
    for topic, by_sys_id in tables:
        verdict[topic] = verdict.get(topic, True) and by_sys_id
    return {topic for topic, mirror in verdict.items() if mirror}


def deletion_risks(configs: Mapping[str, str], *, mirror: bool) -> list[str]:
    """Why a topic with these configs could lose (or refuse) records sncli writes to it; [] when none.

    ``configs``: what the broker reports for the topic (missing keys read as
    Kafka's defaults); ``mirror``: records are keyed by sys_id (compaction is safe).
    """
    effective = {**KAFKA_DEFAULTS, **{k: v for k, v in configs.items() if v is not None}}
    policies = {p.strip() for p in effective["cleanup.policy"].split(",") if p.strip()}
    risks: list[str] = []
    if "delete" in policies:
        ms = _as_int(effective["retention.ms"])
        if ms is not None and ms >= 0:
            risks.append(
                f"retention.ms={ms} ({human_ms(ms)}) deletes records whose Kafka timestamp (sys_updated_on) is "
                f"older than {human_ms(ms)}, soon after they are written: a backfill or a first poll of old "
                f"records is lost"
            )
        size = _as_int(effective["retention.bytes"])
        if size is not None and size >= 0:
            risks.append(f"retention.bytes={size} deletes the oldest records once a partition holds more")
    if "compact" in policies and not mirror:
        risks.append(
            "cleanup.policy=compact keeps only the latest record per key, and this topic's keys are shared "
            "by many records (key: fields, or a DLQ)"
        )
    if effective["message.timestamp.type"] == "CreateTime":
        for name in _TIMESTAMP_LIMITS:
            limit = _as_int(configs.get(name))
            if limit is not None and 0 <= limit < _NO_LIMIT:
                risks.append(
                    f"{name}={limit} ({human_ms(limit)}) makes the broker refuse records whose sys_updated_on "
                    f"is older than {human_ms(limit)} (they go to the DLQ)"
                )
    return risks


def risk_hint(*, mirror: bool) -> str:
    """What to do about :func:`deletion_risks` on an existing topic."""
    fix = "cleanup.policy=compact (the key is sys_id) or retention.ms=-1" if mirror else "retention.ms=-1"
    return (
        f"set {fix} on the topic (kafka-configs --alter --entity-type topics ...); sncli never alters "
        f"existing topics, and creates new ones per kafka.topics.retention"
    )


def human_ms(ms: int) -> str:
    """A duration for messages: 604800000 -> '7d', 90000 -> '1m30s'."""
    seconds = ms // 1000
    if seconds == 0:
        return f"{ms}ms"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts[:2])


def _as_int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(str(text).strip())
    except ValueError:
        return None
