"""Topic retention: the configs sncli creates topics with, and the doctor's verdict on existing topics (pure)."""

from __future__ import annotations

import pytest

from sncli.config import TopicDefaults
from sncli.doctor import topic_retention_check
from sncli.kafka.errors import KafkaError
from sncli.kafka.retention import creation_config, deletion_risks, human_ms, mirror_topics

WEEK_MS = "604800000"


def test_default_policy_compacts_sys_id_mirrors_and_keeps_every_record_elsewhere() -> None:
    defaults = TopicDefaults()
    assert defaults.retention == "mirror"
    mirror = creation_config(defaults.retention, defaults.extra_config(), mirror=True)
    other = creation_config(defaults.retention, defaults.extra_config(), mirror=False)
    assert mirror == {"cleanup.policy": "compact", "retention.ms": "-1", "retention.bytes": "-1"}
    assert other == {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
    # Whatever the broker's defaults, neither deletes a record by age or size.
    assert deletion_risks(mirror, mirror=True) == []
    assert deletion_risks(other, mirror=False) == []


def test_keep_all_and_broker_default_policies_and_extra_config() -> None:
    assert creation_config("keep_all", {}, mirror=True)["cleanup.policy"] == "delete"
    assert creation_config("broker_default", {}, mirror=True) == {}
    extra = TopicDefaults(config={"min.insync.replicas": 2, "retention.ms": "86400000", "x": True}).extra_config()
    assert extra == {"min.insync.replicas": "2", "retention.ms": "86400000", "x": "true"}
    made = creation_config("mirror", extra, mirror=False)
    assert made["retention.ms"] == "86400000" and made["min.insync.replicas"] == "2"  # the operator's word wins


def test_a_topic_is_a_mirror_only_when_every_writer_keys_by_sys_id() -> None:
    assert mirror_topics([("a", True), ("b", False), ("c", True), ("c", False), ("d", True), ("d", True)]) == {"a", "d"}


@pytest.mark.parametrize(
    ("configs", "mirror", "expected"),
    [
        ({}, True, ["retention.ms=604800000 (7d)"]),  # nothing reported: Kafka's defaults delete after 7 days
        ({"cleanup.policy": "delete", "retention.ms": WEEK_MS}, False, ["retention.ms=604800000 (7d)"]),
        ({"cleanup.policy": "compact,delete", "retention.ms": "3600000"}, True, ["retention.ms=3600000 (1h)"]),
        ({"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "1000"}, False,
         ["retention.bytes=1000"]),
        ({"cleanup.policy": "delete", "retention.ms": "-1"}, False, []),
        ({"cleanup.policy": "compact", "retention.ms": WEEK_MS}, True, []),  # retention.ms is inert under compact
        ({"cleanup.policy": "compact"}, False, ["cleanup.policy=compact keeps only the latest record per key"]),
        ({"retention.ms": "-1", "message.timestamp.before.max.ms": "86400000"}, True,
         ["message.timestamp.before.max.ms=86400000 (1d)"]),
        ({"retention.ms": "-1", "message.timestamp.before.max.ms": str(2**63 - 1)}, True, []),
        ({"retention.ms": "-1", "message.timestamp.type": "LogAppendTime",
          "message.timestamp.difference.max.ms": "1000"}, True, []),
    ],
)
def test_deletion_risks(configs: dict[str, str], mirror: bool, expected: list[str]) -> None:
    risks = deletion_risks(configs, mirror=mirror)
    assert len(risks) == len(expected), risks
    for risk, start in zip(risks, expected, strict=True):
        assert risk.startswith(start), risk


def test_doctor_verdict_per_topic() -> None:
    old = topic_retention_check("t", {"cleanup.policy": "delete", "retention.ms": WEEK_MS}, mirror=True)
    assert old.status == "warn" and "7d" in old.detail and "backfill" in old.detail
    assert "cleanup.policy=compact" in old.hint and "retention.ms=-1" in old.hint
    assert "compact" not in topic_retention_check("t", {}, mirror=False).hint
    ok = topic_retention_check("t", {"cleanup.policy": "compact"}, mirror=True)
    assert ok.status == "ok" and ok.name == "kafka topic t retention"
    unknown = topic_retention_check("t", KafkaError("not authorized"), mirror=True)
    assert unknown.status == "warn" and "not authorized" in unknown.detail


def test_human_ms() -> None:
    assert [human_ms(v) for v in (604800000, 90_000, 3_600_000, 500, 90_061_000)] == ["7d", "1m30s", "1h", "500ms",
                                                                                     "1d1h"]
