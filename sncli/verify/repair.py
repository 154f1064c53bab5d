"""``verify --repair``: re-send what differs through the source's own produce path.

- missing and stale records are fetched again by sys_id (with the table's
  ``fields`` and the source's ``display_value``, as a poll fetches them) and
  produced by :class:`sncli.source.kafka_out.KafkaPageOutput`, the poll's
  output: same key, value, headers and timestamp a poll would give them, a
  record Kafka refuses dead-lettered the same way;
- each extra gets a tombstone: its key in the topic, a null value, headers
  ``sn.table``, ``sn.sys_id``, ``sn.instance``, ``sn.extracted_at`` and
  ``sn.operation: delete``, stamped now (so it is the latest message of the
  record on a table keyed by fields too).

Every message is acknowledged (``acks=all``) before the repair counts it; a
failure raises and the table's report says so. No offset is read or written
here: the poll cursor never moves. A repair killed midway has only added
messages; the next verify finds what is still missing and sends it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sncli.kafka.errors import ProduceError
from sncli.source.kafka_out import KafkaPageOutput
from sncli.source.record import instance_name, tombstone_headers
from sncli.source.runkit import new_producer
from sncli.verify.report import Repair, TableReport
from sncli.verify.sn_side import ServiceNowSide

if TYPE_CHECKING:
    from sncli.config import Settings, SourceTable
    from sncli.metrics import RunMetrics
    from sncli.servicenow.client import ServiceNowClient

Header = tuple[str, bytes]


def repair_table(settings: Settings, client: ServiceNowClient, metrics: RunMetrics, table: SourceTable,
                 report: TableReport) -> Repair:
    done = Repair()
    side = ServiceNowSide(client, table)
    try:
        wanted = sorted({*report.findings.missing, *(s.sys_id for s in report.findings.stale)})
        if wanted:
            _resend(settings, client, metrics, table, side, wanted, done)
        if report.findings.extra:
            done.tombstones = _tombstones(settings, table, report)
    finally:
        report.requests += side.requests
    return done


def _resend(settings: Settings, client: ServiceNowClient, metrics: RunMetrics, table: SourceTable,
            side: ServiceNowSide, wanted: list[str], done: Repair) -> None:
    fields = list(table.fields) if table.fields is not None else None
    output = KafkaPageOutput(settings, table, client, metrics)
    try:
        # A batch at a time (fetched, produced, acknowledged): memory stays bounded, and a repair
        # killed midway has delivered whole batches.
        for records in side.record_batches(wanted, fields=fields, display_value=settings.source.display_value):
            if records:
                done.resent += output.send(records, output.prepare(records))()  # waits for every ack, or raises
    finally:
        output.close()
    done.vanished = len(wanted) - done.resent


def _tombstones(settings: Settings, table: SourceTable, report: TableReport) -> int:
    producer = new_producer(settings)
    instance = instance_name(settings.servicenow.instance_url)
    now = datetime.now(UTC)
    stamp = int(now.timestamp() * 1000)
    try:
        for sys_id in report.findings.extra:
            key = report.extra_keys.get(sys_id, sys_id.encode())
            producer.send(table.topic, key, None, tombstone_headers(table.name, sys_id, instance, now), stamp)
        acked = producer.flush()
    finally:
        producer.close()
    if acked != len(report.findings.extra):
        raise ProduceError(f"{table.topic}: {acked} of {len(report.findings.extra)} tombstones acknowledged",
                           topic=table.topic)
    return acked
