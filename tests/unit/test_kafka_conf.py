"""librdkafka config layering: defaults < kafka.client < code overrides < enforced guarantees."""

from __future__ import annotations

import logging

import pytest

from sncli.config import KafkaSettings
from sncli.kafka.conf import (
    DEFAULT_DELIVERY_TIMEOUT_MS,
    QuietLibrdkafkaLogger,
    admin_config,
    consumer_config,
    delivery_timeout_ms,
    producer_config,
)


def _kafka(**client: object) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers="b1:9092,b2:9092", client=client)  # type: ignore[arg-type]


def test_producer_defaults() -> None:
    config = producer_config(_kafka())
    assert config["bootstrap.servers"] == "b1:9092,b2:9092"
    assert config["acks"] == "all" and config["enable.idempotence"] is True
    assert config["compression.type"] == "lz4"
    assert 0 < int(config["linger.ms"]) <= 5  # a page fills batches at once; lingering delays its tail
    assert config["batch.size"] == 1_000_000
    # Room for at least one full page of 10 000 records of ~1.5 KiB.
    assert config["queue.buffering.max.messages"] >= 20_000
    assert config["queue.buffering.max.kbytes"] * 1024 >= 2 * 10_000 * 1536
    assert delivery_timeout_ms(config) == DEFAULT_DELIVERY_TIMEOUT_MS


def test_client_entries_override_defaults_but_not_the_delivery_guarantee() -> None:
    config = producer_config(
        _kafka(**{"compression.type": "zstd", "acks": "1", "enable.idempotence": False, "security.protocol": "SSL"})
    )
    assert config["compression.type"] == "zstd"
    assert config["security.protocol"] == "SSL"
    assert config["acks"] == "all"
    assert config["enable.idempotence"] is True


def test_code_overrides_win_over_client_and_accept_underscores() -> None:
    config = producer_config(_kafka(**{"linger.ms": 50}), linger_ms=7, **{"message.timeout.ms": 1500})
    assert config["linger.ms"] == 7
    assert delivery_timeout_ms(config) == 1500


@pytest.mark.parametrize(
    ("client", "overrides", "expected"),
    [
        ({"delivery.timeout.ms": 4000}, {}, 4000),  # operator's alias beats our default
        ({}, {"delivery_timeout_ms": 3000}, 3000),
        ({"delivery.timeout.ms": 4000}, {"message.timeout.ms": 2000}, 2000),
    ],
)
def test_delivery_timeout_alias_keeps_only_one_key(
    client: dict[str, int], overrides: dict[str, int], expected: int
) -> None:
    config = producer_config(_kafka(**client), **overrides)
    assert ("delivery.timeout.ms" in config) + ("message.timeout.ms" in config) == 1
    assert delivery_timeout_ms(config) == expected


def test_consumer_defaults_and_overrides() -> None:
    config = consumer_config(_kafka(**{"sasl.mechanism": "PLAIN"}), "grp", session_timeout_ms=6000)
    assert config["group.id"] == "grp"
    assert config["enable.auto.commit"] is False
    assert config["enable.auto.offset.store"] is False
    assert config["enable.partition.eof"] is True
    assert config["auto.offset.reset"] == "earliest"
    assert config["session.timeout.ms"] == 6000
    assert config["sasl.mechanism"] == "PLAIN"
    assert "acks" not in config


def test_admin_config_has_connection_settings_only() -> None:
    config = admin_config(_kafka(**{"security.protocol": "SASL_SSL"}))
    assert config["security.protocol"] == "SASL_SSL"
    assert "acks" not in config and "group.id" not in config


def test_config_objects_are_fresh_per_call() -> None:
    kafka = _kafka()
    first = producer_config(kafka)
    first["linger.ms"] = 999
    assert producer_config(kafka)["linger.ms"] != 999


def test_librdkafka_logger_collapses_repeats(caplog: pytest.LogCaptureFixture) -> None:
    logger = QuietLibrdkafkaLogger("test.rdkafka", window=60)
    with caplog.at_level(logging.INFO, logger="test.rdkafka"):
        for _ in range(5):
            logger.log(logging.ERROR, "%s [%s] %s", "FAIL", "x", "Connect failed")
        logger.log(logging.WARNING, "%s [%s] %s", "FAIL", "x", "other")
    assert [r.getMessage() for r in caplog.records] == ["FAIL [x] Connect failed", "FAIL [x] other"]
    assert caplog.records[0].levelno == logging.ERROR
