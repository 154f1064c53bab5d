"""ADVERSARIAL (wt-R): a signed DLQ record copied verbatim back into the DLQ is replayed again.

The signature covers key, value and headers but nothing that ties it to one DLQ
position or one replay: whoever can read and produce to the DLQ re-injects a
historic record and replay writes it again (a PATCH of an old value rolls the
record back; a POST creates a duplicate).  Expected to FAIL on wt-R's tree.
"""

from __future__ import annotations

import uuid

import pytest

from sncli.dlq import Filters, run_replay
from sncli.emulator.server import ServiceNowEmulator
from sncli.sink.drain import DrainOptions, run_drain
from tests.fixtures.kafka import read_all
from tests.integration.sink_support import (
    config_dict,
    create_topic,
    json_value,
    produce,
    settings_of,
    sid,
    writes,
)

pytestmark = pytest.mark.integration


def test_a_historic_signed_dlq_record_is_not_replayed_a_second_time(
    emulator: ServiceNowEmulator, kafka_bootstrap: str
) -> None:
    inc, dlq = (f"{n}-{uuid.uuid4().hex[:8]}" for n in ("inc", "dlq"))
    create_topic(kafka_bootstrap, inc, 1)
    create_topic(kafka_bootstrap, dlq, 1)
    emulator.state.insert("u_denied", {"sys_id": sid(7), "state": "1"})
    emulator.state.update_settings(denied_tables={"u_denied"})
    cfg = {"topic": inc, "table": "incident", "route_header": "sn.table", "allowed_tables": ["u_denied"]}
    settings = settings_of(config_dict(emulator.url, kafka_bootstrap, [cfg], dlq_topic=dlq, workers=1))

    # state=2 fails (403) and is dead-lettered, signed.
    produce(kafka_bootstrap, inc, [(b"k", json_value({"sys_id": sid(7), "state": "2"}), [("sn.table", b"u_denied")])])
    assert run_drain(settings, DrainOptions()).dlq == {"permission": 1}
    historic = read_all(kafka_bootstrap, dlq)[0]

    # Fixed; replay writes state=2; later the sink writes the newer state=3.
    emulator.state.update_settings(denied_tables=set())
    assert run_replay(settings, Filters()).written == {"patch": 1}
    produce(kafka_bootstrap, inc, [(b"k", json_value({"sys_id": sid(7), "state": "3"}), [("sn.table", b"u_denied")])])
    assert run_drain(settings, DrainOptions()).written == {"patch": 1}
    assert [r["state"] for r in emulator.state.records("u_denied")] == ["3"]

    # A DLQ producer copies the historic record back, byte for byte.
    produce(kafka_bootstrap, dlq, [(historic.key, historic.value, list(historic.headers))])
    emulator.state.clear_journal()
    again = run_replay(settings, Filters())
    journal = [(e.method, e.table) for e in writes(emulator.state.journal())]
    print("second replay:", again.written, again.refused, journal)
    print("state now:", [r["state"] for r in emulator.state.records("u_denied")])
    assert again.written == {}, "a record already replayed was written again"
    assert [r["state"] for r in emulator.state.records("u_denied")] == ["3"]


def test_unsigned_records_a_dlq_producer_writes_do_not_grow_the_dlq_and_fail_every_replay(
    emulator: ServiceNowEmulator, kafka_bootstrap: str
) -> None:
    """Each replay carries every unsigned record forward (a new copy at the DLQ's end) and exits 3.

    There is no command that drops them (inspect/replay/export only), the DLQ topic
    now keeps records forever, so K forged records cost K more records per replay, forever.
    """
    inc, dlq = (f"{n}-{uuid.uuid4().hex[:8]}" for n in ("inc", "dlq"))
    create_topic(kafka_bootstrap, inc, 1)
    create_topic(kafka_bootstrap, dlq, 1)
    settings = settings_of(config_dict(emulator.url, kafka_bootstrap, [{"topic": inc, "table": "incident"}],
                                       dlq_topic=dlq, workers=1))
    def forged(n: int) -> list[tuple[str, bytes | None]]:
        return [("sncli.error.class", b"record"), ("sncli.error.topic", inc.encode()),
                ("sncli.error.partition", b"0"), ("sncli.error.offset", str(n).encode())]

    produce(kafka_bootstrap, dlq, [(None, json_value({"n": n}), forged(n)) for n in range(5)])
    sizes, codes = [], []
    for _ in range(3):
        codes.append(run_replay(settings, Filters()).exit_code)
        sizes.append(len(read_all(kafka_bootstrap, dlq)))
    print("exit codes", codes, "DLQ sizes after each replay", sizes)
    assert sizes[-1] == sizes[0], f"the DLQ grew {sizes} from 5 forged records"
