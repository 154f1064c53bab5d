"""Token bucket on a fake clock: burst, steady rate, reservations, thread safety."""

from __future__ import annotations

import threading

import pytest

from sncli.servicenow.ratelimit import TokenBucket
from tests.fixtures.fake_time import FakeTime


def fake_time() -> FakeTime:
    """A clock that moves only when the test moves it; the bucket's sleeps are recorded, not slept."""
    return FakeTime(1000.0, advance=False)


def test_burst_is_free_then_each_token_costs_one_interval() -> None:
    t = fake_time()
    bucket = TokenBucket(10, 3, clock=t.clock, sleep=t.sleep)
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    # Empty: the next callers queue up on credit, 0.1 s apart.
    assert [bucket.reserve() for _ in range(3)] == pytest.approx([0.1, 0.2, 0.3])


def test_refill_over_time_is_capped_at_burst() -> None:
    t = fake_time()
    bucket = TokenBucket(2, 4, clock=t.clock, sleep=t.sleep)
    for _ in range(4):
        bucket.reserve()
    assert bucket.available == pytest.approx(0.0)
    t.now += 1.0
    assert bucket.available == pytest.approx(2.0)
    t.now += 100.0
    assert bucket.available == pytest.approx(4.0)  # not 202
    assert [bucket.reserve() for _ in range(5)] == pytest.approx([0, 0, 0, 0, 0.5])


def test_steady_rate_over_a_long_run() -> None:
    """1000 acquisitions at 50/s with burst 5 take (1000 - 5) / 50 seconds of waiting on the fake clock."""
    t = fake_time()

    def sleep(seconds: float) -> None:
        t.sleeps.append(seconds)
        t.now += seconds

    bucket = TokenBucket(50, 5, clock=t.clock, sleep=sleep)
    start = t.now
    for _ in range(1000):
        bucket.acquire()
    assert t.now - start == pytest.approx((1000 - 5) / 50, rel=1e-6)


def test_acquire_sleeps_only_when_needed() -> None:
    t = fake_time()
    bucket = TokenBucket(4, 1, clock=t.clock, sleep=t.sleep)
    assert bucket.acquire() == 0.0
    assert t.sleeps == []
    assert bucket.acquire() == pytest.approx(0.25)
    assert t.sleeps == [pytest.approx(0.25)]


def test_threads_share_one_budget() -> None:
    """32 threads x 25 tokens on a frozen clock: waits are exactly the credit schedule, none lost or doubled."""
    t = fake_time()
    bucket = TokenBucket(100, 10, clock=t.clock, sleep=t.sleep)
    waits: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(32)

    def worker() -> None:
        barrier.wait()
        for _ in range(25):
            w = bucket.reserve()
            with lock:
                waits.append(w)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    expected = [0.0] * 10 + [i / 100 for i in range(1, 32 * 25 - 10 + 1)]
    assert sorted(waits) == pytest.approx(expected)


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 1)
    with pytest.raises(ValueError):
        TokenBucket(1, 0)
