"""A drain of two tables pushes its metrics (adversarial review).

The sink's group was {command=sink_drain, table="incident,problem"}; every
bridge_sink_records series has a `table` label too, which the Pushgateway
overwrites with the group's, so the incident and problem series collided and the
push was refused (HTTP 400). The sink now pushes one group per table, as the source does.
"""

from __future__ import annotations

import urllib.request
import uuid

import pytest

from sncli.emulator.server import ServiceNowEmulator
from sncli.sink.drain import run_drain
from sncli.sink.job import DrainOptions
from tests.integration.sink_support import config_dict, create_topic, json_value, produce, settings_of

pytestmark = pytest.mark.integration


def test_a_drain_of_two_tables_pushes_its_metrics(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, pushgateway_url: str
) -> None:
    inc, prb = (f"{n}-{uuid.uuid4().hex[:8]}" for n in ("inc", "prb"))
    for topic in (inc, prb):
        create_topic(kafka_bootstrap, topic, 1)
        produce(kafka_bootstrap, topic, [(b"k", json_value({"number": topic}), None)])
    data = config_dict(emulator.url, kafka_bootstrap, [{"topic": inc, "table": "incident"},
                                                       {"topic": prb, "table": "problem"}],
                       pushgateway=pushgateway_url, workers=1)
    job = f"adv-{uuid.uuid4().hex[:8]}"
    data["metrics"]["job"] = job
    summary = run_drain(settings_of(data), DrainOptions())
    assert summary.written == {"post": 2}
    text = urllib.request.urlopen(f"{pushgateway_url}/metrics", timeout=5).read().decode()
    mine = [line for line in text.splitlines() if f'job="{job}"' in line and line.startswith("bridge_sink_records")]
    print(mine)
    assert mine, "the drain's metrics never reached the Pushgateway"
