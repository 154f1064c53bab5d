"""The helpers every source run shares (``source poll`` and ``backfill``).

Settings checks and table selection, the ServiceNow client and Kafka producers
of a run, the topic check run in the background, SIGTERM/SIGINT as a stop at
the next page boundary, and the metrics push at the end (one Pushgateway group
per table).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from sncli.config import SysIdKey
from sncli.errors import ConfigError
from sncli.kafka import admin
from sncli.kafka.producer import PageProducer
from sncli.kafka.retention import mirror_topics
from sncli.metrics import RunMetrics, push_groups
from sncli.servicenow.client import ServiceNowClient
from sncli.source.poller import StopControl

if TYPE_CHECKING:
    from sncli.config import Settings, SourceTable

log = logging.getLogger("sncli.source")


@contextmanager
def stop_on_signals(stop: StopControl) -> Iterator[None]:
    """SIGTERM/SIGINT -> stop at the next page boundary (Kubernetes sends SIGTERM, then waits).

    A second signal restores the default handlers, so an operator can still kill a
    run that does not stop quickly. Only possible on the main thread; elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[signal.Signals, Callable[[int, FrameType | None], object] | int | None] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        log.warning("%s received: stopping at the next page boundary (send it again to stop at once)", name)
        stop.request("signal")
        for sig, old in previous.items():
            signal.signal(sig, old)

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def finish_metrics(
    settings: Settings,
    metrics: RunMetrics,
    command: str,
    table_codes: dict[str, int],
    exit_code: int,
    extra_key: dict[str, str] | None = None,
) -> None:
    """Push the run's metrics, one Pushgateway group per table: {job, command, table} (+ ``extra_key``).

    Why per table and not one group for a multi-table run: every per-table series
    carries a ``table`` label, and the Pushgateway overwrites a series' label with
    the grouping label of the same name, so two tables' series in one group
    collapse into duplicates and the push is refused (HTTP 400). A group per table
    also gives each table its own ``sncli_last_success_timestamp_seconds``, which
    is what a staleness alert per table needs: a table that failed in a partial
    run keeps its previous success time. ``sncli_run_exit_code`` of a group is the
    table's own outcome (the run's code when the whole run stopped, e.g. 75).
    Counters are carried forward across runs and a Pushgateway that is down is
    logged, never fatal (:mod:`sncli.metrics`).
    """
    metrics.finish(exit_code)
    gateway = settings.metrics.pushgateway
    if not gateway:
        return
    families = list(metrics.registry.collect())
    names = sorted(table_codes)
    push_groups(gateway, settings.metrics.job, [
        ({"command": command, "table": name, **(extra_key or {})},
         _families_for(families, name, names, table_codes[name]))
        for name in names
    ], timeout=5.0)


def _families_for(families: list[Metric], table: str, tables: list[str], code: int) -> list[Metric]:
    endpoints = {f"table/{t}": t for t in tables}
    first = tables[0]

    def keep(labels: dict[str, str]) -> bool:
        if "table" in labels:
            return labels["table"] == table
        if "endpoint" in labels:
            # Calls for a selected table go to its group; auxiliary ones (OAuth, sys_dictionary) to the first.
            return endpoints.get(labels["endpoint"], first) == table
        return True

    out: list[Metric] = []
    for family in families:
        if family.name in ("sncli_run_exit_code", "sncli_last_success_timestamp_seconds"):
            continue
        samples = [s for s in family.samples if keep(s.labels)]
        if samples:
            copy = Metric(family.name, family.documentation, family.type, family.unit)
            copy.samples = samples
            out.append(copy)
    out.append(GaugeMetricFamily("sncli_run_exit_code", "Exit code of the last run.", value=code))
    if code == 0:
        out.append(GaugeMetricFamily("sncli_last_success_timestamp_seconds", "When a run last succeeded.",
                                     value=time.time()))
    return out



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

