"""Kafka goes away: runs fail fast and clearly, store nothing they should not, and a re-run loses nothing.

Brokers here are private (a stopped ``private_tansu``) or the S3-backed
``kafka_broker_s3`` of this port block, never the shared broker other tests use.

Covered elsewhere (not repeated): ``source poll`` with the broker stopped
before a run and mid-run on the S3-backed broker, in process
(tests/integration/test_source_broker_down.py); the producer's bounded
delivery timeout (tests/integration/test_kafka_producer.py); a DLQ that is
missing or refuses writes (tests/integration/test_sink_failures.py).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from sncli.emulator.server import ServiceNowEmulator
from tests.fixtures.kafka import PrivateTansu
from tests.fixtures.services import KafkaBroker
from tests.reliability.support import (
    ROOT,
    cli_env,
    committed_offsets,
    create_topic,
    produce,
    run_sncli,
    sink_config,
    sncli_argv,
    source_config,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

NOW = datetime.now(UTC).replace(microsecond=0)
FAST_FAIL = {"message.timeout.ms": 3000, "socket.timeout.ms": 2000}
SASL_CANARY = "cAnary-SASL-down-77e1"


def sid(n: int) -> str:
    return f"{n:032x}"


def _stopped_broker(private_tansu: Callable[..., PrivateTansu]) -> str:
    broker = private_tansu()
    bootstrap = broker.bootstrap
    broker.stop()
    return bootstrap


def _kafka_named(text: str) -> bool:
    return "kafka" in text.lower()


def test_source_poll_with_the_broker_down_exits_1_fast_naming_kafka_and_stores_nothing(
    emulator: ServiceNowEmulator, private_tansu: Callable[..., PrivateTansu], tmp_path: Path
) -> None:
    emulator.state.generate("incident", 50, at=NOW - timedelta(hours=1), spread_seconds=60, seed=1)
    bootstrap = _stopped_broker(private_tansu)
    offsets = tmp_path / "offsets.json"
    # A SASL password canary rides along: a broker failure must not print the client's secrets either.
    config = write_config(tmp_path / "c.yaml", source_config(
        emulator.url, bootstrap, offsets, [{"name": "incident", "topic": "h9-down"}],
        kafka_client={**FAST_FAIL, "sasl.password": "${H9_SASL}"}))

    started = time.monotonic()
    result = run_sncli(config, "source", "poll", json_output=True, timeout=90, env={"H9_SASL": SASL_CANARY})
    elapsed = time.monotonic() - started

    assert result.code == 1, result.output
    assert "Traceback" not in result.output
    error = result.json()["tables"]["incident"]["error"]
    assert _kafka_named(error) and bootstrap in error, error
    assert elapsed < 30, f"took {elapsed:.1f}s to give up"  # sncli waits 15 s for Kafka metadata
    assert not offsets.exists()  # nothing stored
    # The first page and its read-ahead are fetched while the topic check runs (that overlap
    # saves a round trip); with Kafka down nothing past them is read, nothing produced or stored.
    assert len([e for e in emulator.state.journal() if "ORDERBY" in e.query.get("sysparm_query", "")]) <= 2
    assert _kafka_named(result.stderr) and bootstrap in result.stderr  # the log says it too
    assert SASL_CANARY not in result.output


def test_sink_drain_with_the_broker_down_exits_1_fast_naming_kafka_and_writes_nothing(
    emulator: ServiceNowEmulator, private_tansu: Callable[..., PrivateTansu], tmp_path: Path
) -> None:
    bootstrap = _stopped_broker(private_tansu)
    config = write_config(tmp_path / "c.yaml", sink_config(
        emulator.url, bootstrap, [{"topic": "h9-in", "table": "incident"}], group_id="h9-g", dlq_topic="h9-dlq",
        kafka_client=FAST_FAIL))

    started = time.monotonic()
    result = run_sncli(config, "sink", "drain", json_output=True, timeout=120)
    elapsed = time.monotonic() - started

    assert result.code == 1, result.output
    assert "Traceback" not in result.output
    assert _kafka_named(result.stderr) and bootstrap in result.stderr, result.stderr[-2000:]
    assert elapsed < 30, f"took {elapsed:.1f}s to give up"
    assert not [e for e in emulator.state.journal() if e.method in ("POST", "PATCH", "DELETE")]


class _RestartScenario:
    """A drain writing keyed updates while the S3-backed broker is killed for longer than the group session."""

    def __init__(self, emulator: ServiceNowEmulator, broker: KafkaBroker, tmp_path: Path, messages: int) -> None:
        self.emulator, self.broker, self.tmp_path = emulator, broker, tmp_path
        self.keys, self.messages, self.partitions = 50, messages, 2
        self.topic, dlq, self.group = (f"h9-{n}-{uuid.uuid4().hex[:8]}" for n in ("bk", "bkdlq", "bkg"))
        emulator.state.bulk_insert("incident", [{"sys_id": sid(k), "seq": "-1"} for k in range(self.keys)])
        emulator.state.update_settings(write_latency_ms=10)
        create_topic(broker.bootstrap, self.topic, self.partitions)
        create_topic(broker.bootstrap, dlq, 1)
        self.key_of = {n: n % self.keys for n in range(messages)}
        self.where = produce(broker.bootstrap, self.topic, [
            (sid(self.key_of[n]).encode(), orjson.dumps({"sys_id": sid(self.key_of[n]), "seq": str(n)}), None)
            for n in range(messages)])
        self.seq_at = {pos: n for n, pos in enumerate(self.where)}
        self.ends = {p: max(o for (q, o) in self.where if q == p) + 1 for p in range(self.partitions)}
        self.config = write_config(tmp_path / "c.yaml", sink_config(
            emulator.url, broker.bootstrap, [{"topic": self.topic, "table": "incident"}], group_id=self.group,
            dlq_topic=dlq, kafka_client=FAST_FAIL))

    def written(self) -> set[int]:
        return {int(orjson.loads(e.body or b"{}")["seq"]) for e in self.emulator.state.journal()
                if e.method == "PATCH" and 200 <= e.status < 300}

    def committed(self) -> dict[int, int]:
        """The group's commits, checked never to pass a message that was not written."""
        committed = committed_offsets(self.broker.bootstrap, self.group, self.topic, self.partitions)
        below = {self.seq_at[(p, o)] for p, end in committed.items() for o in range(end)}
        assert below <= self.written(), f"committed past {len(below - self.written())} unwritten messages"
        return committed

    def first_run(self) -> tuple[int, dict[str, Any]]:
        """Start a drain, kill the broker once 300 messages are written, start it again 3 s later."""
        out, err = self.tmp_path / "first.out", self.tmp_path / "first.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(sncli_argv(self.config, ["sink", "drain"], json_output=True), env=cli_env(),
                                    cwd=ROOT, stdout=stdout, stderr=stderr)
        try:
            deadline = time.monotonic() + 60
            while len(self.written()) < 300:
                assert proc.poll() is None and time.monotonic() < deadline, err.read_text()[-2000:]
                time.sleep(0.02)
            self.broker.stop()
            time.sleep(3)  # longer than the group session (2 s): the member loses its partitions
            self.broker.start()
            proc.wait(240)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert proc.returncode in (0, 1), err.read_text()[-3000:]
        assert "Traceback" not in err.read_text()
        summary: dict[str, Any] = json.loads(out.read_text())
        return proc.returncode, summary


def test_sink_drain_with_a_broker_restart_mid_run_loses_nothing_after_a_rerun(
    emulator: ServiceNowEmulator, kafka_broker_s3: KafkaBroker, tmp_path: Path
) -> None:
    """However the interrupted drain ends, nothing it committed is unwritten, and it does not claim success
    (exit 0) without having committed its work; one more drain completes: every message written, every key
    on its last message, the commits at the partition ends.

    Regression (found here, fixed in d078d1f): losing the partitions on a session timeout made the drain
    return 'end' with exit 0 and nothing committed, so the next run rewrote everything.
    """
    scenario = _RestartScenario(emulator, kafka_broker_s3, tmp_path, messages=3_000)
    code, summary = scenario.first_run()
    committed = scenario.committed()
    assert code != 0 or committed == scenario.ends, (code, summary, committed)
    rerun = run_sncli(scenario.config, "sink", "drain", json_output=True, timeout=240)
    assert rerun.code == 0, rerun.stderr[-3000:]
    assert scenario.written() == set(range(scenario.messages))  # 0 lost
    for k in range(scenario.keys):
        record = emulator.state.get("incident", sid(k))
        last = max(n for n in range(scenario.messages) if scenario.key_of[n] == k)
        assert record is not None and record["seq"] == str(last)
    assert scenario.committed() == scenario.ends
