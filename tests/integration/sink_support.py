"""Helpers shared by the sink and DLQ tests: settings, topics, producing, reading commits back."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml

from sncli.config import Settings, parse_settings

#: The local broker forms a consumer group in about session.timeout.ms / 2 (README, the local broker's known
#: faults): 2 s keeps a drain's join near one second. Heartbeats come from librdkafka's own thread, every 0.5 s.
SESSION_TIMEOUT_MS = 2000
HEARTBEAT_MS = 500
#: The DLQ signing key of the test configs (replay writes only records signed with it).
DLQ_KEY = "test-dlq-signing-key-0123456789abcdef"
Headers = list[tuple[str, bytes | None]]


def sid(n: int) -> str:
    """A deterministic, valid sys_id."""
    return f"{n:032x}"


def config_dict(
    emulator_url: str,
    bootstrap: str,
    topics: Sequence[dict[str, Any]],
    *,
    group_id: str | None = None,
    dlq_topic: str | None = None,
    workers: int = 4,
    create_topics: bool = True,
    pushgateway: str | None = None,
    max_attempts: int = 3,
) -> dict[str, Any]:
    return {
        "servicenow": {
            "instance_url": emulator_url,
            "auth": {"type": "basic", "username": "admin", "password": "admin"},
            "timeout_seconds": 5,
            "rate_limit": None,
            "retry": {"max_attempts": max_attempts, "initial_backoff_ms": 10, "max_backoff_ms": 50,
                      "max_elapsed_seconds": 10},
        },
        "kafka": {
            "bootstrap_servers": bootstrap,
            "client": {"session.timeout.ms": SESSION_TIMEOUT_MS, "heartbeat.interval.ms": HEARTBEAT_MS},
            "topics": {"create": create_topics, "partitions": 2},
        },
        "metrics": {"pushgateway": pushgateway, "job": "sncli-test"},
        "sink": {
            "group_id": group_id or f"sink-{uuid.uuid4().hex[:8]}",
            "workers": workers,
            "dlq_topic": dlq_topic or f"dlq-{uuid.uuid4().hex[:8]}",
            "dlq_signing_key": DLQ_KEY,
            "topics": list(topics),
        },
    }


def settings_of(data: dict[str, Any]) -> Settings:
    return parse_settings(data, {})


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, -1)], operation_timeout=10).values():
        future.result(15)


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None, Headers | None]],
    *,
    partition: int | None = None,
) -> dict[int, int]:
    """Produce and wait for every acknowledgement; returns the end offset (last + 1) per partition."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 20})
    ends: dict[int, int] = {}
    errors: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(err.str())
            return
        ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)

    for key, value, headers in records:
        kwargs: dict[str, Any] = {"key": key, "value": value, "headers": headers, "on_delivery": delivered}
        if partition is not None:
            kwargs["partition"] = partition
        producer.produce(topic, **kwargs)
        producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0 and not errors, errors
    return ends


def json_value(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data)


def committed_offsets(bootstrap: str, group_id: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets read back from the broker (-1001 = none)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id, "enable.auto.commit": False})
    try:
        got = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in got}


def writes(journal: Sequence[Any], table: str | None = None) -> list[Any]:
    """The journal's table writes (POST/PATCH/DELETE), in the order the emulator served them."""
    return [
        e for e in journal
        if e.method in ("POST", "PATCH", "DELETE") and e.path.startswith("/api/now/table/")
        and (table is None or e.table == table)
    ]
