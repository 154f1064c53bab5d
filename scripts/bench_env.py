"""The benchmark's edges: local services, the emulator's control API, sncli configs, timed processes, Kafka.

Everything here talks to something real (scripts/services.sh, HTTP, Kafka, child
processes); the scenarios in bench_scenarios.py only combine these pieces.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import requests

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
SNCLI = VENV_BIN / "sncli"
PYTHON = VENV_BIN / "python"

#: The bench's own ports and state, so it never disturbs the services a test run uses.
DEFAULT_PORT_BASE = 29100
USER, PASSWORD = "admin", "admin"  # the emulator's default credentials
TABLE = "incident"
#: Seeded records' sys_updated_on run from here over SPREAD_SECONDS (all safely in the past).
SEED_AT = "2025-01-01 00:00:00"
SPREAD_SECONDS = 30 * 86400


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- services


@dataclass
class Services:
    """kafka + snow from scripts/services.sh on the bench's port block; stops what it started."""

    port_base: int
    directory: Path
    started: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SNCLI_PORT_BASE"] = str(self.port_base)
        env["SNCLI_SERVICES_DIR"] = str(self.directory)
        for name in ("SNCLI_KAFKA_PORT", "SNCLI_SNOW_PORT"):
            env.pop(name, None)  # the port block decides
        return env

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.port_base}"

    @property
    def snow_url(self) -> str:
        return f"http://127.0.0.1:{self.port_base + 4}"

    def _script(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(ROOT / "scripts" / "services.sh"), *args],
            env=self.env, cwd=ROOT, text=True, capture_output=True, check=check,
        )

    def start(self, names: Sequence[str]) -> None:
        for name in names:
            already = self._script("status", name, check=False).returncode == 0
            result = self._script("start", name, check=False)
            if result.returncode != 0:
                raise RuntimeError(f"services.sh start {name} failed:\n{result.stdout}{result.stderr}")
            if not already:
                self.started.append(name)
            log(result.stdout.strip() + ("" if not already else " (was already running; left running at the end)"))

    def stop(self) -> bool:
        """Stop what this bench started; False if some service did not stop."""
        ok = True
        for name in reversed(self.started):
            result = self._script("stop", name, check=False)
            ok = ok and result.returncode == 0
            log((result.stdout + result.stderr).strip() or f"{name}: stopped")
        self.started.clear()
        return ok


# --------------------------------------------------------------------------- emulator control


class Emulator:
    """The ServiceNow emulator's control API (``/__emulator/``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()

    def _call(self, method: str, route: str, **kwargs: Any) -> Any:
        response = self.session.request(method, f"{self.url}/__emulator/{route}", timeout=600, **kwargs)
        if response.status_code != 200:
            raise RuntimeError(f"emulator {method} {route}: {response.status_code} {response.text[:300]}")
        return orjson.loads(response.content)["result"]

    def reset(self) -> None:
        self._call("POST", "reset")

    def generate(self, count: int, *, record_bytes: int = 1024, seed: int = 1) -> list[str]:
        """``count`` incident-like records (~30 string fields, ``record_bytes`` of JSON), sys_ids returned."""
        ids: list[str] = []
        chunk = 200_000  # one response of 200k sys_ids is ~7 MB
        while len(ids) < count:
            n = min(chunk, count - len(ids))
            # Consecutive chunks continue the timeline: chunk i covers its own slice of the spread.
            first = len(ids)
            at_offset = first * SPREAD_SECONDS // count
            spread = n * SPREAD_SECONDS // count
            at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(_epoch(SEED_AT) + at_offset))
            result = self._call(
                "POST", "generate",
                json={"table": TABLE, "count": n, "at": at, "spread_seconds": spread,
                      "record_bytes": record_bytes, "seed": seed + first},
            )
            ids.extend(result["sys_ids"])
        return ids

    def insert_records(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("POST", "records", json={"table": TABLE, "records": records})
        return result

    def settings(self, **values: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "settings", json=values)
        return result

    def clear_journal(self) -> None:
        self._call("DELETE", "journal")

    def journal(self, **query: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "journal", params=query)["entries"]
        return result

    def records(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", f"tables/{TABLE}")
        return result

    def counts(self) -> dict[str, int]:
        result: dict[str, int] = self._call("GET", "tables")
        return result


def _epoch(text: str) -> int:
    import calendar

    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


# --------------------------------------------------------------------------- sncli configs


@dataclass
class RunDir:
    """A fresh directory per sncli run: its config, offsets file and outputs."""

    path: Path
    config: Path
    topic: str

    @property
    def offsets(self) -> Path:
        return self.path / "offsets.json"


def make_run_dir(
    services: Services,
    work: Path,
    *,
    page_size: int = 1000,
    topic: str | None = None,
    sink_topic: str | None = None,
    group_id: str | None = None,
) -> RunDir:
    """A config for one run (fresh topic, fresh offsets file); the password comes from ${SN_PASSWORD}."""
    path = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    topic = topic or f"bench.{TABLE}.{uuid.uuid4().hex[:8]}"
    lines = [
        "servicenow:",
        f"  instance_url: {services.snow_url}",
        f"  auth: {{type: basic, username: {USER}, password: \"${{SN_PASSWORD}}\"}}",
        "  rate_limit: null          # measure the API limit, not a configured one",
        "kafka:",
        f"  bootstrap_servers: {services.kafka_bootstrap}",
        "  client: {session.timeout.ms: 6000}  # a group join takes ~session/2 on the local broker",
        "offsets:",
        "  store: file",
        f"  path: {path / 'offsets.json'}",
        "source:",
        f"  page_size: {page_size}",
        "  tables:",
        f"    - {{name: {TABLE}, topic: {topic}}}",
    ]
    if sink_topic is not None:
        lines += [
            "sink:",
            f"  group_id: {group_id or 'bench-' + uuid.uuid4().hex[:8]}",
            f"  dlq_topic: {sink_topic}.dlq",
            "  topics:",
            f"    - {{topic: {sink_topic}, table: {TABLE}}}",
        ]
    config = path / "sncli.yaml"
    config.write_text("\n".join(lines) + "\n")
    return RunDir(path=path, config=config, topic=topic)


def sncli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["SN_PASSWORD"] = PASSWORD
    env.pop("SNCLI_CONFIG", None)
    return env


# --------------------------------------------------------------------------- timed processes


@dataclass
class ProcessResult:
    args: list[str]
    returncode: int
    seconds: float  # wall clock, fork to exit
    peak_rss_mb: float  # the child's own VmHWM (peak resident set), sampled every 10 ms until it exits
    stdout: str
    stderr: str
    marks: dict[str, float] = field(default_factory=dict)  # stderr marker -> seconds after start

    def json(self) -> Any:
        return orjson.loads(self.stdout)

    def describe_failure(self) -> str:
        tail = "\n".join(self.stderr.strip().splitlines()[-8:])
        return f"`{' '.join(self.args[1:])}` exited {self.returncode}: {tail}"


def _vm_hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None  # gone, or a zombie whose memory is already released


def run_timed(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    marks: Iterable[str] = (),
    timeout: float = 3600,
) -> ProcessResult:
    """Run a process, measuring its wall time and its peak RSS.

    Peak RSS is the child's VmHWM from /proc/<pid>/status, sampled every 10 ms
    (it only grows, so the last sample is the peak up to 10 ms before exit).
    Not wait4's ru_maxrss: Linux folds the memory of the process that forked
    the child into it (the pre-exec copy of this harness, hundreds of MB after
    reading a million keys back), which would measure the harness instead.

    ``marks``: substrings of stderr lines whose first appearance is time-stamped
    (e.g. the sink's "assigned" line, after which the consumer group is joined).
    """
    wanted = list(marks)
    seen: dict[str, float] = {}
    err_lines: list[str] = []
    out_chunks: list[str] = []
    peak_kib = 0
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(args), env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
    )

    def read_stdout() -> None:
        assert proc.stdout is not None
        out_chunks.append(proc.stdout.read())

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            now = time.perf_counter() - started
            for mark in wanted:
                if mark not in seen and mark in line:
                    seen[mark] = now
            err_lines.append(line)

    readers = [threading.Thread(target=read_stdout, daemon=True), threading.Thread(target=read_stderr, daemon=True)]
    for reader in readers:
        reader.start()
    deadline = started + timeout
    try:
        while proc.poll() is None:
            hwm = _vm_hwm_kib(proc.pid)
            if hwm is not None:
                peak_kib = max(peak_kib, hwm)
            if time.perf_counter() > deadline:
                proc.kill()
            time.sleep(0.01)
    except BaseException:  # Ctrl-C / SIGTERM of the bench: leave no child running
        proc.kill()
        proc.wait()
        raise
    seconds = time.perf_counter() - started
    for reader in readers:
        reader.join(timeout=30)
    return ProcessResult(
        args=list(args),
        returncode=proc.returncode,
        seconds=seconds,
        peak_rss_mb=peak_kib / 1024.0,
        stdout="".join(out_chunks),
        stderr="".join(err_lines),
        marks=seen,
    )


def sncli(run: RunDir | None, *args: str, marks: Iterable[str] = (), timeout: float = 3600) -> ProcessResult:
    base = [str(SNCLI)]
    if run is not None:
        base += ["--config", str(run.config)]
    return run_timed([*base, *args], env=sncli_env(), cwd=run.path if run else ROOT, marks=marks, timeout=timeout)


# --------------------------------------------------------------------------- Kafka


def kafka_conf(bootstrap: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "log_level": 3}


def delete_topics(bootstrap: str, topics: Iterable[str]) -> None:
    """Free the broker's memory (Tansu keeps everything in RAM here); failures are only logged."""
    names = [t for t in topics if t]
    if not names:
        return
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(kafka_conf(bootstrap))
    for name, future in admin.delete_topics(names, operation_timeout=30).items():
        try:
            future.result(timeout=60)
        except Exception as exc:  # a topic that was never created, ...
            log(f"deleting topic {name}: {exc}")


def read_keys(bootstrap: str, topic: str, *, timeout: float = 300.0) -> list[bytes]:
    """Every key of ``topic`` from the beginning, stopping on partition EOF (never on ListOffsets).

    Values are dropped as they are read so a million records cost only their keys.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    from sncli.kafka.consumer import EndTracker

    deadline = time.monotonic() + timeout
    consumer = Consumer(
        {
            **kafka_conf(bootstrap),
            "group.id": f"bench-read-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "fetch.max.bytes": 52_428_800,
        }
    )
    keys: list[bytes] = []
    try:
        metadata = consumer.list_topics(topic, timeout=30)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise RuntimeError(f"topic {topic} not found: {info.error if info else 'no metadata'}")
        tracker = EndTracker()
        tracker.assign((topic, p) for p in info.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in info.partitions])
        while not tracker.all_finished():
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: partitions {tracker.unfinished()} unfinished after {timeout}s")
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                err = msg.error()
                where = (str(msg.topic()), int(msg.partition() or 0))
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        tracker.on_eof(where, int(msg.offset() or 0))
                    continue
                tracker.on_message(where, int(msg.offset() or 0))
                keys.append(msg.key() or b"")
    finally:
        consumer.close()
    return keys


def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes, bytes]], partitions: int = 6) -> int:
    """Create ``topic`` and write (key, value) messages in order, waiting for every acknowledgement."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient(kafka_conf(bootstrap))
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=30)
    producer = Producer({**kafka_conf(bootstrap), "acks": "all", "enable.idempotence": True, "linger.ms": 5})
    failures: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    count = 0
    for key, value in messages:
        producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
        producer.poll(0)
        count += 1
    remaining = producer.flush(60)
    if remaining or failures:
        raise RuntimeError(f"producing to {topic}: {remaining} unacknowledged, errors {failures[:3]}")
    return count


# --------------------------------------------------------------------------- misc


@contextmanager
def work_dir(keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sncli-bench-"))
    try:
        yield path
    finally:
        if not keep:
            import shutil

            shutil.rmtree(path, ignore_errors=True)


def interleaved(runs: int, *steps: Callable[[int], None]) -> None:
    """Run step A, B, A, B, ... ``runs`` times, so load drift on a shared machine hits both alike."""
    for i in range(runs):
        for step in steps:
            step(i)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()
        info["memory_gb"] = round(int(mem[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    info["loadavg_at_start"] = os.getloadavg()
    return info
