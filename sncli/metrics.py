"""Per-run Prometheus metrics, pushed to a Pushgateway when the run ends.

A bounded run lives seconds, so nothing scrapes it: each run owns a fresh
registry and pushes it once. ``pushadd`` (HTTP POST) is used, not ``push``:
a failed run then leaves ``sncli_last_success_timestamp_seconds`` of the last
good run in place, which is exactly what an alert on staleness needs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import pushadd_to_gateway

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RunMetrics:
    """Every metric one run can report (DESIGN.md §7), in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.source_records = Counter(
            "bridge_source_records", "Records fetched from ServiceNow.", ["table"], registry=r
        )
        self.source_produced = Counter(
            "bridge_source_produce", "Records acknowledged by Kafka.", ["table"], registry=r
        )
        self.source_hidden = Counter(
            "sncli_source_hidden_records",
            "Rows ServiceNow's ACLs hid from the integration user that the cursor passed (never exported).",
            ["table"],
            registry=r,
        )
        self.sn_api_latency = Histogram(
            "bridge_sn_api_latency_seconds",
            "ServiceNow API call latency.",
            ["endpoint", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.offset_lag = Gauge(
            "bridge_offset_lag_seconds", "Now minus the stored cursor's timestamp.", ["table"], registry=r
        )
        self.sink_records = Counter(
            "bridge_sink_records", "Records handled by the sink.", ["table", "op", "outcome"], registry=r
        )
        self.dlq_records = Counter("bridge_dlq_records", "Records written to the DLQ.", ["class"], registry=r)
        self.run_duration = Gauge("sncli_run_duration_seconds", "Wall time of the run.", registry=r)
        self.run_exit_code = Gauge("sncli_run_exit_code", "Exit code of the last run.", registry=r)
        self._last_success = Gauge(
            "sncli_last_success_timestamp_seconds", "When a run last succeeded.", registry=r
        )
        self._started = time.monotonic()

    def observe_api_call(self, endpoint: str, method: str, seconds: float) -> None:
        self.sn_api_latency.labels(endpoint=endpoint, method=method).observe(seconds)

    def finish(self, exit_code: int) -> None:
        self.run_duration.set(time.monotonic() - self._started)
        self.run_exit_code.set(exit_code)
        if exit_code == 0:
            self._last_success.set_to_current_time()
        else:
            # Not pushed at all, so the gateway keeps the last good run's value.
            self.registry.unregister(self._last_success)


def push_metrics(
    metrics: RunMetrics,
    gateway: str | None,
    job: str,
    grouping_key: Mapping[str, str],
    timeout: float = 5.0,
) -> bool:
    """Push the run's metrics; a gateway that is down is logged and never fails the run."""
    if not gateway:
        return False
    try:
        pushadd_to_gateway(gateway, job=job, registry=metrics.registry, grouping_key=dict(grouping_key),
                           timeout=timeout)
    except Exception as exc:
        log.warning("could not push metrics to %s: %s", gateway, exc)
        return False
    return True
