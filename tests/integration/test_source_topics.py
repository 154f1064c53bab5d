"""A topic that does not exist with kafka.topics.create false: the topic check runs while the first page is
fetched, and still stops the table (or the backfill) before anything is produced or stored."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sncli.config import Settings, parse_settings
from sncli.emulator.server import ServiceNowEmulator
from sncli.errors import ExitCode
from sncli.source.backfill import BackfillRequest, run_backfill
from sncli.source.cycle import run_poll
from tests.fixtures.kafka import read_all
from tests.integration.test_source_support import config_dict, stored_offsets

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def _settings(emulator: ServiceNowEmulator, bootstrap: str, offsets: Path, tables: list[dict[str, Any]]) -> Settings:
    data = config_dict(emulator.url, bootstrap, offsets, tables, page_size=50)
    data["kafka"]["topics"]["create"] = False
    return parse_settings(data, environ={})


def test_poll_refuses_a_missing_topic_for_every_table_even_an_empty_one(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    emulator.state.generate("incident", 120, at=NOW - timedelta(hours=1), spread_seconds=60, seed=11)
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    offsets = tmp_path / "o.json"
    tables = [{"name": "incident", "topic": missing}, {"name": "problem", "topic": f"{missing}-p"}]
    summary = run_poll(_settings(emulator, kafka_bootstrap, offsets, tables))
    assert summary.exit_code == int(ExitCode.FAILED), summary.to_json()
    for name in ("incident", "problem"):  # problem has no records: it fails all the same
        error = summary.tables[name].error or ""
        assert "not exist and kafka.topics.create is false" in error and missing in error
        assert summary.tables[name].produced == 0
    assert not offsets.exists() or stored_offsets(offsets) == {}


def test_poll_with_an_existing_topic_and_create_false_runs(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    from sncli.config import KafkaSettings
    from sncli.kafka.admin import ensure_topics

    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), {unique_topic: 2})
    emulator.state.generate("incident", 120, at=NOW - timedelta(hours=1), spread_seconds=60, seed=12)
    summary = run_poll(_settings(emulator, kafka_bootstrap, tmp_path / "o.json",
                                 [{"name": "incident", "topic": unique_topic}]))
    assert summary.exit_code == 0 and summary.tables["incident"].produced == 120
    assert len(read_all(kafka_bootstrap, unique_topic, timeout=30, expected=120)) == 120


def test_backfill_refuses_a_missing_topic_before_storing_a_plan(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    emulator.state.generate("incident", 300, at=NOW - timedelta(hours=1), spread_seconds=600, seed=13)
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    offsets = tmp_path / "o.json"
    settings = _settings(emulator, kafka_bootstrap, offsets, [{"name": "incident", "topic": missing}])
    summary = run_backfill(settings, BackfillRequest(table="incident", parallel=3))
    assert summary.exit_code == int(ExitCode.FAILED), summary.to_json()
    assert "does not exist and kafka.topics.create is false" in (summary.error or "")
    assert not offsets.exists() or stored_offsets(offsets) == {}  # no plan, no window cursor


def test_a_table_that_fails_before_producing_still_gets_its_topic_created(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The topic check runs in the background; the run waits for it even when no table awaited it.
    import sncli.kafka.admin as admin

    emulator.state.generate("incident", 20, at=NOW - timedelta(hours=1), spread_seconds=10, seed=14)
    offsets = tmp_path / "o.json"
    first_topic = f"first-{uuid.uuid4().hex[:8]}"
    data = config_dict(emulator.url, kafka_bootstrap, offsets, [{"name": "incident", "topic": first_topic}])
    assert run_poll(parse_settings(data, environ={})).exit_code == 0

    finished: list[str] = []
    real = admin.ensure_topics

    def slow_ensure_topics(*args: Any, **kwargs: Any) -> list[str]:
        time.sleep(0.5)  # slower than the table's failure
        created = real(*args, **kwargs)
        finished.append("done")
        return created

    monkeypatch.setattr(admin, "ensure_topics", slow_ensure_topics)
    topic = f"later-{uuid.uuid4().hex[:8]}"
    changed = config_dict(emulator.url, kafka_bootstrap, offsets,
                          [{"name": "incident", "topic": topic, "query": "active=true"}])
    summary = run_poll(parse_settings(changed, environ={}))
    assert finished == ["done"]  # when run_poll returned, not some time later
    assert summary.exit_code == int(ExitCode.USAGE)  # the stored cursor is refused: nothing produced
    assert "fingerprint" in (summary.tables["incident"].error or "")
    assert read_all(kafka_bootstrap, topic, timeout=30) == []  # the topic exists, and is empty
