"""Kafka-side steps of scripts/demo.sh: count a topic, produce change messages.

Kept out of sncli itself: these are what a downstream consumer or an upstream
producer would do, shown with plain confluent-kafka so the demo proves the
records really are in Kafka, not just that sncli says so.
"""

from __future__ import annotations

import argparse
import json
import sys

import orjson
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition


def read_topic(bootstrap: str, topic: str, timeout: float = 20.0) -> list[dict[str, object]]:
    """Every message of a topic, read from the beginning until each partition reports EOF."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "sncli-demo-reader",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = list(metadata.topics[topic].partitions) if topic in metadata.topics else []
        if not partitions:
            return []
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        done: set[int] = set()
        out: list[dict[str, object]] = []
        while len(done) < len(partitions):
            msg = consumer.poll(timeout)
            if msg is None:
                raise SystemExit(f"demo: timed out reading {topic}")
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    done.add(msg.partition())
                    continue
                raise SystemExit(f"demo: {msg.error()}")
            out.append({"key": (msg.key() or b"").decode(), "headers": dict(msg.headers() or []),
                        "value": orjson.loads(msg.value()) if msg.value() else None})
        return out
    finally:
        consumer.close()


def cmd_count(args: argparse.Namespace) -> None:
    records = read_topic(args.bootstrap, args.topic)
    keys = {r["key"] for r in records}
    print(json.dumps({"topic": args.topic, "messages": len(records), "distinct_keys": len(keys)}))
    if records and args.show:
        first = records[0]
        value = first["value"] if isinstance(first["value"], dict) else {}
        print(json.dumps({
            "key": first["key"],
            "headers": {k: v.decode() for k, v in first["headers"].items()},  # type: ignore[union-attr]
            "value (some fields)": {k: value.get(k) for k in ("number", "short_description", "sys_updated_on")},
        }, indent=2))


def cmd_changes(args: argparse.Namespace) -> None:
    """Updates for existing records (PATCH by sys_id), new records (POST) and one poison message."""
    source = read_topic(args.bootstrap, args.source_topic)
    producer = Producer({"bootstrap.servers": args.bootstrap, "acks": "all", "enable.idempotence": True})
    updates = source[: args.updates]
    for record in updates:
        value = record["value"]
        assert isinstance(value, dict)
        change = {"sys_id": value["sys_id"], "short_description": "updated by the sncli demo", "state": "6"}
        producer.produce(args.topic, key=value["sys_id"], value=orjson.dumps(change))
    for i in range(args.creates):
        producer.produce(args.topic, key=f"new-{i}",
                         value=orjson.dumps({"short_description": f"created by the sncli demo #{i}", "state": "1"}))
    producer.produce(args.topic, key="poison", value=b"this is not JSON")
    if producer.flush(30) != 0:
        raise SystemExit("demo: could not produce the change messages")
    print(json.dumps({"topic": args.topic, "updates": len(updates), "creates": args.creates, "poison": 1}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    sub = parser.add_subparsers(required=True)
    count = sub.add_parser("count")
    count.add_argument("topic")
    count.add_argument("--show", action="store_true")
    count.set_defaults(run=cmd_count)
    changes = sub.add_parser("changes")
    changes.add_argument("--source-topic", required=True)
    changes.add_argument("--topic", required=True)
    changes.add_argument("--updates", type=int, default=150)
    changes.add_argument("--creates", type=int, default=50)
    changes.set_defaults(run=cmd_changes)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    sys.exit(main())
