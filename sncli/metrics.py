"""Per-run Prometheus metrics, pushed to a Pushgateway when the run ends.

A bounded run lives seconds, so nothing scrapes it: each run owns a fresh
registry and pushes it once. ``pushadd`` (HTTP POST) is used, not ``push``:
a failed run then leaves ``sncli_last_success_timestamp_seconds`` of the last
good run in place, which is exactly what an alert on staleness needs.

Counters stay monotonic across runs, as a long-lived process's would. The Pushgateway is a
metrics cache, not an aggregator: a push replaces the group's metrics of the
same name, so a run that pushed only its own count would make every
``bridge_*_total`` fall back to one run's figure, and ``increase()`` /
``rate()`` would miss whatever a scrape did not see drop. So before pushing,
the group's current values are read back from the gateway (``GET /metrics``)
and each cumulative series (counters, histogram buckets/sum/count) is pushed
as *previous + this run's increment*; series of an earlier run that this run
did not touch are pushed again unchanged (a POST would otherwise drop them),
and a family this run did not add to is not pushed at all (left as it is).

What cannot be carried restarts, like a restarted process's counter, which
``rate()`` handles as a reset: a previous value that is not a finite
non-negative number, a histogram whose buckets changed, or a gateway whose
``/metrics`` answer cannot be read (logged). A gateway that cannot be reached
is logged and never fails the run (nothing is pushed).

The read-add-push is not atomic: two runs pushing the *same group* at the same
time could lose one's increment (or be seen as a reset). ``source poll``
pushes while it holds the tables' run locks, and each ``backfill --window``
pod has a group of its own; sink drains of one consumer group and backfills
of one table over different ranges must not overlap (the CronJob examples use
``concurrencyPolicy: Forbid``).

For alerting (deploy/prometheus/sncli-alerts.yml) each group also holds
``sncli_runs_total{exit_code}`` (every known code starts at 0, so ``increase()``
sees the first failure), ``sncli_run_started_timestamp_seconds`` (pushed when a
run has taken its locks, :func:`push_started`) and
``sncli_run_finished_timestamp_seconds`` (pushed at the end, except by a run the
lock refused): started after finished means a run that has not ended.
"""

from __future__ import annotations

import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from http.client import HTTPException

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import pushadd_to_gateway
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from sncli.errors import ExitCode

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: The sample suffixes of the families whose values only grow (carried forward across runs).
CUMULATIVE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
}

#: Pushed when a run has taken its locks, and when it ends (not by a run the lock refused: the holder
#: may still be running). Together they show a run that started and never ended (stuck, or killed).
STARTED = "sncli_run_started_timestamp_seconds"
FINISHED = "sncli_run_finished_timestamp_seconds"

#: The exit codes every table's ``sncli_runs_total`` starts with at 0, so that ``increase()`` sees
#: the first run that ends with one of them (a series that appears at 1 shows no increase).
EXIT_CODES = tuple(int(code) for code in ExitCode)

#: Labels that only grouping keys carry, never a metric: a sample with one belongs to a group that has it.
GROUP_ONLY_LABELS = frozenset({"window"})

SeriesKey = tuple[str, frozenset[tuple[str, str]]]
#: One Pushgateway group: its grouping key (job aside) and the metric families pushed into it.
Group = tuple[Mapping[str, str], Sequence[Metric]]


class RunMetrics:
    """Every metric one run can report, in a registry of its own."""

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
        self.source_deletes = Counter(
            "sncli_source_deletes",
            "Deletes read from sys_audit_delete whose tombstones Kafka acknowledged (deletes: audit).",
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
            "bridge_offset_lag_seconds",
            "How far behind ServiceNow the topic is: now minus the upper bound a caught-up cycle reached, "
            "else minus the stored cursor's timestamp.",
            ["table"],
            registry=r,
        )
        self.sink_records = Counter(
            "bridge_sink_records", "Records handled by the sink.", ["table", "op", "outcome"], registry=r
        )
        self.dlq_records = Counter("bridge_dlq_records", "Records written to the DLQ.", ["class"], registry=r)
        self.source_dlq_records = Counter(
            "bridge_source_dlq_records", "Source records written to the DLQ instead of their topic.",
            ["table", "class"], registry=r,
        )
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


def push_groups(gateway: str | None, job: str, groups: Iterable[Group], timeout: float = 5.0) -> bool:
    """Push each group with its counters carried forward (module doc); False when not (all) pushed."""
    if not gateway:
        return False
    try:
        pushed = read_pushed(gateway, timeout)
    except OSError as exc:
        log.warning("could not push metrics to %s: %s", gateway, exc)
        return False
    for key, families in groups:
        previous = None if pushed is None else group_samples(pushed, job, key)
        carried, restarted = carry_forward(families, previous, key)
        if restarted and previous is not None:
            log.warning("metrics %s of %s: the pushed values cannot be carried forward (not a finite count, "
                        "or other buckets); they restart from this run's", ", ".join(restarted), _show(key))
        if not _pushadd(gateway, job, carried, dict(key), timeout):
            return False
    return True


def _pushadd(gateway: str, job: str, families: Sequence[Metric], key: dict[str, str], timeout: float) -> bool:
    """One group's families added to the Pushgateway; False (logged, never raised) when it cannot be reached."""
    registry = CollectorRegistry()
    registry.register(_Families(families))
    try:
        pushadd_to_gateway(gateway, job=job, registry=registry, grouping_key=key, timeout=timeout)
    except Exception as exc:
        log.warning("could not push metrics to %s: %s", gateway, exc)
        return False
    return True


def push_started(
    gateway: str | None,
    job: str,
    command: str,
    tables: Iterable[str],
    extra_key: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> bool:
    """Mark a run of ``tables`` as started: ``sncli_run_started_timestamp_seconds`` in each table's group.

    The same groups as :func:`push_per_table`. Only a gauge, so nothing is read back or carried.
    """
    if not gateway:
        return False
    now = time.time()
    for table in sorted(set(tables)):
        started = GaugeMetricFamily(STARTED, "When the run started (locks taken).", value=now)
        if not _pushadd(gateway, job, [started], {"command": command, "table": table, **(extra_key or {})}, timeout):
            return False
    return True


def push_per_table(
    gateway: str | None,
    job: str,
    metrics: RunMetrics,
    command: str,
    table_codes: Mapping[str, int],
    exit_code: int,
    extra_key: Mapping[str, str] | None = None,
) -> bool:
    """Push a run's metrics, one Pushgateway group per table: {job, command, table} (+ ``extra_key``).

    Why per table and not one group for a multi-table run: every per-table series
    carries a ``table`` label, and the Pushgateway overwrites a series' label with
    the grouping label of the same name, so two tables' series in one group
    collapse into duplicates and the push is refused (HTTP 400). A group per table
    also gives each table its own ``sncli_last_success_timestamp_seconds``, which
    is what a staleness alert per table needs: a table that failed in a partial
    run keeps its previous success time. ``sncli_run_exit_code`` of a group is the
    table's own outcome (``table_codes``; the run's code for a table only seen in
    the samples, e.g. one a sink routed a record to). Counters are carried forward
    across runs and a gateway that is down is logged, never fatal.
    """
    metrics.finish(exit_code)
    if not gateway:
        return False
    families = list(metrics.registry.collect())
    seen = {s.labels["table"] for family in families for s in family.samples if "table" in s.labels}
    codes = {**dict.fromkeys(seen, exit_code), **table_codes}
    names = sorted(codes)
    if not names:
        return False
    return push_groups(gateway, job, [
        ({"command": command, "table": name, **(extra_key or {})}, _families_for(families, name, names, codes[name]))
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
    runs = CounterMetricFamily("sncli_runs", "Runs ended, by exit code.", labels=["exit_code"])
    for known in sorted({*EXIT_CODES, code}):
        runs.add_metric([str(known)], 1.0 if known == code else 0.0)
    out.append(runs)
    if code != ExitCode.LOCKED:  # refused by the lock: it never started, and the holder may still run
        out.append(GaugeMetricFamily(FINISHED, "When the last run that held its locks ended.", value=time.time()))
    if code == 0:
        out.append(GaugeMetricFamily("sncli_last_success_timestamp_seconds", "When a run last succeeded.",
                                     value=time.time()))
    return out


def read_pushed(gateway: str, timeout: float) -> list[Sample] | None:
    """Every sample the gateway serves; None when its answer cannot be read. Raises OSError when unreachable."""
    url = f"{gateway.rstrip('/')}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            text = resp.read().decode("utf-8")
        return [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    except urllib.error.HTTPError as exc:  # reachable, but it would not show what it holds
        problem = f"HTTP {exc.code}"
    except (ValueError, HTTPException) as exc:  # a garbled exposition (UnicodeDecodeError is a ValueError)
        problem = f"{type(exc).__name__}: {exc}"
    log.warning("could not read the metrics on %s (%s): pushed counters restart from this run's figures",
                gateway, problem)
    return None


def group_samples(samples: Iterable[Sample], job: str, grouping_key: Mapping[str, str]) -> dict[SeriesKey, Sample]:
    """The samples of one group (``job`` + ``grouping_key``), by series.

    The gateway adds ``instance=""`` to a group without an instance label, so a
    sample of another group with an instance of its own is not ours; likewise a
    sample with a label only grouping keys carry (:data:`GROUP_ONLY_LABELS`) that
    ours lacks belongs to another group (a backfill pod's ``window``), not to us.
    """
    wanted = {"instance": "", **grouping_key, "job": job}
    others = GROUP_ONLY_LABELS - set(grouping_key)
    return {
        series_key(sample.name, sample.labels): sample
        for sample in samples
        if all({"instance": "", **sample.labels}.get(k) == v for k, v in wanted.items())
        and not others & set(sample.labels)
    }


def series_key(name: str, labels: Mapping[str, str]) -> SeriesKey:
    """A series as the gateway shows it: without ``job`` or an empty ``instance``; ``le`` by its number.

    The gateway re-renders bucket bounds (``le="1.0"`` comes back as ``le="1"``).
    """
    items = set()
    for k, v in labels.items():
        if k == "job" or (k == "instance" and v == ""):
            continue
        items.add((k, _number_text(v) if k in ("le", "quantile") else v))
    return name, frozenset(items)


def carry_forward(
    families: Iterable[Metric],
    previous: Mapping[SeriesKey, Sample] | None,
    grouping_key: Mapping[str, str],
) -> tuple[list[Metric], list[str]]:
    """The families to push, cumulative ones as previous + this run; and the names that restart.

    ``previous``: the group's samples on the gateway, None when they could not be
    read (then what this run counted is pushed as is, a reset, and what it did not
    count is left alone). ``_created`` samples are dropped: a carried counter was
    not created by this run.
    """
    out: list[Metric] = []
    restarted: list[str] = []
    for family in families:
        suffixes = CUMULATIVE_SUFFIXES.get(family.type)
        if suffixes is None:
            out.append(family)
            continue
        names = {family.name + suffix for suffix in suffixes}
        run = [s for s in family.samples if s.name in names]
        counted = any(s.value for s in run)
        before = {} if previous is None else {k: s for k, s in previous.items() if k[0] in names}
        if (previous is None or before) and not counted:
            continue  # nothing added: the gateway keeps what it has (or nothing was ever pushed and it stays so)
        if previous is None or not _carriable(before.values(), run):
            restarted.append(family.name)
            out.append(_family(family, run))
            continue
        merged: list[Sample] = []
        seen: set[SeriesKey] = set()
        for sample in run:
            key = series_key(sample.name, {**sample.labels, **grouping_key})
            seen.add(key)
            old = before.get(key)
            merged.append(sample._replace(value=sample.value + (old.value if old is not None else 0.0)))
        for key, old in sorted(before.items(), key=lambda item: (item[0][0], sorted(item[0][1]))):
            if key not in seen:  # a series of an earlier run that this one did not touch: keep it
                labels = dict(key[1]) | {k: v for k, v in old.labels.items() if k in ("le", "quantile")}
                merged.append(Sample(old.name, labels, old.value))
        out.append(_family(family, merged))
    return out, restarted


def _carriable(before: Iterable[Sample], run: Sequence[Sample]) -> bool:
    bounds = {_number_text(s.labels["le"]) for s in run if "le" in s.labels}
    for sample in before:
        if not math.isfinite(sample.value) or sample.value < 0:
            return False
        if "le" in sample.labels and bounds and _number_text(sample.labels["le"]) not in bounds:
            return False  # the bucket layout changed: merged buckets would not be cumulative
    return True


def _number_text(value: str) -> str:
    try:
        return repr(float(value))
    except ValueError:
        return value


def _family(family: Metric, samples: list[Sample]) -> Metric:
    copy = Metric(family.name, family.documentation, family.type, family.unit)
    copy.samples = samples
    return copy


def _show(grouping_key: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in grouping_key.items())


class _Families:
    """A collector serving prepared metric families (what one group pushes)."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> list[Metric]:
        return self._families
