"""Finding the records Kafka refuses in a page, and what their DLQ records carry (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sncli.config import SysIdKey
from sncli.dlq.record import parse_entry
from sncli.kafka.errors import INVALID_RECORD, MESSAGE_TOO_LARGE, ProduceError, RecordEncodeError, Rejected
from sncli.source.deadletter import (
    Attempt,
    dlq_record,
    isolate,
    page_indices,
    refused_at_once,
    segments,
)
from sncli.source.outcome import TableOutcome, combined_exit_code
from sncli.source.record import PageMessages, RecordShape, Refusal, TimestampCache, build_page

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_segments_put_each_suspect_alone_and_keep_the_order() -> None:
    assert segments([0, 1, 2, 3, 4, 5], {2, 3}) == [[0, 1], [2], [3], [4, 5]]
    assert segments([4, 7], set()) == [[4, 7]]
    assert segments([], {1}) == []


class Broker:
    """A broker that refuses whole batches holding a bad record; remembers what it stored, in order."""

    def __init__(self, bad: set[int], too_big: frozenset[int] = frozenset()) -> None:
        self.bad, self.too_big = bad, too_big
        self.stored: list[int] = []
        self.batches: list[list[int]] = []

    def send(self, batch: list[int]) -> Attempt:
        self.batches.append(batch)
        refused = [Refusal(i, "refused", "too large", True) for i in batch if i in self.too_big]
        sent = [i for i in batch if i not in self.too_big]
        if any(i in self.bad for i in sent):
            return Attempt(0, refused, {i: Rejected(b"k", b"v", INVALID_RECORD, "invalid") for i in sent})
        self.stored.extend(sent)
        return Attempt(len(sent), refused)


@given(st.integers(1, 40).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1), min_size=1))))
def test_isolate_delivers_every_good_record_after_the_first_suspect_and_refuses_only_bad_ones(
    case: tuple[int, set[int]],
) -> None:
    n, bad = case
    broker = Broker(bad)
    first_failed_batch = list(range(min(bad), n))  # a refused batch: every record of it reported
    acked, refused = isolate(list(range(n)), set(first_failed_batch), broker.send)
    assert sorted(r.index for r in refused) == sorted(bad)
    assert all(r.error_class == "refused" and not r.omit_value for r in refused)
    good_after = [i for i in range(min(bad), n) if i not in bad]
    assert broker.stored == good_after  # in page order: each key's latest version lands last
    assert acked == len(good_after)


def test_isolate_cuts_a_refused_batch_again_around_records_not_suspected_before() -> None:
    broker = Broker({5})
    acked, refused = isolate(list(range(8)), {2}, broker.send)  # the first report named only record 2
    assert [r.index for r in refused] == [5]
    assert broker.batches[:3] == [[2], [3, 4, 5, 6, 7], [3]]  # then 4, 5, 6, 7 alone
    assert broker.stored == [2, 3, 4, 6, 7] and acked == 5


def test_isolate_keeps_records_refused_before_sending_without_sending_them_again() -> None:
    broker = Broker({3}, too_big=frozenset({1}))
    _acked, refused = isolate([0, 1, 2, 3], {0}, broker.send)
    assert sorted((r.index, r.omit_value) for r in refused) == [(1, True), (3, False)]
    assert broker.stored == [0, 2]


def test_refused_at_once_maps_to_page_positions() -> None:
    rejected = [Rejected(b"k", b"v" * 30, MESSAGE_TOO_LARGE, "Broker: Message size too large", index=1)]
    assert refused_at_once(rejected, None)[0].index == 1
    [item] = refused_at_once(rejected, [4, 9, 12])
    assert item.index == 9 and item.omit_value and "30 bytes omitted" in item.message
    with pytest.raises(ValueError):
        refused_at_once([Rejected(b"k", b"v", INVALID_RECORD, "x")], None)


def _page(n: int) -> PageMessages:
    keys = [f"{i:032x}".encode() for i in range(n)]
    return PageMessages(keys, [b'{"n": %d}' % i for i in range(n)], [[("sn.sys_id", k)] for k in keys], [0] * n)


def test_page_indices_match_reports_by_key_and_value_within_the_batch() -> None:
    msgs = _page(5)
    report = [Rejected(msgs.keys[3], msgs.values[3], INVALID_RECORD, "x"), Rejected(b"other", b"x", 87, "x")]
    assert list(page_indices(report, msgs, [2, 3, 4])) == [3]
    assert page_indices(report, msgs, [0, 1]) == {}


def test_only_rejected_records_says_whether_the_rest_of_the_batch_can_go_without_them() -> None:
    rejected = [Rejected(b"k", b"v", INVALID_RECORD, "x")]
    assert ProduceError("x", failed=1, rejected=rejected).only_rejected_records
    assert not ProduceError("x", failed=2, rejected=rejected).only_rejected_records  # one failed for another reason
    assert not ProduceError("x", failed=0).only_rejected_records


def test_the_dlq_record_of_a_source_record_reads_back_without_an_origin_offset() -> None:
    msgs = _page(3)
    key, value, headers = dlq_record(msgs, Refusal(1, "refused", "Kafka refused the record: invalid"),
                                     table="incident", topic="sn.incident", now=NOW)
    assert key == msgs.keys[1] and value == msgs.values[1]
    entry = parse_entry(0, 7, None, key, value, headers)
    assert entry.error_class == "refused" and entry.table == "incident" and entry.attempts == 1
    assert entry.origin is None  # never in Kafka: a replay carries it forward, never writes it to ServiceNow
    assert dict(headers)["sncli.error.topic"] == b"sn.incident" and ("sn.sys_id", msgs.keys[1]) in headers
    _key, omitted, _headers = dlq_record(msgs, Refusal(2, "refused", "too large", omit_value=True),
                                         table="incident", topic="sn.incident", now=NOW)
    assert omitted is None


def test_build_page_lists_the_records_the_encoder_refuses_with_their_json() -> None:
    records: list[dict[str, Any]] = [
        {"sys_id": f"{i:032x}", "sys_updated_on": "2024-05-01 12:00:00", "priority": p}
        for i, p in enumerate(["1", "urgent", "3"])
    ]

    def encode_page(page: Sequence[dict[str, Any]]) -> list[bytes]:
        if any(r["priority"] == "urgent" for r in page):
            raise RecordEncodeError("encoding a record for t-value failed: 'urgent' is not a long")
        return [b"\x00avro" for _ in page]

    shape = RecordShape(table="incident", instance="x", key=SysIdKey(type="sys_id"))
    msgs = build_page(records, shape, extracted_at=NOW, cache=TimestampCache(), encode_page=encode_page)
    assert [r.index for r in msgs.refused] == [1] and msgs.refused[0].error_class == "encode"
    assert msgs.values[0] == msgs.values[2] == b"\x00avro"
    assert orjson.loads(msgs.values[1]) == records[1]
    assert len(msgs.keys) == len(msgs.headers) == len(msgs.timestamps) == 3


def test_dead_lettered_records_make_the_run_partial() -> None:
    clean, dead = TableOutcome("a"), TableOutcome("b", dlq={"refused": 1})
    failed = TableOutcome("c", error="boom", exit_code=1)
    assert combined_exit_code([clean]) == 0
    assert combined_exit_code([clean, dead]) == 3
    assert combined_exit_code([dead, failed]) == 3
    assert combined_exit_code([failed]) == 1
