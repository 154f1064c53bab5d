"""Scenario 7's baseline: a bare confluent-kafka consumer reading a topic once, from its start to its end.

Run as a process of its own and timed by the harness exactly like ``sncli
verify``, so both figures carry an interpreter start and their imports. It
assigns every partition at its beginning (no group join), consumes in batches
of 10 000 and stops at each partition's EOF; per message it only checks for an
error (to see the EOFs) and counts. Prints one JSON line ``{"messages": N}``.

Usage: python bench_bare_read.py BOOTSTRAP TOPIC
"""

from __future__ import annotations

import json
import sys

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition


def bare_read(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-bare", "enable.auto.commit": False,
                         "enable.partition.eof": True, "log_level": 3})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        ended: set[int] = set()
        messages = 0
        while len(ended) < len(partitions):
            for msg in consumer.consume(10_000, 0.05):
                if msg.error() is not None:
                    ended.add(msg.partition() or 0)
                else:
                    messages += 1
        return messages
    finally:
        consumer.close()


if __name__ == "__main__":
    print(json.dumps({"messages": bare_read(sys.argv[1], sys.argv[2])}))
