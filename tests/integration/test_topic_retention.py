"""Topics sncli creates keep their records (read back with DescribeConfigs); doctor warns about those that do not."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sncli.config import KafkaSettings, parse_settings
from sncli.doctor import run_doctor
from sncli.emulator.server import ServiceNowEmulator
from sncli.kafka.admin import ensure_topics, topic_configs
from sncli.source.cycle import run_poll
from tests.integration.test_source_support import config_dict

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def _configs(bootstrap: str, topic: str) -> dict[str, str]:
    """The topic's configs as the broker reports them (plain AdminClient, not sncli's own reader)."""
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries = admin.describe_configs([resource], request_timeout=10)[resource].result(10)
    return {name: entry.value for name, entry in entries.items()}


def test_sncli_reads_topic_configs_back(kafka_bootstrap: str) -> None:
    topic = f"read-{uuid.uuid4().hex[:8]}"
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), {topic: 1})
    found = topic_configs(KafkaSettings(bootstrap_servers=kafka_bootstrap), [topic])[topic]
    assert found == _configs(kafka_bootstrap, topic)


def test_a_poll_creates_its_topics_without_time_retention(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    # Records changed a year ago: on a topic with the broker's default retention (7 days, CreateTime)
    # Kafka would delete them minutes after this poll wrote them.
    emulator.state.generate("incident", 30, at=NOW - timedelta(days=365), spread_seconds=60, seed=3)
    emulator.state.generate("problem", 10, at=NOW - timedelta(days=400), spread_seconds=60, seed=4)
    run = uuid.uuid4().hex[:8]
    mirror, keyed = f"mirror-{run}", f"keyed-{run}"
    tables = [{"name": "incident", "topic": mirror},
              {"name": "problem", "topic": keyed, "key": {"type": "fields", "fields": ["priority"]}}]
    settings = parse_settings(config_dict(emulator.url, kafka_bootstrap, tmp_path / "o.json", tables), environ={})

    assert run_poll(settings).exit_code == 0

    by_sys_id = _configs(kafka_bootstrap, mirror)
    assert by_sys_id["cleanup.policy"] == "compact"  # the latest version of every record, forever
    assert by_sys_id["retention.ms"] == "-1"
    by_fields = _configs(kafka_bootstrap, keyed)  # keys shared by many records: never compacted
    assert by_fields["cleanup.policy"] == "delete" and by_fields["retention.ms"] == "-1"
    assert by_fields["retention.bytes"] == "-1"


def test_extra_topic_config_and_keep_all_policy_apply_to_created_topics(kafka_bootstrap: str) -> None:
    kafka = KafkaSettings.model_validate({"bootstrap_servers": kafka_bootstrap,
                                          "topics": {"retention": "keep_all", "config": {"max.message.bytes": 2000}}})
    topic = f"keep-{uuid.uuid4().hex[:8]}"
    assert ensure_topics(kafka, {topic: 1}, mirrors={topic}) == [topic]
    configs = _configs(kafka_bootstrap, topic)
    assert configs["cleanup.policy"] == "delete" and configs["retention.ms"] == "-1"
    assert configs["max.message.bytes"] == "2000"


def test_doctor_warns_about_an_existing_topic_with_time_retention(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    emulator.state.generate("incident", 5, seed=5)
    run = uuid.uuid4().hex[:8]
    old, fine = f"old-{run}", f"fine-{run}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    futures = admin.create_topics([NewTopic(old, 1, -1, config={"cleanup.policy": "delete",
                                                                   "retention.ms": "604800000"})])
    futures[old].result(10)
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), {fine: 1}, mirrors={fine})
    tables = [{"name": "incident", "topic": old}, {"name": "problem", "topic": fine}]
    settings = parse_settings(config_dict(emulator.url, kafka_bootstrap, tmp_path / "o.json", tables), environ={})

    checks = {c.name: c for c in run_doctor(settings)}

    warned = checks[f"kafka topic {old} retention"]
    assert warned.status == "warn" and "retention.ms=604800000 (7d)" in warned.detail
    assert "retention.ms=-1" in warned.hint
    assert checks[f"kafka topic {fine} retention"].status == "ok"
