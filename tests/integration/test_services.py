"""scripts/services.sh and the services it runs.

The lifecycle tests run the script in a port block and services dir of their own
(SNCLI_PORT_BASE + 10, <services dir>/selftest), so stopping everything there never
touches the services that the rest of the session uses through the fixtures.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.kafka import read_all
from tests.fixtures.services import (
    PORTS,
    ROOT,
    KafkaBroker,
    kafka_ready,
    port_open,
    prometheus_installed,
    pushgateway_installed,
    run_services,
    service_port,
)

pytestmark = pytest.mark.integration

SERVICES = ["kafka", "pushgateway", "s3", "registry", "snow", "prometheus"]
SELFTEST_OFFSET = 10
SELFTEST_DEFAULT_BASE = 19100  # free of every default port (18080-19092)


@pytest.fixture(scope="module")
def selftest_env() -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if k not in {var for var, _, _ in PORTS.values()}}
    env.pop("SNCLI_KAFKA_STORAGE", None)
    env.pop("SNCLI_PUSHGATEWAY_BIN", None)
    env.pop("SNCLI_PROMETHEUS_BIN", None)
    base = os.environ.get("SNCLI_PORT_BASE")
    env["SNCLI_PORT_BASE"] = str(int(base) + SELFTEST_OFFSET if base else SELFTEST_DEFAULT_BASE)
    env["SNCLI_SERVICES_DIR"] = str(Path(os.environ.get("SNCLI_SERVICES_DIR") or ROOT / ".services") / "selftest")
    try:
        yield env
    finally:
        run_services("stop", "all", env=env)


def expected_services(env: dict[str, str]) -> list[str]:
    return [s for s in SERVICES if (s != "pushgateway" or pushgateway_installed(env))
            and (s != "prometheus" or prometheus_installed(env))]


def pids(env: dict[str, str]) -> dict[str, int]:
    """service -> PID, from the PID files of the configured ports."""
    out = {}
    for svc in SERVICES:
        pidfile = Path(env["SNCLI_SERVICES_DIR"]) / f"{svc}-{service_port(svc, env)}.pid"
        if pidfile.exists():
            out[svc] = int(pidfile.read_text().strip())
    return out


def process_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def must(action: str, *services: str, env: dict[str, str]) -> str:
    result = run_services(action, *services, env=env)
    assert result.returncode == 0, f"services.sh {action} {services}: {result.stdout}\n{result.stderr}"
    return result.stdout


def test_start_all_then_status_shows_every_service_ready(selftest_env: dict[str, str]) -> None:
    must("start", "all", env=selftest_env)
    status = must("status", env=selftest_env)
    lines = {line.split()[0]: line for line in status.splitlines()}
    for svc in expected_services(selftest_env):
        assert f"ready  127.0.0.1:{service_port(svc, selftest_env)}" in lines[svc], status
    assert set(pids(selftest_env)) == set(expected_services(selftest_env))


def test_start_is_idempotent(selftest_env: dict[str, str]) -> None:
    must("start", "all", env=selftest_env)
    before = pids(selftest_env)
    out = must("start", "all", env=selftest_env)
    assert pids(selftest_env) == before
    assert out.count("ready on 127.0.0.1:") == len(expected_services(selftest_env))


def test_stop_all_leaves_no_process_behind(selftest_env: dict[str, str]) -> None:
    must("start", "all", env=selftest_env)
    running = pids(selftest_env)
    assert running
    must("stop", "all", env=selftest_env)
    for svc, pid in running.items():
        assert process_gone(pid), f"{svc} (pid {pid}) still running"
        assert not port_open(service_port(svc, selftest_env)), f"{svc} port still open"
    assert list(Path(selftest_env["SNCLI_SERVICES_DIR"]).glob("*.pid")) == []
    status = run_services("status", env=selftest_env)
    assert status.returncode != 0
    assert "ready" not in status.stdout
    # Stopping what is stopped is fine.
    assert "not running" in must("stop", "all", env=selftest_env)


def test_memory_broker_restart_gets_a_new_process_and_loses_data(selftest_env: dict[str, str]) -> None:
    from confluent_kafka import Producer

    must("start", "kafka", env=selftest_env)
    bootstrap = f"127.0.0.1:{service_port('kafka', selftest_env)}"
    topic = f"selftest-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(topic, b"v")
    assert producer.flush(10) == 0
    assert [r.value for r in read_all(bootstrap, topic, expected=1)] == [b"v"]
    old_pid = pids(selftest_env)["kafka"]
    # KILL at once: on TERM, Tansu waits 5 s for the producer that is still connected.
    must("restart", "kafka", env=dict(selftest_env, SNCLI_SERVICES_STOP_GRACE="0"))
    assert process_gone(old_pid)
    assert pids(selftest_env)["kafka"] != old_pid
    try:  # memory storage: the record is gone (the topic may come back empty, auto-created)
        after = read_all(bootstrap, topic, timeout=5)
    except TimeoutError:
        after = []
    assert after == []


def test_start_fails_clearly_when_the_port_is_taken(selftest_env: dict[str, str]) -> None:
    must("stop", "registry", env=selftest_env)
    port = service_port("registry", selftest_env)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = run_services("start", "registry", env=selftest_env)
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr and "taken" in result.stderr
    assert "registry" not in pids(selftest_env)


def test_a_missing_pushgateway_is_named_and_left_out_of_all(selftest_env: dict[str, str]) -> None:
    env = dict(selftest_env, SNCLI_PUSHGATEWAY_BIN="/nonexistent/prometheus-pushgateway")
    explicit = run_services("start", "pushgateway", env=env)
    assert explicit.returncode == 3
    assert "not installed" in explicit.stderr
    status = run_services("status", "all", env=env)
    assert "pushgateway  absent" in status.stdout


def test_a_missing_prometheus_is_named_and_left_out_of_all(selftest_env: dict[str, str]) -> None:
    env = dict(selftest_env, SNCLI_PROMETHEUS_BIN="/nonexistent/prometheus")
    explicit = run_services("start", "prometheus", env=env)
    assert explicit.returncode == 3
    assert "prometheus is not installed" in explicit.stderr
    status = run_services("status", "all", env=env)
    assert "prometheus   absent" in status.stdout


def test_bad_arguments_exit_2(selftest_env: dict[str, str]) -> None:
    assert run_services("start", "zookeeper", env=selftest_env).returncode == 2
    assert run_services("launch", env=selftest_env).returncode == 2
    bad_base = run_services("status", "kafka", env=dict(selftest_env, SNCLI_PORT_BASE="nope"))
    assert bad_base.returncode == 2 and "SNCLI_PORT_BASE" in bad_base.stderr
    bad_storage = run_services("start", "kafka", env=dict(selftest_env, SNCLI_KAFKA_STORAGE="disk"))
    assert bad_storage.returncode == 2 and "SNCLI_KAFKA_STORAGE" in bad_storage.stderr


# ----------------------------------------------------------- the session's services, as other tests use them


def test_kafka_produce_consume_round_trip(kafka_bootstrap: str) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"roundtrip-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})  # keep a reference while the future runs
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(10)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all", "enable.idempotence": True})
    sent = {f"k{i}".encode(): f"v{i}".encode() for i in range(30)}
    for key, value in sent.items():
        producer.produce(topic, value, key, headers=[("sn.table", b"incident")])
    assert producer.flush(10) == 0
    records = read_all(kafka_bootstrap, topic, expected=len(sent))
    assert {r.key: r.value for r in records} == sent
    assert all(r.header("sn.table") == b"incident" for r in records)
    assert {r.partition for r in records} == {0, 1, 2}


def test_s3_conditional_writes(s3_endpoint: str) -> None:
    import boto3
    from botocore.exceptions import ClientError

    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    bucket = f"selftest-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    first = s3.put_object(Bucket=bucket, Key="offsets.json", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="offsets.json", Body=b"2", IfNoneMatch="*")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    second = s3.put_object(Bucket=bucket, Key="offsets.json", Body=b"3", IfMatch=first["ETag"])
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="offsets.json", Body=b"4", IfMatch=first["ETag"])  # stale ETag
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    body = s3.get_object(Bucket=bucket, Key="offsets.json")
    assert body["Body"].read() == b"3"
    assert body["ETag"] == second["ETag"]


def test_pushgateway_serves_a_pushed_metric(pushgateway_url: str) -> None:
    from prometheus_client import CollectorRegistry, Gauge, delete_from_gateway, push_to_gateway

    job = f"selftest_{uuid.uuid4().hex[:8]}"
    registry = CollectorRegistry()
    Gauge("sncli_selftest_value", "a value pushed by the services self-test", registry=registry).set(42)
    push_to_gateway(pushgateway_url.removeprefix("http://"), job=job, registry=registry)
    try:
        with urllib.request.urlopen(f"{pushgateway_url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert f'sncli_selftest_value{{instance="",job="{job}"}} 42' in text
    finally:
        delete_from_gateway(pushgateway_url.removeprefix("http://"), job=job)


def test_s3_backed_broker_keeps_messages_and_offsets_across_a_restart(kafka_broker_s3: KafkaBroker) -> None:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    bootstrap = kafka_broker_s3.bootstrap
    topic = f"durable-{uuid.uuid4().hex[:8]}"
    group = f"g-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # keep a reference while the future runs
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(10)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for i in range(20):
        producer.produce(topic, f"v{i}".encode(), f"k{i}".encode())
    assert producer.flush(10) == 0

    def consume(count: int) -> list[bytes]:
        """Read ``count`` records from the group's committed offset, then commit (no group join: fast)."""
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        try:
            committed = consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
            consumer.assign([TopicPartition(topic, 0, committed if committed >= 0 else OFFSET_BEGINNING)])
            values: list[bytes] = []
            deadline = time.monotonic() + 15
            while len(values) < count and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None:
                    values.append(msg.value() or b"")
                    if len(values) == count:
                        consumer.commit(message=msg, asynchronous=False)
        finally:
            consumer.close()
        return values

    assert consume(8) == [f"v{i}".encode() for i in range(8)]
    kafka_broker_s3.restart()
    assert read_all(bootstrap, topic, expected=20, timeout=15)[-1].value == b"v19"
    # The committed offset survived too: the group resumes where it stopped.
    assert consume(12) == [f"v{i}".encode() for i in range(8, 20)]


def test_a_broker_left_stopped_by_a_test(kafka_broker_s3: KafkaBroker) -> None:
    kafka_broker_s3.stop()
    assert not port_open(kafka_broker_s3.port)


def test_is_running_again_for_the_next_test(kafka_broker_s3: KafkaBroker) -> None:
    """The autouse guard of tests/fixtures/services.py restarted it after the previous test."""
    assert kafka_ready(kafka_broker_s3.bootstrap)
