"""``dlq replay``: re-attempt DLQ records through the sink's resolve/write path.

Replay is the sink's engine (:class:`~sncli.sink.drain.SinkRun`) reading the DLQ
by assignment instead of the sink topics as a group member; what differs is how
a DLQ message becomes a :class:`~sncli.sink.drain.Job` (:class:`ReplayTriage`):

- selected by the filters, signed, with an origin: a Job for the ``sink.topics``
  entry of its original topic, carrying the original key, value and headers;
- not selected (or without an origin offset): *carried forward*, produced again
  unchanged at the end of the DLQ (acknowledged before the commit passes it);
- refused: unsigned (carried forward, it may predate the key), a wrong
  signature or unparseable headers (passed over: committed past, still listed
  by ``dlq inspect --all``). Refusals are counted in ``summary.refused`` (exit 3).

Successes are counted; failures go to the DLQ again with ``sncli.replay.count``
incremented and their original topic/partition/offset kept. Progress is
committed in the replay group (:func:`sncli.dlq.select.replay_group`), so a second replay resumes
after the first and never repeats finished work. Records re-dead-lettered by this
run land past the end seen at start (the run holds records back until every
partition's end is known): not re-read. Because unselected records are carried
forward, one group serves every filter: a replay of ``--table incident`` never
hides the other records from a later replay, and a later unfiltered replay never
re-sends (and duplicates) what an earlier filtered one wrote.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Literal

from sncli.config import Settings, SinkSettings
from sncli.dlq.record import DlqEntry, Origin, parse_entry
from sncli.dlq.select import Filters, replay_group
from sncli.dlq.signing import DlqSigner
from sncli.errors import UsageError
from sncli.metrics import RunMetrics
from sncli.sink.drain import SinkRun
from sncli.sink.job import DrainOptions, DrainSummary, Job, sink_tables
from sncli.sink.resolve import InRecord

log = logging.getLogger("sncli.dlq")  # the name the logs have always shown for replay lines

RefusedReason = Literal["unsigned", "bad_signature", "malformed"]


def check_replay_trust(signer: DlqSigner, filters: Filters, *, trust_unsigned: bool) -> None:
    """Refuse a replay that would hand out sink topics' rights on a DLQ producer's word (exit 2)."""
    if trust_unsigned and filters.topic is None:
        raise UsageError("--trust-unsigned needs --topic: name the one sink topic whose settings (table, routing, "
                         "deletes) the unsigned records may use")
    if not signer.enabled and not trust_unsigned:
        raise UsageError("sink.dlq_signing_key is not set, so DLQ records cannot be verified and replay writes "
                         "none of them: whoever can produce to the DLQ could claim any sink topic. Set the key "
                         "(the sink signs what it dead-letters from then on), or replay the records of one topic "
                         "you vouch for with --trust-unsigned --topic TOPIC")


def run_replay(
    settings: Settings,
    filters: Filters,
    *,
    group_id: str | None = None,
    dry_run: bool = False,
    workers: int | None = None,
    stop: threading.Event | None = None,
    metrics: RunMetrics | None = None,
    trust_unsigned: bool = False,
    drop_unsigned: bool = False,
) -> DrainSummary:
    """Replay the DLQ records ``filters`` selects once (see the module docstring) and push the run's metrics.

    ``group_id`` names the replay group (default :func:`sncli.dlq.select.replay_group`);
    ``trust_unsigned`` (with a ``--topic`` filter) also writes unsigned records;
    ``drop_unsigned`` passes over unsigned records instead of carrying them forward
    (junk someone produced to the DLQ would otherwise be carried by every replay).
    """
    signer = DlqSigner.of(settings.sink)
    check_replay_trust(signer, filters, trust_unsigned=trust_unsigned)
    group = replay_group(settings.sink.group_id, group_id)
    triage = ReplayTriage(settings.sink, filters, signer, trust_unsigned=trust_unsigned,
                          drop_unsigned=drop_unsigned)
    run = SinkRun(
        settings,
        DrainOptions(workers=workers, dry_run=dry_run),
        group_id=group,
        read_topics=[triage.dlq_topic],
        mode="assign",
        prepare=triage.prepare,
        stop=stop,
        metrics=metrics,
        wait_for_ends=True,
    )
    triage.count_refusals_in(run.summary)
    selected = f" ({filters.describe()})" if not filters.empty else ""
    log.info("replaying %s%s in group %s", triage.dlq_topic, selected, group)
    tables = [filters.table] if filters.table else sink_tables(settings.sink.topics)
    return run.run_and_push("dlq_replay", tables)


class ReplayTriage:
    """Decides for each DLQ message: replay it, carry it forward, or refuse it (the run's ``prepare``).

    Messages are typed ``Any`` as everywhere the sink reads them: the library's
    header type (``str | bytes`` values) is wider than what a record carries.
    """

    def __init__(self, sink: SinkSettings, filters: Filters, signer: DlqSigner, *, trust_unsigned: bool,
                 drop_unsigned: bool = False) -> None:
        self.dlq_topic = sink.dlq_topic
        self._topics = {t.topic: t for t in sink.topics}
        self._filters = filters
        self._signer = signer
        self._trust_unsigned = trust_unsigned
        self._drop_unsigned = drop_unsigned
        self._summary: DrainSummary | None = None

    def count_refusals_in(self, summary: DrainSummary) -> None:
        """Where refusals are counted: the run's summary (the run is made after its ``prepare``)."""
        self._summary = summary

    def prepare(self, msg: Any) -> Job | None:
        timestamp_type, timestamp_ms = msg.timestamp()
        timestamp = timestamp_ms if timestamp_type else None
        headers = msg.headers() or []
        entry = parse_entry(msg.partition(), msg.offset(), timestamp, msg.key(), msg.value(), headers)
        selected = self._filters.matches(entry)
        if entry.problems and selected:
            return self._refuse(msg, entry, "malformed", park=False)
        if not selected or entry.origin is None:
            if entry.origin is None:
                log.warning("%s[%d]@%d has no origin offset (a source record, or not by sncli): carried forward",
                            self.dlq_topic, entry.partition, entry.offset)
            return self._carry(msg, entry)
        verdict = self._signer.verify(entry.key, entry.value, headers)
        if verdict == "invalid":
            return self._refuse(msg, entry, "bad_signature", park=False)
        if verdict != "valid" and not self._trust_unsigned:
            return self._refuse(msg, entry, "unsigned", park=not self._drop_unsigned)
        origin = entry.origin
        record = InRecord(origin.topic, origin.partition, origin.offset, entry.key, entry.value,
                          tuple(entry.original_headers()), timestamp)
        return Job((self.dlq_topic, entry.partition), entry.offset, record, self._topics.get(origin.topic),
                   replay_count=entry.replay_count + 1)

    def _carry(self, msg: Any, entry: DlqEntry) -> Job:
        """A Job that re-produces ``msg`` unchanged at the DLQ's end (its record is only a placeholder)."""
        placeholder = InRecord("", entry.partition, entry.offset, entry.key, entry.value, tuple(entry.headers))
        return Job((self.dlq_topic, entry.partition), entry.offset, placeholder, None, carry=msg)

    def _refuse(self, msg: Any, entry: DlqEntry, reason: RefusedReason, *, park: bool) -> Job | None:
        """Count and log the refusal; ``park``: carry the record forward, else pass over it."""
        summary = self._summary
        if summary is None:
            raise RuntimeError("ReplayTriage.prepare called before count_refusals_in()")
        claimed = entry.origin.topic if entry.origin else "?"
        log.warning("%s[%d]@%d refused (%s; claims to come from %s): %s", self.dlq_topic, entry.partition,
                    entry.offset, reason, claimed, "kept in the DLQ" if park else "not replayed")
        summary.refused[reason] = summary.refused.get(reason, 0) + 1
        if summary.plan is not None:
            origin = entry.origin or Origin(claimed, -1, -1)
            summary.plan.append({
                "topic": origin.topic, "partition": origin.partition, "offset": origin.offset,
                "dlq_partition": entry.partition, "dlq_offset": entry.offset, "operation": "REFUSED", "error": reason,
            })
        return self._carry(msg, entry) if park else None
