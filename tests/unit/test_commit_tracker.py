"""CommitTracker: commits never pass an unfinished record, whatever order records finish in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sncli.sink.commits import CommitTracker

TP = ("t", 0)


def test_nothing_read_nothing_to_commit() -> None:
    tracker = CommitTracker()
    assert tracker.committable(TP) is None
    assert tracker.committable_all() == {}


def test_in_order_completion_commits_one_past_the_last() -> None:
    tracker = CommitTracker()
    for offset in range(3):
        tracker.add(TP, offset)
    assert tracker.committable(TP) == 0
    for offset in range(3):
        tracker.done(TP, offset)
    assert tracker.committable(TP) == 3
    assert tracker.in_flight() == 0


def test_out_of_order_completion_waits_for_the_gap() -> None:
    tracker = CommitTracker()
    for offset in (10, 11, 12, 13):
        tracker.add(TP, offset)
    tracker.done(TP, 12)
    tracker.done(TP, 13)
    assert tracker.committable(TP) == 10
    tracker.done(TP, 10)
    assert tracker.committable(TP) == 11
    tracker.done(TP, 11)
    assert tracker.committable(TP) == 14


def test_a_record_that_never_finishes_pins_the_commit_forever() -> None:
    tracker = CommitTracker()
    for offset in range(100):
        tracker.add(TP, offset)
    for offset in range(100):
        if offset != 40:
            tracker.done(TP, offset)
    assert tracker.committable(TP) == 40
    assert tracker.in_flight(TP) == 1


def test_gaps_in_offsets_are_fine() -> None:
    # Compacted topics and transaction markers leave holes; the commit is one past the last read.
    tracker = CommitTracker()
    for offset in (0, 5, 9):
        tracker.add(TP, offset)
        tracker.done(TP, offset)
    assert tracker.committable(TP) == 10


def test_partitions_are_independent() -> None:
    tracker = CommitTracker()
    other = ("t", 1)
    tracker.add(TP, 0)
    tracker.add(other, 7)
    tracker.done(other, 7)
    assert tracker.committable_all() == {TP: 0, other: 8}


def test_misuse_is_refused() -> None:
    tracker = CommitTracker()
    tracker.add(TP, 5)
    with pytest.raises(ValueError):
        tracker.add(TP, 5)  # read twice without forget()
    with pytest.raises(ValueError):
        tracker.add(TP, 3)
    with pytest.raises(ValueError):
        tracker.done(TP, 4)  # never read
    with pytest.raises(ValueError):
        tracker.done(("x", 0), 5)
    tracker.done(TP, 5)
    with pytest.raises(ValueError):
        tracker.done(TP, 5)  # twice
    with pytest.raises(ValueError):
        tracker.add(TP, -1)


def test_forget_lets_a_partition_start_again_from_its_committed_offset() -> None:
    tracker = CommitTracker()
    for offset in range(5):
        tracker.add(TP, offset)
    tracker.done(TP, 0)
    tracker.forget(TP)
    assert tracker.committable(TP) is None
    tracker.add(TP, 1)  # re-read after a rebalance
    tracker.done(TP, 1)
    assert tracker.committable(TP) == 2


@settings(max_examples=300, deadline=None)
@given(
    gaps=st.lists(st.integers(1, 3), min_size=1, max_size=60),
    data=st.data(),
)
def test_out_of_order_completions_never_commit_past_a_pending_offset(gaps: list[int], data: st.DataObject) -> None:
    offsets = []
    current = data.draw(st.integers(0, 1000))
    for gap in gaps:
        offsets.append(current)
        current += gap
    tracker = CommitTracker()
    read = 0
    pending: set[int] = set()
    previous = None
    # Interleave reading (in order) with finishing (in any order), as the drain does.
    while read < len(offsets) or pending:
        if read < len(offsets) and (not pending or data.draw(st.booleans())):
            tracker.add(TP, offsets[read])
            pending.add(offsets[read])
            read += 1
        else:
            finished = data.draw(st.sampled_from(sorted(pending)))
            tracker.done(TP, finished)
            pending.discard(finished)
        commit = tracker.committable(TP)
        assert commit is not None
        if pending:
            assert commit == min(pending)  # never past an unfinished record, never behind the first one
        else:
            assert commit == offsets[read - 1] + 1
        assert previous is None or commit >= previous  # commits only move forward
        assert tracker.in_flight(TP) == len(pending)
        previous = commit
    assert tracker.committable(TP) == offsets[-1] + 1
