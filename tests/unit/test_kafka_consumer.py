"""EndTracker: when a bounded drain may consider a partition finished; where a new partition starts (pure logic)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sncli.kafka.consumer import EndTracker, reset_offset

A = ("t", 0)
B = ("t", 1)


def test_nothing_assigned_is_not_finished() -> None:
    tracker = EndTracker()
    assert not tracker.all_finished()
    assert tracker.assigned == []


def test_finished_when_position_reaches_the_fetched_end() -> None:
    tracker = EndTracker()
    tracker.assign([A])
    assert tracker.needs_end(A)
    tracker.learn_end(A, 3)
    assert not tracker.needs_end(A)
    assert tracker.on_message(A, 0) and tracker.on_message(A, 1)
    assert not tracker.finished(A)
    assert tracker.on_message(A, 2)
    assert tracker.finished(A) and tracker.all_finished()
    assert tracker.ends() == {A: 3}


def test_the_end_is_frozen_at_the_first_fetch() -> None:
    tracker = EndTracker()
    tracker.assign([A])
    tracker.learn_end(A, 2)
    tracker.learn_end(A, 10)  # a later, larger watermark: records produced during the run
    assert tracker.ends() == {A: 2}
    assert tracker.on_message(A, 0) and tracker.on_message(A, 1)
    assert not tracker.on_message(A, 2)  # beyond the bound: leave it for the next run


def test_unknown_watermark_is_ignored() -> None:
    tracker = EndTracker()
    tracker.assign([A])
    tracker.learn_end(A, -1001)  # librdkafka: OFFSET_INVALID before the first fetch
    assert tracker.needs_end(A)
    assert tracker.on_message(A, 0)
    assert not tracker.finished(A)


def test_eof_finishes_a_partition_even_without_a_known_end() -> None:
    tracker = EndTracker()
    tracker.assign([A, B])
    tracker.on_eof(A, 0)  # empty partition
    assert tracker.finished(A) and not tracker.all_finished()
    assert tracker.unfinished() == [B]
    assert tracker.on_message(B, 0)
    tracker.on_eof(B, 1)
    assert tracker.all_finished()
    assert tracker.ends() == {A: 0, B: 1}
    assert not tracker.on_message(A, 0)  # after EOF, new records belong to the next run


def test_messages_of_unassigned_partitions_are_not_in_bound() -> None:
    tracker = EndTracker()
    tracker.assign([A])
    assert not tracker.on_message(B, 0)
    tracker.on_eof(B, 5)  # ignored
    assert tracker.assigned == [A]


def test_revoke_and_reassign_start_afresh() -> None:
    tracker = EndTracker()
    tracker.assign([A, B])
    tracker.on_eof(A, 4)
    tracker.revoke([A])
    assert tracker.assigned == [B]
    tracker.assign([A])
    assert not tracker.finished(A)
    assert tracker.needs_end(A)


@settings(max_examples=200, deadline=None)
@given(
    true_end=st.integers(min_value=0, max_value=60),
    batch=st.integers(min_value=1, max_value=20),
    late=st.integers(min_value=0, max_value=10),
)
def test_simulated_drain_stops_exactly_at_the_true_end_whatever_listoffsets_says(
    true_end: int, batch: int, late: int
) -> None:
    """Model of Tansu: ListOffsets may under-report; fetch watermark and EOF are right.

    A drain that only uses the tracker reads every record below the end that the
    first fetch reported, none beyond, and terminates.
    """
    tracker = EndTracker()
    tracker.assign([A])
    produced = true_end
    position = 0
    processed: list[int] = []
    first_fetch = True
    for _ in range(1000):
        if tracker.all_finished():
            break
        if position >= produced:
            tracker.on_eof(A, produced)  # fetch at the end: EOF at the fetch's high watermark
            continue
        fetched = list(range(position, min(produced, position + batch)))
        high = produced
        if first_fetch:
            tracker.learn_end(A, high)
            first_fetch = False
            produced += late  # records produced while the drain runs
        for offset in fetched:
            if tracker.on_message(A, offset):
                processed.append(offset)
        position = fetched[-1] + 1
    assert tracker.all_finished()
    assert processed == list(range(true_end))


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("earliest", -2), ("smallest", -2), ("beginning", -2), (" Earliest ", -2),
     ("latest", -1), ("largest", -1), ("end", -1), ("error", None), ("nonsense", None)],
)
def test_reset_offset_maps_every_librdkafka_spelling(policy: str, expected: int | None) -> None:
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

    assert (OFFSET_BEGINNING, OFFSET_END) == (-2, -1)  # the constants the mapping mirrors
    assert reset_offset(policy) == expected
