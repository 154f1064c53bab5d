"""Carrying counters forward must not read another group's series as its own (adversarial review).

`group_samples` kept every sample whose labels *include* the group's key, so the
group {command=backfill, table=T} (a plain backfill) also read the series of
{command=backfill, table=T, window=1of2} (an Indexed-Job pod) and pushed them
again into its own group. The Pushgateway then served one series from two
groups and refused the push (HTTP 400).
"""

from __future__ import annotations

import urllib.request
import uuid

import pytest

from sncli.metrics import RunMetrics, push_groups

pytestmark = pytest.mark.integration


def produced(gateway: str, job: str) -> list[str]:
    text = urllib.request.urlopen(f"{gateway}/metrics", timeout=5).read().decode()
    return sorted(line for line in text.splitlines()
                  if line.startswith("bridge_source_produce_total") and f'job="{job}"' in line)


def run(gateway: str, job: str, count: int, key: dict[str, str]) -> bool:
    metrics = RunMetrics()
    metrics.source_produced.labels(table="incident").inc(count)
    return push_groups(gateway, job, [(key, list(metrics.registry.collect()))])


def test_a_plain_backfill_pushes_after_a_windowed_one(pushgateway_url: str) -> None:
    job = f"adv-{uuid.uuid4().hex[:8]}"
    assert run(pushgateway_url, job, 100, {"command": "backfill", "table": "incident", "window": "1of2"})
    pushed = run(pushgateway_url, job, 1, {"command": "backfill", "table": "incident"})
    print(produced(pushgateway_url, job))
    assert pushed, "the plain backfill's push was refused"
    assert any('window' not in line and float(line.rsplit(" ", 1)[1]) == 1.0 for line in produced(pushgateway_url, job))
