"""The helpers every source run shares (``source poll`` and ``backfill``).

Settings checks and table selection, the ServiceNow client and Kafka producers
of a run, the topic check run in the background, SIGTERM/SIGINT as a stop at
the next page boundary, and the metrics push at the end (one Pushgateway group
per table).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sncli import signals
from sncli.config import SysIdKey
from sncli.errors import ConfigError
from sncli.kafka import admin
from sncli.kafka.producer import PageProducer
from sncli.kafka.retention import mirror_topics
from sncli.metrics import RunMetrics, push_per_table, push_started
from sncli.servicenow.client import ServiceNowClient
from sncli.source.poller import StopControl

if TYPE_CHECKING:
    from sncli.config import Settings, SourceTable

log = logging.getLogger("sncli.source")


@contextmanager
def stop_on_signals(stop: StopControl) -> Iterator[None]:
    """SIGTERM/SIGINT -> stop at the next page boundary (:func:`sncli.signals.stop_on_signals`)."""
    with signals.stop_on_signals(lambda: stop.request("signal"), then="stopping at the next page boundary"):
        yield


def start_metrics(settings: Settings, command: str, tables: list[str], extra_key: dict[str, str] | None = None) -> None:
    """Mark the run as started in each table's Pushgateway group (:func:`sncli.metrics.push_started`)."""
    push_started(settings.metrics.pushgateway, settings.metrics.job, command, tables, extra_key)


def finish_metrics(
    settings: Settings,
    metrics: RunMetrics,
    command: str,
    table_codes: dict[str, int],
    exit_code: int,
    extra_key: dict[str, str] | None = None,
) -> None:
    """Push the run's metrics, one Pushgateway group per table (:func:`sncli.metrics.push_per_table`)."""
    push_per_table(settings.metrics.pushgateway, settings.metrics.job, metrics, command, table_codes, exit_code,
                   extra_key)


def select_tables(settings: Settings, names: list[str]) -> list[SourceTable]:
    if not settings.source.tables:
        raise ConfigError("source.tables: no tables configured")
    if not names:
        return list(settings.source.tables)
    unique = list(dict.fromkeys(names))
    return [settings.source.table(n) for n in unique]


def check_source_settings(settings: Settings) -> None:
    """Settings a cursor cannot work with, refused before any work (exit 2)."""
    if settings.source.display_value == "true":
        raise ConfigError(
            "source.display_value: 'true' formats timestamps in the user's display format, which the "
            "cursor cannot compare; use 'false' or 'all'"
        )
    if settings.source.format == "avro" and not settings.kafka.schema_registry.url:
        raise ConfigError("source.format: 'avro' needs kafka.schema_registry.url")


def make_client(settings: Settings, metrics: RunMetrics, threads: int) -> ServiceNowClient:
    # Two connections per thread: the page being fetched ahead, and a spare for a retry.
    return ServiceNowClient(settings.servicenow, metrics=metrics, pool_size=max(4, 2 * threads + 2))


class Background:
    """One job on a daemon thread, started at once; ``wait()`` returns when it is done or re-raises its error.

    For start-up work that nothing needs until the first page is produced (topic
    creation: admin round trips), so it overlaps with the first fetch.
    """

    def __init__(self, job: Callable[[], object], name: str) -> None:
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._job = job
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        try:
            self._job()
        except BaseException as exc:
            self._error = exc
        finally:
            self._done.set()

    def wait(self) -> None:
        self._done.wait()
        if self._error is not None:
            raise self._error

    def settle(self) -> BaseException | None:
        """Wait for the job and return its error instead of raising it (for clean-up paths)."""
        self._done.wait()
        return self._error


def start_topic_check(settings: Settings, tables: list[SourceTable]) -> Background:
    """``ensure_topics`` for the tables' topics, in the background (see :class:`Background`)."""
    topics = {t.topic: t.partitions for t in tables}
    mirrors = source_mirror_topics(settings)
    return Background(lambda: admin.ensure_topics(settings.kafka, topics, mirrors=mirrors), name="ensure-topics")


def source_mirror_topics(settings: Settings) -> set[str]:
    """The source topics keyed by sys_id by every table that writes them (compacted when created)."""
    return mirror_topics((t.topic, isinstance(t.key, SysIdKey)) for t in settings.source.tables)


def new_producer(settings: Settings) -> PageProducer:
    """A producer, created as early as possible in a run.

    An idempotent producer needs its producer id before its first flush
    (:meth:`PageProducer.warm_up`, a round trip); created before the run's first
    ServiceNow requests, that wait overlaps with them instead of adding to the run.
    """
    producer = PageProducer(settings.kafka)
    producer.warm_up()
    return producer

