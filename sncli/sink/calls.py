"""How a sink run talks to ServiceNow: write mode, calls in flight, and what bounded them.

One place decides, from ``sink.write_mode`` / ``batch_size`` / ``batch_max_wait_ms``
/ ``concurrency`` and ``workers``, how the run's client is built: single calls
or Batch API exchanges (:mod:`sncli.servicenow.batching`), behind the in-flight
gate (:mod:`sncli.servicenow.gate`, AIMD). The write policies
(:mod:`sncli.sink.writer`) are the same either way: batch mode changes where a
write's attempts travel, not what happens to a record.

It also says what the configured limits allow (the drain's start line, ``doctor``)
and, at the end, whether the client rate limit was what bounded the run: a
limit nobody sees is the worst kind.
"""

from __future__ import annotations

import logging
from typing import Any

from sncli.config import Settings
from sncli.metrics import RunMetrics
from sncli.servicenow.client import ServiceNowClient
from sncli.servicenow.concurrency import AimdController
from sncli.servicenow.gate import Gate

log = logging.getLogger(__name__)

#: Threads of the keyed pool in batch mode at most (each holds one record's write while it waits).
MAX_BATCH_THREADS = 1024
#: The achieved call rate, as a share of the configured one, from which the rate limit counts as the bound.
BOUND_SHARE = 0.8


def pool_threads(settings: Settings, workers: int) -> int:
    """Writes in progress at once: ``workers`` single calls, or enough to fill ``workers`` batches."""
    sink = settings.sink
    if sink.write_mode == "single":
        return workers
    return max(1, min(sink.max_pending, sink.batch_size * workers, MAX_BATCH_THREADS))


def open_client(settings: Settings, workers: int, metrics: RunMetrics) -> ServiceNowClient:
    """The run's client: gated by the in-flight limit, carrying writes in batches in batch mode."""
    sink = settings.sink
    gate = Gate(AimdController(workers), adaptive=sink.concurrency == "adaptive",
                max_pause=settings.servicenow.retry.max_elapsed_seconds)
    client = ServiceNowClient(settings.servicenow, metrics=metrics, pool_size=workers, gate=gate)
    if sink.write_mode == "batch":
        client.use_batches(size=sink.batch_size, max_wait=sink.batch_max_wait_ms / 1000.0, senders=workers)
    return client


def describe_limits(settings: Settings, workers: int) -> list[str]:
    """What the configured limits allow, in plain words (the drain logs them at start; doctor prints them)."""
    sink = settings.sink
    per_call = sink.batch_size if sink.write_mode == "batch" else 1
    mode = (f"write_mode batch: up to {sink.batch_size} writes per call (waiting up to {sink.batch_max_wait_ms} ms "
            "to fill)") if per_call > 1 else "write_mode single: one write per call"
    calls = (f"up to {workers} calls in flight, adapting to what the instance accepts (AIMD; fewer after 429s)"
             if sink.concurrency == "adaptive" else f"{workers} calls in flight (concurrency: fixed)")
    lines = [f"{mode}; {calls}"]
    limit = settings.servicenow.rate_limit
    if limit is None:
        lines.append("no client rate limit (servicenow.rate_limit: null): the instance's answers set the pace")
    else:
        lines.append(f"servicenow.rate_limit {limit.requests_per_second:g} calls/s (burst {limit.burst}) caps a "
                     f"drain at about {limit.requests_per_second * per_call:g} writes/s")
    return lines


def calls_report(client: ServiceNowClient | None, seconds: float) -> dict[str, Any] | None:
    """The run's calls for the summary: how many, refusals, the limit reached, and the rate limit's share."""
    if client is None:
        return None
    report: dict[str, Any] = {}
    if client.gate is not None:
        stats = client.gate.stats()
        report.update(calls=stats.calls, refused_429_503=stats.refused, concurrency_limit=stats.limit,
                      concurrency_max=stats.maximum, paused_seconds=stats.paused_seconds)
    batcher = client.batcher
    if batcher is not None:
        report.update(batches=batcher.batches, batch_items=batcher.items, unserviced=batcher.unserviced)
    bucket = client.rate_bucket
    if bucket is not None:
        rate = bucket.taken / seconds if seconds > 0 else 0.0
        bound = bucket.waits > 0 and rate >= BOUND_SHARE * bucket.rate
        report["rate_limit"] = {"requests_per_second": bucket.rate, "calls_per_second": round(rate, 2),
                                "waits": bucket.waits, "bound_the_run": bound}
        if bound:
            log.warning("servicenow.rate_limit (%g calls/s) bounded this run: %d calls waited for it; raise or "
                        "remove it (null) to let the instance's answers set the pace", bucket.rate, bucket.waits)
    return report
