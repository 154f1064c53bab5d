"""Counters carried forward across runs (sncli.metrics.carry_forward, group_samples): pure logic."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from sncli.metrics import SeriesKey, carry_forward, group_samples

KEY = {"command": "sink_drain", "table": "incident"}


def gateway(text: str) -> dict[SeriesKey, Sample]:
    """Samples as the Pushgateway serves them, ours being job=sncli + KEY."""
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    return group_samples(samples, "sncli", KEY)


def run_families(records: dict[tuple[str, str], float], latencies: list[float] | None = None) -> list[Metric]:
    registry = CollectorRegistry()
    counter = Counter("bridge_sink_records", "h", ["table", "op", "outcome"], registry=registry)
    for (op, outcome), amount in records.items():
        counter.labels(table="incident", op=op, outcome=outcome).inc(amount)
    histogram = Histogram("lat_seconds", "h", ["method"], buckets=(0.5, 1.0), registry=registry)
    for value in latencies or []:
        histogram.labels(method="POST").observe(value)
    Gauge("sncli_run_duration_seconds", "h", registry=registry).set(1.5)
    return list(registry.collect())


def values(families: list[Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in KEY))): s.value
            for f in families for s in f.samples}


LABELS = 'command="sink_drain",instance="",job="sncli",table="incident"'


def test_previous_plus_this_run_and_untouched_series_kept() -> None:
    before = gateway(
        "# TYPE bridge_sink_records_total counter\n"
        f'bridge_sink_records_total{{{LABELS},op="post",outcome="written"}} 10\n'
        f'bridge_sink_records_total{{{LABELS},op="patch",outcome="written"}} 4\n'
    )
    out, restarted = carry_forward(run_families({("post", "written"): 3}), before, KEY)
    got = values(out)
    assert got[("bridge_sink_records_total", (("op", "post"), ("outcome", "written")))] == 13
    assert got[("bridge_sink_records_total", (("op", "patch"), ("outcome", "written")))] == 4
    assert got[("sncli_run_duration_seconds", ())] == 1.5  # gauges as they are
    assert not [name for name, _ in got if name.endswith("_created")] and restarted == []


def test_other_groups_jobs_and_instances_are_not_ours() -> None:
    before = gateway(
        "# TYPE bridge_sink_records_total counter\n"
        'bridge_sink_records_total{command="sink_drain",instance="",job="other",table="incident",op="post",'
        'outcome="written"} 100\n'
        'bridge_sink_records_total{command="sink_drain",instance="pod-1",job="sncli",table="incident",op="post",'
        'outcome="written"} 100\n'
        'bridge_sink_records_total{command="backfill",instance="",job="sncli",table="incident",op="post",'
        'outcome="written"} 100\n'
    )
    assert before == {}
    out, _ = carry_forward(run_families({("post", "written"): 3}), before, KEY)
    assert values(out)[("bridge_sink_records_total", (("op", "post"), ("outcome", "written")))] == 3


def test_a_family_this_run_did_not_add_to_is_left_alone_unless_the_gateway_has_none() -> None:
    before = gateway("# TYPE bridge_sink_records_total counter\n"
                     f'bridge_sink_records_total{{{LABELS},op="post",outcome="written"}} 10\n')
    out, _ = carry_forward(run_families({("post", "written"): 0}), before, KEY)
    assert "bridge_sink_records" not in {f.name for f in out}
    out, _ = carry_forward(run_families({("post", "written"): 0}), {}, KEY)
    assert values(out)[("bridge_sink_records_total", (("op", "post"), ("outcome", "written")))] == 0


def test_histograms_carry_bucket_by_bucket_whatever_the_bound_spelling() -> None:
    before = gateway(
        "# TYPE lat_seconds histogram\n"
        f'lat_seconds_bucket{{{LABELS},method="POST",le="0.5"}} 1\n'
        f'lat_seconds_bucket{{{LABELS},method="POST",le="1"}} 2\n'
        f'lat_seconds_bucket{{{LABELS},method="POST",le="+Inf"}} 3\n'
        f'lat_seconds_sum{{{LABELS},method="POST"}} 4.5\n'
        f'lat_seconds_count{{{LABELS},method="POST"}} 3\n'
    )
    out, restarted = carry_forward(run_families({}, [0.7, 2.0]), before, KEY)
    got = values(out)
    assert restarted == []
    assert got[("lat_seconds_bucket", (("le", "0.5"), ("method", "POST")))] == 1
    assert got[("lat_seconds_bucket", (("le", "1.0"), ("method", "POST")))] == 3
    assert got[("lat_seconds_bucket", (("le", "+Inf"), ("method", "POST")))] == 5
    assert got[("lat_seconds_count", (("method", "POST"),))] == 5
    assert math.isclose(got[("lat_seconds_sum", (("method", "POST"),))], 7.2)


def test_what_cannot_be_carried_restarts_from_this_run() -> None:
    nan = gateway("# TYPE bridge_sink_records_total counter\n"
                  f'bridge_sink_records_total{{{LABELS},op="post",outcome="written"}} NaN\n')
    out, restarted = carry_forward(run_families({("post", "written"): 3}), nan, KEY)
    assert restarted == ["bridge_sink_records"]
    assert values(out)[("bridge_sink_records_total", (("op", "post"), ("outcome", "written")))] == 3
    other_buckets = gateway("# TYPE lat_seconds histogram\n"
                            f'lat_seconds_bucket{{{LABELS},method="POST",le="0.25"}} 1\n'
                            f'lat_seconds_bucket{{{LABELS},method="POST",le="+Inf"}} 1\n'
                            f'lat_seconds_count{{{LABELS},method="POST"}} 1\n'
                            f'lat_seconds_sum{{{LABELS},method="POST"}} 0.1\n')
    _, restarted = carry_forward(run_families({}, [0.7]), other_buckets, KEY)
    assert restarted == ["lat_seconds"]


def test_an_unreadable_gateway_pushes_what_this_run_counted_and_nothing_else() -> None:
    out, restarted = carry_forward(run_families({("post", "written"): 2}), None, KEY)
    assert restarted == ["bridge_sink_records"] and {f.name for f in out} == {
        "bridge_sink_records", "sncli_run_duration_seconds"}
