"""The source's DLQ records are not "malformed" to the DLQ tools (adversarial review).

The source dead-letters with sncli.error.partition/offset = -1 (NOT_IN_KAFKA); the
strict number parsing once made that a problem: inspect marked the record
unparseable, and replay refused it as malformed and committed past it (exit 3)
instead of carrying it forward, and it dropped out of the pending view.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from sncli.dlq.record import NOT_IN_KAFKA, DeadLetterReason, Origin, dlq_headers
from sncli.dlq.select import Filters, View, replay_group
from sncli.dlq.signing import DlqSigner
from sncli.dlq.views import inspect_dlq
from sncli.emulator.server import ServiceNowEmulator
from sncli.sink.replay import run_replay
from tests.integration.sink_support import config_dict, create_topic, json_value, produce, settings_of

pytestmark = pytest.mark.integration


def test_a_source_dlq_record_is_not_malformed_and_stays_pending(
    emulator: ServiceNowEmulator, kafka_bootstrap: str
) -> None:
    inc, dlq = (f"{n}-{uuid.uuid4().hex[:8]}" for n in ("inc", "dlq"))
    create_topic(kafka_bootstrap, dlq, 1)
    settings = settings_of(config_dict(emulator.url, kafka_bootstrap, [{"topic": inc, "table": "incident"}],
                                       dlq_topic=dlq, workers=1))
    # Exactly what sncli.source.deadletter.dlq_record + DlqWriter write for a refused source record.
    headers = dlq_headers([], DeadLetterReason("refused", "record too large", table="incident"),
                          Origin("t.incident", NOT_IN_KAFKA, NOT_IN_KAFKA), now=datetime.now(UTC))
    signed = DlqSigner.of(settings.sink).sign(b"k", json_value({"number": "BIG"}), headers)
    produce(kafka_bootstrap, dlq, [(b"k", json_value({"number": "BIG"}), signed)])

    [entry] = inspect_dlq(settings.kafka, dlq, Filters(), 10, signer=DlqSigner.of(settings.sink))
    print("inspect problems:", entry.problems, "signature:", entry.signature)
    summary = run_replay(settings, Filters())
    print("replay exit", summary.exit_code, "refused", summary.refused, "carried", summary.carried_forward)
    pending = inspect_dlq(settings.kafka, dlq, Filters(), 10, view=View(replay_group(settings.sink.group_id)))
    print("pending after replay:", len(pending))
    assert entry.problems == (), "a record sncli itself wrote is shown as unparseable"
    assert summary.refused == {}, "replay refused the source's own signed record as malformed"
    assert len(pending) == 1, "the source record left the pending view"
