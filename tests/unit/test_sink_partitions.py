"""The sink's per-partition bookkeeping: what a revoke relies on, without Kafka or threads."""

from __future__ import annotations

from sncli.sink.partitions import Partitions
from sncli.sink.writer import Breaker

TP = ("t", 0)


def test_a_write_of_a_cancelled_partition_never_starts_and_a_new_assignment_gets_a_fresh_event() -> None:
    parts = Partitions()
    generation, cancel = parts.read(TP, 5)
    parts.cancel([TP])
    assert cancel.is_set()
    assert parts.start_write(TP, generation, cancel) is False
    assert parts.busy([TP]) == (0, 0)
    _generation, fresh = parts.read(TP, 6)
    assert fresh is not cancel and not fresh.is_set()


def test_a_record_finished_after_its_partition_was_revoked_does_not_move_the_commit() -> None:
    parts = Partitions()
    generation, cancel = parts.read(TP, 5)
    assert parts.start_write(TP, generation, cancel)
    assert parts.busy([TP]) == (1, 0)
    parts.revoked([TP])
    parts.end_write(TP)
    parts.done(TP, 5, generation)  # the old generation's finish: ignored, the new owner re-reads it
    assert parts.uncommitted() == {}
    new_generation, new_cancel = parts.read(TP, 5)
    assert new_generation == generation + 1
    assert parts.start_write(TP, generation, new_cancel) is False  # a write queued before the revoke
    parts.done(TP, 5, new_generation)
    assert parts.uncommitted() == {TP: 6}


def test_the_commit_is_the_low_watermark_and_lost_progress_heals_once_committed_past() -> None:
    parts = Partitions()
    g0, _ = parts.read(TP, 0)
    g1, _ = parts.read(TP, 1)
    parts.done(TP, 1, g1)
    assert parts.uncommitted() == {TP: 0}  # offset 0 is not finished: nothing passes it
    parts.done(TP, 0, g0)
    assert parts.uncommitted([TP]) == {TP: 2}
    parts.lost({TP: 2})
    parts.committed({TP: 1})
    assert parts.unsaved() == {TP: 2}
    parts.committed({TP: 2})
    assert parts.unsaved() == {} and parts.uncommitted() == {}
    assert parts.committed_by_topic() == {"t": {"0": 2}}


def test_dead_letters_in_flight_are_counted_until_acknowledged() -> None:
    parts = Partitions()
    parts.dead_letter_sent(TP)
    assert parts.busy([TP]) == (0, 1)
    parts.dead_letter_acked(TP)
    assert parts.busy([TP]) == (0, 0)


def test_the_breaker_trips_only_on_consecutive_exhausted_records_and_never_below_five() -> None:
    breaker = Breaker(workers=2)
    assert breaker.threshold == 5
    assert not any(breaker.record(True) for _ in range(4))
    assert breaker.record(False) is False  # a success resets the count
    assert not any(breaker.record(True) for _ in range(4))
    assert breaker.record(True) is True
    assert Breaker(workers=8).threshold == 8
