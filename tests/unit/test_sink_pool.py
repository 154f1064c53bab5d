"""KeyedPool: one key at a time in submit order, keys in parallel, bounded, stoppable."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict

import pytest

from sncli.sink.pool import KeyedPool


def test_items_of_a_key_run_in_order_and_never_concurrently() -> None:
    rng = random.Random(7)
    lock = threading.Lock()
    active: set[bytes] = set()
    seen: dict[bytes, list[int]] = defaultdict(list)
    overlaps: list[bytes] = []

    def handle(item: tuple[bytes, int, float]) -> None:
        key, seq, pause = item
        with lock:
            if key in active:
                overlaps.append(key)
            active.add(key)
        time.sleep(pause)
        with lock:
            active.discard(key)
            seen[key].append(seq)

    pool: KeyedPool[tuple[bytes, int, float]] = KeyedPool(8, 50, handle)
    expected: dict[bytes, list[int]] = defaultdict(list)
    for seq in range(600):
        key = f"k{rng.randrange(20)}".encode()
        expected[key].append(seq)
        assert pool.submit(key, (key, seq, rng.random() / 1000))
    assert pool.close(timeout=30)
    assert overlaps == []
    assert dict(seen) == dict(expected)
    assert pool.pending == 0 and pool.crash is None


def test_different_keys_run_in_parallel_on_any_idle_worker() -> None:
    def handle(item: int) -> None:
        time.sleep(0.2)

    pool: KeyedPool[int] = KeyedPool(8, 100, handle)
    started = time.monotonic()
    # Keys that a hash % 8 would put on few lanes still use all 8 workers.
    for n in range(16):
        pool.submit(f"key-{n}".encode(), n)
    assert pool.close(timeout=10)
    assert time.monotonic() - started < 0.2 * 16 / 8 + 0.3


def test_submit_blocks_when_full_and_gives_up_when_asked() -> None:
    release = threading.Event()
    pool: KeyedPool[int] = KeyedPool(1, 2, lambda _item: release.wait(5))
    assert pool.submit(b"a", 1) and pool.submit(b"b", 2)
    waits = []

    def keep_waiting() -> bool:
        waits.append(1)
        return len(waits) < 3

    assert pool.submit(b"c", 3, keep_waiting=keep_waiting) is False
    assert len(waits) == 3 and pool.pending == 2
    release.set()
    assert pool.close(timeout=5)


def test_abandon_drops_queued_items_but_lets_running_ones_finish() -> None:
    done: list[int] = []
    gate = threading.Event()

    def handle(item: int) -> None:
        if item == 0:
            gate.wait(5)
        done.append(item)

    pool: KeyedPool[int] = KeyedPool(1, 100, handle)
    for n in range(10):
        pool.submit(b"same", n)
    time.sleep(0.1)
    threading.Timer(0.2, gate.set).start()
    assert pool.close(abandon=True, timeout=5)
    assert done == [0]
    assert pool.submit(b"x", 99) is False  # closed


def test_a_stop_while_finishing_cuts_the_queue_short() -> None:
    done: list[int] = []
    pool: KeyedPool[int] = KeyedPool(1, 100, lambda item: (time.sleep(0.02), done.append(item)))
    for n in range(100):
        pool.submit(b"k", n)
    stop_at = time.monotonic() + 0.2
    assert pool.close(abandon_if=lambda: time.monotonic() > stop_at, timeout=5)
    assert 0 < len(done) < 100
    assert done == list(range(len(done)))


def test_a_crashing_handler_is_reported_and_stops_the_pool() -> None:
    def handle(item: int) -> None:
        if item == 3:
            raise RuntimeError("bug")

    pool: KeyedPool[int] = KeyedPool(2, 100, handle)
    for n in range(50):
        pool.submit(b"k", n)
    pool.close(timeout=5)
    assert isinstance(pool.crash, RuntimeError)


@pytest.mark.parametrize("workers", [1, 3])
def test_close_without_work_returns_at_once(workers: int) -> None:
    pool: KeyedPool[int] = KeyedPool(workers, 10, lambda _item: None)
    started = time.monotonic()
    assert pool.close(timeout=5)
    assert time.monotonic() - started < 1.0
