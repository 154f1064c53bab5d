"""Stored progress under faults: a broken offsets file, a full disk, a foreign writer on S3.

What must hold: sncli never overwrites offsets it cannot read (exit 2, the file
byte-identical), a failed write leaves the previous offsets exactly as they
were, and a table whose offset was moved by another writer stops while the
other tables finish. In every case a re-run loses nothing.

Covered elsewhere (not repeated here): two polls at once -> one exits 75
(tests/e2e/test_source_cli.py::test_two_concurrent_runs_on_one_table_one_exits_75,
tests/integration/test_run_lock.py), store-level write/fsync failures and corrupt
documents (tests/unit/test_offsets_file_store.py), the ``offsets`` CLI on a corrupt
file (tests/e2e/test_offsets_cli.py), S3 conditional-write semantics
(tests/integration/test_offsets_s3.py).
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from sncli.config import KafkaSettings, parse_settings
from sncli.emulator.server import ServiceNowEmulator
from sncli.kafka.admin import existing_topics
from sncli.offsets.file_store import FileStore
from sncli.offsets.model import StoredOffset
from sncli.source.cycle import run_poll
from sncli.source.outcome import RunSummary
from tests.fixtures.kafka import read_all
from tests.reliability.conftest import fill_up
from tests.reliability.support import keyset, run_sncli, source_config, stored_cursor, write_config

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def _seed(emulator: ServiceNowEmulator, table: str, count: int, seed: int) -> list[tuple[str, str]]:
    emulator.state.generate(table, count, at=NOW - timedelta(hours=2), spread_seconds=count // 4, field_count=5,
                            record_bytes=80, seed=seed)
    return keyset(emulator.state.records(table))


def _kafka_keys(bootstrap: str, topic: str, expected: int | None = None) -> Counter[tuple[str, str]]:
    records = read_all(bootstrap, topic, timeout=60, expected=expected)
    return Counter((v["sys_updated_on"], v["sys_id"]) for v in (orjson.loads(r.value or b"null") for r in records))


# --------------------------------------------------------------------------- corrupt / truncated file


def _real_document(path: Path, settings_data: dict[str, Any]) -> bytes:
    """A well-formed offsets file for the config's tables, written by sncli's own store."""
    from sncli.config import source_fingerprint

    settings = parse_settings(settings_data, {})
    store = FileStore(path)
    for table in settings.source.tables:
        store.save(StoredOffset.new(table.name, "2001-01-01 00:00:00", "0" * 32, source_fingerprint(settings, table)))
    return path.read_bytes()


CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda doc: doc[: len(doc) // 2],
    "garbage": lambda doc: os.urandom(64),
    "empty": lambda doc: b"",
    "json array": lambda doc: b"[]",
    "wrong document version": lambda doc: doc.replace(b'"version": 1,', b'"version": 99,', 1),
    "bad entry": lambda doc: doc.replace(b'"2001-01-01 00:00:00"', b'"yesterday"', 1),
}


@pytest.mark.e2e
@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_a_broken_offsets_file_stops_source_poll_with_exit_2_and_is_never_overwritten(
    kind: str, emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    _seed(emulator, "incident", 20, seed=1)
    topic = f"h9-corrupt-{uuid.uuid4().hex[:8]}"
    offsets = tmp_path / "offsets.json"
    data = source_config(emulator.url, kafka_bootstrap, offsets, [{"name": "incident", "topic": topic}])
    broken = CORRUPTIONS[kind](_real_document(offsets, data))
    offsets.write_bytes(broken)
    os.utime(offsets, (1_000_000_000, 1_000_000_000))
    config = write_config(tmp_path / "c.yaml", data)

    result = run_sncli(config, "source", "poll", json_output=True)

    assert result.code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.output
    summary = result.json()
    error = summary["tables"]["incident"]["error"]
    assert str(offsets) in error and ("corrupt" in error or "version" in error), error
    assert "will not overwrite" in error
    assert offsets.read_bytes() == broken  # byte-identical
    assert offsets.stat().st_mtime == 1_000_000_000  # not even rewritten with the same bytes
    assert not list(tmp_path.glob(".offsets.json.*.tmp"))
    # Nothing was produced either: the topic is empty, or (the offsets are read before the
    # topic is created) it does not exist at all.
    assert topic not in existing_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap)) \
        or read_all(kafka_bootstrap, topic, timeout=30) == []


# --------------------------------------------------------------------------- disk full


def test_disk_full_while_storing_keeps_the_old_offsets_and_a_rerun_loses_nothing(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path, tiny_tmpfs: Path | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run 1 stores a cursor; run 2 hits ENOSPC on its first store -> exit 1, file unchanged; run 3 finishes.

    On a real 64 KiB tmpfs when the test may mount one (root), else with ENOSPC
    injected into the file store's write in-process.
    """
    expected = _seed(emulator, "incident", 300, seed=2)
    topic = f"h9-full-{uuid.uuid4().hex[:8]}"
    directory = tiny_tmpfs or tmp_path
    offsets = directory / "offsets.json"
    settings = parse_settings(source_config(emulator.url, kafka_bootstrap, offsets,
                                            [{"name": "incident", "topic": topic}], page_size=50), {})

    first = run_poll(settings, max_records=100)
    assert first.exit_code == 0, first.to_json()
    before = offsets.read_bytes()
    assert stored_cursor(offsets, "incident") == expected[99]

    if tiny_tmpfs is not None:
        filler = fill_up(tiny_tmpfs, leave_pages=1)  # room for the run lock's holder line, not for the offsets
    else:
        from sncli.offsets import file_store

        def no_space(fd: int, data: bytes) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(file_store, "_write_fully", no_space)
    second = run_poll(settings)
    outcome = second.tables["incident"]
    assert second.exit_code == 1, second.to_json()
    assert "No space left on device" in (outcome.error or "") and "previous offsets are intact" in (outcome.error or "")
    assert outcome.pages == 0  # stopped at the first page whose cursor could not be stored
    assert offsets.read_bytes() == before
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]

    if tiny_tmpfs is not None:
        filler.unlink()
    else:
        monkeypatch.undo()
    third = run_poll(settings)
    assert third.exit_code == 0, third.to_json()
    counts = _kafka_keys(kafka_bootstrap, topic, expected=len(expected))
    assert set(counts) == set(expected)  # 0 lost
    assert sum(c - 1 for c in counts.values()) <= 50  # the one page whose cursor was not stored, re-sent once
    assert stored_cursor(offsets, "incident") == expected[-1]


@pytest.mark.e2e
def test_a_completely_full_disk_is_one_clear_error_not_a_traceback(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path, tiny_tmpfs: Path | None
) -> None:
    if tiny_tmpfs is None:
        pytest.skip("needs a tmpfs (root)")
    _seed(emulator, "incident", 10, seed=5)
    offsets = tiny_tmpfs / "offsets.json"
    config = write_config(tmp_path / "c.yaml", source_config(
        emulator.url, kafka_bootstrap, offsets, [{"name": "incident", "topic": f"h9-{uuid.uuid4().hex[:8]}"}]))
    fill_up(tiny_tmpfs)
    result = run_sncli(config, "source", "poll")
    assert result.code == 1, result.output
    assert "Traceback" not in result.output
    assert "No space left on device" in result.stderr


# --------------------------------------------------------------------------- S3: another writer moves a key


def test_s3_412_on_a_moved_key_stops_that_table_only_and_leaves_the_object_as_the_other_writer_made_it(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    import boto3

    a_keys = _seed(emulator, "incident", 600, seed=3)
    b_keys = _seed(emulator, "problem", 600, seed=4)
    emulator.state.update_settings(read_latency_ms=60)
    topics = {"incident": f"h9-s3a-{uuid.uuid4().hex[:6]}", "problem": f"h9-s3b-{uuid.uuid4().hex[:6]}"}
    data = source_config(emulator.url, kafka_bootstrap, tmp_path / "unused.json",
                         [{"name": name, "topic": topic} for name, topic in topics.items()], page_size=50)
    data["offsets"] = {"store": "s3", "url": f"s3://{s3_bucket}/sncli/offsets.json", "endpoint_url": s3_endpoint,
                       "region": "us-east-1"}
    settings = parse_settings(data, {})
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")

    def object_key(key: str) -> str:
        return f"sncli/offsets.json.d/{key}.json"  # the per_key layout: one object per table

    def document() -> dict[str, Any]:
        offsets: dict[str, Any] = {}
        for key in ("incident", "problem"):
            with contextlib.suppress(client.exceptions.NoSuchKey):
                offsets[key] = orjson.loads(client.get_object(Bucket=s3_bucket, Key=object_key(key))["Body"].read())
        return offsets

    result: dict[str, RunSummary] = {}
    runner = threading.Thread(target=lambda: result.setdefault("run", run_poll(settings)))
    runner.start()
    deadline = time.monotonic() + 60
    while not {"incident", "problem"} <= set(document()):
        assert time.monotonic() < deadline and runner.is_alive(), "the run did not store both tables"
        time.sleep(0.05)
    # Another writer (ignoring the run lease) moves incident's offset back: an operator's `offsets set`, say,
    # with a conditional PUT of incident's object (the run may have moved it in between: then again).
    while True:
        found = client.get_object(Bucket=s3_bucket, Key=object_key("incident"))
        foreign = dict(orjson.loads(found["Body"].read()), timestamp="2000-01-01 00:00:00", sys_id="f" * 32)
        try:
            client.put_object(Bucket=s3_bucket, Key=object_key("incident"), Body=orjson.dumps(foreign),
                              IfMatch=found["ETag"])
            break
        except client.exceptions.ClientError as exc:
            assert exc.response["Error"]["Code"] in ("PreconditionFailed", "412"), exc
    runner.join(120)
    assert not runner.is_alive()
    summary = result["run"]

    assert summary.exit_code == 3, summary.to_json()  # partial: one table failed, the other finished
    assert "another writer moved the offset for incident" in (summary.tables["incident"].error or "")
    assert summary.tables["problem"].error is None and summary.tables["problem"].stopped == "caught_up"
    final = document()
    assert final["incident"] == foreign  # the other writer's value, untouched
    assert (final["problem"]["timestamp"], final["problem"]["sys_id"]) == b_keys[-1]
    # What the stopped table acknowledged before it stopped is in Kafka; the rest waits for the next run.
    in_kafka = _kafka_keys(kafka_bootstrap, topics["incident"])
    assert in_kafka and set(in_kafka) <= set(a_keys)
    assert set(_kafka_keys(kafka_bootstrap, topics["problem"], expected=len(b_keys))) == set(b_keys)
