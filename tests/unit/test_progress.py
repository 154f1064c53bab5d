"""Progress of long work off a terminal: JSON lines on stderr (sncli.cli.progress)."""

from __future__ import annotations

import itertools
import json
import time

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
