"""Progress of long work off a terminal: JSON lines on stderr (sncli.cli.progress)."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable

import pytest

from sncli.cli.progress import progress_interval, progress_line, watch_progress


def test_progress_line_has_rate_and_eta_only_with_a_total() -> None:
    assert progress_line("sink drain", 50, 200, 10.0) == {
        "progress": "sink drain", "done": 50, "total": 200, "rate_per_second": 5.0, "elapsed_seconds": 10.0,
        "eta_seconds": 30.0}
    assert "eta_seconds" not in progress_line("source poll", 50, None, 10.0)
    assert progress_line("x", 0, 10, 0.0)["rate_per_second"] == 0.0


def test_interval_from_the_environment() -> None:
    assert progress_interval({}) == 5.0
    assert progress_interval({"SNCLI_PROGRESS_SECONDS": "0.2"}) == 0.2
    assert progress_interval({"SNCLI_PROGRESS_SECONDS": "0"}) == 0.0
    assert progress_interval({"SNCLI_PROGRESS_SECONDS": "soon"}) == 5.0
    assert progress_interval({"SNCLI_PROGRESS_SECONDS": "-1"}) == 5.0


def test_off_a_terminal_a_json_line_every_interval_and_one_at_the_end(capsys: pytest.CaptureFixture[str]) -> None:
    counter = itertools.count(step=10)
    with watch_progress("dlq replay", 100, lambda: next(counter), tty=False, interval=0.3):
        time.sleep(1.3)
    out, err = capsys.readouterr()
    assert out == ""  # stdout stays the result's
    lines = [json.loads(line) for line in err.splitlines()]
    assert len(lines) >= 2  # at least one while running, and the last at the end
    assert all(line["progress"] == "dlq replay" and line["total"] == 100 for line in lines)
    done = [line["done"] for line in lines]
    assert done == sorted(done) and done[-1] > 0


def test_interval_zero_turns_the_lines_off(capsys: pytest.CaptureFixture[str]) -> None:
    with watch_progress("source poll", None, lambda: 1, tty=False, interval=0):
        time.sleep(0.3)
    assert capsys.readouterr().err == ""


def test_a_total_learned_beside_the_run_waits_for_its_first_progress_and_never_delays_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A total that needs ServiceNow is asked on its own thread, after the run's first records, never before them."""
    done = [0]
    asked_at: list[int] = []

    def total(progressed: Callable[[], bool]) -> int | None:
        if not progressed():
            return None
        asked_at.append(done[0])
        return 500

    entered = time.monotonic()
    with watch_progress("source poll", total, lambda: done[0], tty=False, interval=0.3):
        assert time.monotonic() - entered < 0.2  # the block starts at once
        time.sleep(0.6)
        assert asked_at == []  # no progress yet: the total is not asked
        done[0] = 100
        time.sleep(0.8)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert asked_at == [100]
    assert lines[0]["total"] is None and lines[-1]["total"] == 500


def test_a_total_still_waiting_when_the_run_ends_without_progress_gives_up() -> None:
    gave_up: list[bool] = []

    def total(progressed: Callable[[], bool]) -> int | None:
        gave_up.append(not progressed())
        return None

    with watch_progress("source poll", total, lambda: 0, tty=False, interval=0.2):
        time.sleep(0.3)
    deadline = time.monotonic() + 2
    while not gave_up and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gave_up == [True]


@pytest.mark.parametrize("interval", [0.0, 2.0])
def test_off_a_terminal_a_run_shorter_than_half_the_interval_never_asks_for_its_total(interval: float) -> None:
    """A total nobody would see costs nothing: with lines off, or a run over before half the interval."""
    asked: list[float] = []

    def total(progressed: Callable[[], bool]) -> int | None:
        if not progressed():
            return None
        asked.append(time.monotonic())
        return 1

    with watch_progress("source poll", total, lambda: 1, tty=False, interval=interval):
        time.sleep(0.15)
    time.sleep(0.5)  # a thread that would still ask has had the time to
    assert asked == []


def test_off_a_terminal_the_total_is_asked_once_half_the_interval_has_passed() -> None:
    asked: list[float] = []

    def total(progressed: Callable[[], bool]) -> int | None:
        if not progressed():
            return None
        asked.append(time.monotonic())
        return 1

    entered = time.monotonic()
    with watch_progress("source poll", total, lambda: 1, tty=False, interval=0.4):
        time.sleep(0.6)
    assert len(asked) == 1 and asked[0] - entered >= 0.2


def test_a_total_asked_late_still_counts_from_where_the_run_started(capsys: pytest.CaptureFixture[str]) -> None:
    """The run stores its position per page; a total asked after half the interval must not count from there."""
    stored = [0]  # the run's stored position (a poll's cursor, a drain's commits), moved as it goes
    backlog_end = 1000

    def total(progressed: Callable[[], bool]) -> int | None:
        start = stored[0]  # read at once, as the run starts from it
        if not progressed():
            return None
        return backlog_end - start

    with watch_progress("source poll", total, lambda: stored[0], tty=False, interval=0.4):
        for _ in range(10):
            stored[0] += 100
            time.sleep(0.06)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[-1]["done"] == 1000 and lines[-1]["total"] == 1000
