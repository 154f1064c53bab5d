"""The in-flight controller (AIMD with a remembered ceiling) and its gate: pure rules, no I/O."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from sncli.servicenow.concurrency import INITIAL_LIMIT, AimdController
from sncli.servicenow.errors import CallAbandoned
from sncli.servicenow.gate import Gate


def succeed(c: AimdController, n: int, latency: float = 0.05) -> None:
    for _ in range(n):
        c.succeeded(epoch=c.epoch, latency=latency)


def test_starts_low_and_grows_by_one_per_round_of_successes_never_above_workers() -> None:
    c = AimdController(6)
    assert c.limit == INITIAL_LIMIT
    succeed(c, INITIAL_LIMIT - 1)
    assert c.limit == INITIAL_LIMIT  # not yet a whole round
    succeed(c, 1)
    assert c.limit == INITIAL_LIMIT + 1
    succeed(c, 1000)
    assert c.limit == 6  # the maximum (sink.workers) is never passed
    assert AimdController(2).limit == 2


def test_a_refusal_cuts_the_limit_and_remembers_the_ceiling() -> None:
    c = AimdController(64, initial=12)
    c.overloaded(epoch=c.epoch, in_flight=9)  # refused with 9 out: the instance takes 8
    assert c.ceiling == 8
    assert c.limit <= 8
    epoch = c.epoch
    c.overloaded(epoch=epoch - 1, in_flight=9)  # sent before the cut: no second cut for the same burst
    assert c.epoch == epoch


def test_above_the_ceiling_it_probes_rarely_and_ever_more_rarely() -> None:
    c = AimdController(64, initial=9)
    c.overloaded(epoch=c.epoch, in_flight=9)
    assert c.ceiling == 8

    def successes_until(done: Callable[[], bool]) -> int:
        n = 0
        while not done():
            succeed(c, 1)
            n += 1
        return n

    successes_until(lambda: c.limit >= 8)  # back up to the ceiling at the additive pace
    first = successes_until(lambda: c.limit > 8)
    assert first >= 32 * 8  # 32 rounds at the ceiling before one probe
    c.overloaded(epoch=c.epoch, in_flight=c.limit)  # the probe is refused again
    successes_until(lambda: c.limit >= 8)
    second = successes_until(lambda: c.limit > 8)
    assert second >= 2 * first - 8


def test_a_run_against_a_fixed_limit_hears_few_refusals() -> None:
    """Simulated: 8 slots, 64 workers, 2,000 calls; a refusal whenever more than 8 are out."""
    c = AimdController(64)
    refused = 0
    for _ in range(2000):
        if c.limit > 8:
            refused += 1
            c.overloaded(epoch=c.epoch, in_flight=c.limit)
        else:
            c.succeeded(epoch=c.epoch, latency=0.05)
    assert refused < 20  # < 1% of calls
    assert c.limit == 8


def test_a_latency_that_rises_well_above_the_best_seen_cuts_the_limit() -> None:
    c = AimdController(32, initial=16)
    succeed(c, 20, latency=0.05)
    before = c.limit
    for _ in range(20):
        c.succeeded(epoch=c.epoch, latency=0.5)
    assert c.limit < before
    # A batch of 100 is slower than a call of 1 without being congestion: compared by size.
    d = AimdController(32, initial=8)
    d.succeeded(epoch=d.epoch, latency=0.05, size=1)
    for _ in range(50):
        d.succeeded(epoch=d.epoch, latency=0.55, size=100)
    assert d.limit > 8


def test_the_gate_bounds_calls_in_flight_and_honours_retry_after_and_ratelimit_reset() -> None:
    now = [100.0]
    gate = Gate(AimdController(4, initial=2), clock=lambda: now[0], wall=lambda: 1_000.0)
    first, second = gate.acquire(), gate.acquire()
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(CallAbandoned):
        gate.acquire(cancelled)  # full: it waits, and gives up once cancelled
    gate.release(first, status=429, headers={"Retry-After": "2"})
    assert gate.controller.paused_for(now[0]) == pytest.approx(2.0)
    assert gate.stats().refused == 1 and gate.controller.limit == 1
    now[0] += 2.5
    gate.release(second, status=200, headers={})
    third = gate.acquire()
    gate.release(third, status=429, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1003"})
    assert gate.controller.paused_for(now[0]) == pytest.approx(3.0)  # until the window resets
    assert gate.stats().calls == 3


def test_a_fixed_gate_does_not_adapt() -> None:
    gate = Gate(AimdController(8), adaptive=False)
    assert gate.controller.limit == 8
    t = gate.acquire()
    gate.release(t, status=429, headers={})
    assert gate.controller.limit == 8
