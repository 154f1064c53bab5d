"""Helpers shared by the reliability suite (no tests here): configs, running the CLI, reading results.

The suite drives sncli the way a scheduler does: as a subprocess with a config
file, judged by its exit code, its stdout/stderr and what it left behind (Kafka
topics, the offsets file, the emulator's records and request journal).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[2]
BASIC = {"type": "basic", "username": "admin", "password": "admin"}


# --------------------------------------------------------------------------- configs


def source_config(
    emu_url: str,
    bootstrap: str,
    offsets: Path,
    tables: Sequence[Mapping[str, Any]],
    *,
    page_size: int = 1000,
    auth: Mapping[str, Any] | None = None,
    retry: Mapping[str, Any] | None = None,
    kafka_client: Mapping[str, Any] | None = None,
    partitions: int = 3,
    pushgateway: str | None = None,
    timeout_seconds: float = 10,
) -> dict[str, Any]:
    """A config for ``source poll`` against the emulator and a broker (safety lag 1 s, the least allowed)."""
    servicenow: dict[str, Any] = {
        "instance_url": emu_url,
        "auth": dict(auth or BASIC),
        "rate_limit": None,
        "timeout_seconds": timeout_seconds,
        "retry": dict(retry or {"max_attempts": 4, "initial_backoff_ms": 10, "max_backoff_ms": 200,
                               "max_elapsed_seconds": 20}),
    }
    kafka: dict[str, Any] = {"bootstrap_servers": bootstrap, "topics": {"partitions": partitions}}
    if kafka_client:
        kafka["client"] = dict(kafka_client)
    return {
        "servicenow": servicenow,
        "kafka": kafka,
        "offsets": {"store": "file", "path": str(offsets)},
        "metrics": {"pushgateway": pushgateway, "job": "sncli-reliability"},
        "source": {"page_size": page_size, "safety_lag_seconds": 1, "tables": [dict(t) for t in tables]},
    }


def write_config(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
    return path


# --------------------------------------------------------------------------- the CLI


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SNCLI_CONFIG", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def sncli_argv(config: Path | None, args: Sequence[str], *, json_output: bool = False,
               log_format: str = "json") -> list[str]:
    argv = [sys.executable, "-m", "sncli", "--log-format", log_format]
    if json_output:
        argv.append("--json")
    if config is not None:
        argv += ["--config", str(config)]
    return argv + list(args)


def run_sncli(
    config: Path | None,
    *args: str,
    json_output: bool = False,
    log_format: str = "json",
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    cwd: Path | None = None,
) -> CliResult:
    proc = subprocess.run(
        sncli_argv(config, args, json_output=json_output, log_format=log_format),
        env=cli_env(env),
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(result: CliResult, code: int, *needles: str) -> str:
    """The run failed with ``code`` and one ``sncli: error:`` line naming every needle, no traceback."""
    assert result.code == code, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("sncli: error:")]
    assert len(errors) == 1, lines
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


# --------------------------------------------------------------------------- results


def keyset(records: Iterable[Mapping[str, str]], ts_field: str = "sys_updated_on") -> list[tuple[str, str]]:
    return sorted((r[ts_field], r["sys_id"]) for r in records)


def decoded(records: Iterable[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


def stored_offsets(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    offsets: dict[str, dict[str, Any]] = json.loads(path.read_text())["offsets"]
    return offsets


def stored_cursor(path: Path, key: str) -> tuple[str, str] | None:
    entry = stored_offsets(path).get(key)
    return None if entry is None else (entry["timestamp"], entry["sys_id"])


# --------------------------------------------------------------------------- Kafka


Headers = list[tuple[str, str | bytes | None]]


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, -1)], operation_timeout=10).values():
        future.result(15)


def produce(
    bootstrap: str, topic: str, records: Sequence[tuple[bytes | None, bytes | None, Headers | None]]
) -> list[tuple[int, int]]:
    """Produce and wait for every acknowledgement; returns each record's (partition, offset), in input order."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 20})
    where: list[tuple[int, int]] = [(-1, -1)] * len(records)
    errors: list[str] = []

    def delivered(index: int) -> Any:
        def callback(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(err.str())
            else:
                where[index] = (msg.partition(), msg.offset())
        return callback

    for index, (key, value, headers) in enumerate(records):
        while True:
            try:
                producer.produce(topic, key=key, value=value, headers=headers, on_delivery=delivered(index))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0 and not errors, errors
    return where


def committed_offsets(bootstrap: str, group_id: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets read back from the broker (no commit = 0)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id, "enable.auto.commit": False})
    try:
        got = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=15)
    finally:
        consumer.close()
    return {tp.partition: max(tp.offset, 0) for tp in got}


def sink_config(
    emu_url: str,
    bootstrap: str,
    topics: Sequence[Mapping[str, Any]],
    *,
    group_id: str,
    dlq_topic: str,
    workers: int = 4,
    max_attempts: int = 3,
    kafka_client: Mapping[str, Any] | None = None,
    auth: Mapping[str, Any] | None = None,
    pushgateway: str | None = None,
) -> dict[str, Any]:
    return {
        "servicenow": {
            "instance_url": emu_url,
            "auth": dict(auth or BASIC),
            "timeout_seconds": 5,
            "rate_limit": None,
            "retry": {"max_attempts": max_attempts, "initial_backoff_ms": 10, "max_backoff_ms": 50,
                      "max_elapsed_seconds": 10},
        },
        "kafka": {
            "bootstrap_servers": bootstrap,
            # A killed member holds its partitions until its session times out: keep that short.
            "client": {"session.timeout.ms": 2000, "heartbeat.interval.ms": 300, **dict(kafka_client or {})},
            "topics": {"create": True, "partitions": 2},
        },
        "metrics": {"pushgateway": pushgateway, "job": "sncli-reliability"},
        "sink": {"group_id": group_id, "workers": workers, "dlq_topic": dlq_topic, "topics": [dict(t) for t in topics]},
    }


# --------------------------------------------------------------------------- crash loops


@dataclass
class CrashLoopResult:
    kills: int
    runs: int
    final: CliResult
    kill_points: list[tuple[int, float]]  # (progress units seen in that run, extra delay) per kill


def crash_loop(
    argv: Sequence[str],
    *,
    kills: int,
    rng: Any,
    progress: Any,
    progress_range: tuple[int, int],
    max_delay: float,
    after_kill: Any = None,
    env: Mapping[str, str] | None = None,
    workdir: Path,
    run_timeout: float = 120,
    ok_codes: Sequence[int] = (0,),
) -> CrashLoopResult:
    """Run ``argv`` and SIGKILL it ``kills`` times at seeded random moments, then run it to the end.

    A moment is: once ``progress()`` (a count the test observes, e.g. requests in the
    emulator's journal) grew by ``rng.randint(*progress_range)`` in this run, plus
    ``rng.random() * max_delay`` seconds, so kills land anywhere inside a unit of work
    (fetching, producing, storing, committing); the last run must exit with one of
    ``ok_codes``. ``after_kill(i)`` checks the state a
    kill left behind. A run that ends before its kill means the data set is too
    small for the planned kills, and fails the test.
    """
    import signal
    import time

    points: list[tuple[int, float]] = []
    began = time.monotonic()
    for kill in range(1, kills + 1):
        target = rng.randint(*progress_range)
        delay = rng.random() * max_delay
        base = progress()
        out, err = workdir / f"run{kill}.out", workdir / f"run{kill}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(list(argv), env=cli_env(env), cwd=ROOT, stdout=stdout, stderr=stderr)
        try:
            deadline = time.monotonic() + run_timeout
            while proc.poll() is None and progress() - base < target:
                assert time.monotonic() < deadline, f"run {kill} made no progress: {err.read_text()[-2000:]}"
                time.sleep(0.005)
            if proc.poll() is None:
                time.sleep(delay)
            if proc.poll() is not None:
                raise AssertionError(
                    f"run {kill} ended (exit {proc.returncode}) before its kill; more data is needed for "
                    f"{kills} kills\n{err.read_text()[-2000:]}"
                )
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        points.append((progress() - base, delay))
        print(f"kill {kill}: after {points[-1][0]} units + {delay:.2f}s, {time.monotonic() - began:.1f}s in")
        if after_kill is not None:
            after_kill(kill)
    proc_final = subprocess.run(list(argv), env=cli_env(env), cwd=ROOT, capture_output=True, text=True,
                                timeout=run_timeout * 3, check=False)
    final = CliResult(proc_final.returncode, proc_final.stdout, proc_final.stderr)
    print(f"final run: exit {final.code}, {time.monotonic() - began:.1f}s in")
    assert final.code in ok_codes, (final.code, final.stderr[-4000:])
    return CrashLoopResult(kills, kills + 1, final, points)
