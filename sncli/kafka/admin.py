"""Topic administration and reachability checks.

Topics are created on first use when ``kafka.topics.create`` is true (the
default, with ``kafka.topics.partitions`` / ``replication_factor`` and the
retention configs of ``kafka.topics.retention``, :mod:`sncli.kafka.retention`), or refused
with a clear error otherwise: with a broker's auto-creation off, producing to a
missing topic would otherwise only fail after the delivery timeout with
"Unknown topic or partition". Existing topics are left as they are (their
partition count is never changed: CreatePartitions would re-map keys).

Every call is bounded by a timeout; an unreachable cluster is reported naming
the bootstrap servers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping

from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # re-exported by confluent_kafka.admin, untyped there
from confluent_kafka.admin._metadata import ClusterMetadata  # not re-exported by confluent_kafka.admin for mypy
from confluent_kafka.cimpl import NewTopic

from sncli.config import KafkaSettings
from sncli.kafka.conf import admin_config
from sncli.kafka.errors import KafkaError
from sncli.kafka.retention import creation_config

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 15.0


def _admin(kafka: KafkaSettings) -> AdminClient:
    return AdminClient(admin_config(kafka))


def _error_text(exc: BaseException) -> str:
    args = getattr(exc, "args", ())
    if args and hasattr(args[0], "str"):
        return str(args[0].str())
    return str(exc) or type(exc).__name__


def _list_topics(admin: AdminClient, kafka: KafkaSettings, timeout: float) -> ClusterMetadata:
    try:
        return admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaError(
            f"cannot reach Kafka at {kafka.bootstrap_servers} within {timeout:g}s: {_error_text(exc)}"
        ) from None


def existing_topics(kafka: KafkaSettings, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> dict[str, int]:
    """Topic name -> partition count, for every topic the cluster lists."""
    metadata = _list_topics(_admin(kafka), kafka, timeout)
    return {name: len(info.partitions) for name, info in metadata.topics.items() if info.error is None}


def ensure_topics(
    kafka: KafkaSettings,
    topics: Mapping[str, int | None],
    *,
    mirrors: Collection[str] = (),
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> list[str]:
    """Make sure every topic exists; create the missing ones; return the names created.

    ``topics`` maps a topic to its partition count for creation (None: the
    ``kafka.topics.partitions`` default). ``mirrors``: the topics whose records
    are keyed by sys_id (compacted under the ``mirror`` retention policy); every
    other topic is created to keep all its records. A topic created concurrently
    by someone else counts as existing.
    """
    if not topics:
        return []
    admin = _admin(kafka)
    present = {name for name, info in _list_topics(admin, kafka, timeout).topics.items() if info.error is None}
    missing = [name for name in topics if name not in present]
    if not missing:
        return []
    if not kafka.topics.create:
        names = ", ".join(missing)
        plural = "s" if len(missing) > 1 else ""
        verb = "do" if len(missing) > 1 else "does"
        raise KafkaError(
            f"topic{plural} {names} {verb} not exist and kafka.topics.create is false "
            f"(create {'them' if plural else 'it'} or set kafka.topics.create: true)"
        )
    new = [
        NewTopic(
            name,
            num_partitions=topics[name] or kafka.topics.partitions,
            replication_factor=kafka.topics.replication_factor,
            config=creation_config(kafka.topics.retention, kafka.topics.extra_config(), mirror=name in mirrors),
        )
        for name in missing
    ]
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    created: list[str] = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if err is not None and hasattr(err, "code") and err.code() == RdKafkaError.TOPIC_ALREADY_EXISTS:
                continue  # created by a concurrent run: fine
            raise KafkaError(f"creating topic {name} on {kafka.bootstrap_servers} failed: {_error_text(exc)}") from None
        except TimeoutError:
            raise KafkaError(
                f"creating topic {name} on {kafka.bootstrap_servers}: no answer within {timeout:g}s"
            ) from None
    if created:
        log.info("created Kafka topics %s", ", ".join(sorted(created)))
        _wait_visible(admin, kafka, created, timeout)
    return sorted(created)


def _wait_visible(admin: AdminClient, kafka: KafkaSettings, names: list[str], timeout: float) -> None:
    """Wait until new topics show up with leaders, so the first produce does not race creation."""
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        metadata = _list_topics(admin, kafka, max(1.0, deadline - time.monotonic()))
        for name in list(pending):
            info = metadata.topics.get(name)
            if info is not None and info.error is None and all(p.leader >= 0 for p in info.partitions.values()):
                pending.discard(name)
        if pending:
            time.sleep(0.1)


def topic_configs(
    kafka: KafkaSettings, names: list[str], *, timeout: float = DEFAULT_TIMEOUT_SECONDS
) -> dict[str, dict[str, str] | KafkaError]:
    """Each topic's configs as the broker reports them (DescribeConfigs), or the error reading them."""
    if not names:
        return {}
    admin = _admin(kafka)  # keep a reference: a collected client cancels its pending futures
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    futures = admin.describe_configs(resources, request_timeout=timeout)
    found: dict[str, dict[str, str] | KafkaError] = {}
    for resource, future in futures.items():
        try:
            entries = future.result(timeout=timeout)
            found[resource.name] = {k: e.value for k, e in entries.items() if e.value is not None}
        except KafkaException as exc:
            found[resource.name] = KafkaError(f"reading the configs of topic {resource.name}: {_error_text(exc)}")
        except TimeoutError:
            found[resource.name] = KafkaError(f"reading the configs of topic {resource.name}: no answer "
                                              f"within {timeout:g}s")
    return found


def delete_topics(kafka: KafkaSettings, names: list[str], *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
    """Delete topics (tests and tooling); a topic that is already gone is not an error."""
    if not names:
        return
    admin = _admin(kafka)  # keep a reference: a collected client cancels its pending futures
    futures = admin.delete_topics(names, operation_timeout=timeout, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if err is not None and hasattr(err, "code") and err.code() == RdKafkaError.UNKNOWN_TOPIC_OR_PART:
                continue
            raise KafkaError(f"deleting topic {name} failed: {_error_text(exc)}") from None


def kafka_reachable(kafka: KafkaSettings, timeout: float = 10.0) -> tuple[bool, str]:
    """For ``sncli doctor``: can the cluster be reached, and what does it look like."""
    try:
        metadata = _list_topics(_admin(kafka), kafka, timeout)
    except KafkaError as exc:
        return False, str(exc)
    brokers = len(metadata.brokers)
    topics = sum(1 for info in metadata.topics.values() if info.error is None)
    return True, (
        f"{kafka.bootstrap_servers}: {brokers} broker{'s' if brokers != 1 else ''}, "
        f"{topics} topic{'s' if topics != 1 else ''}, cluster {metadata.cluster_id}"
    )
