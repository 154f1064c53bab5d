"""The benchmark's pure result logic: medians, ratios, target checks and the table."""

from __future__ import annotations

import pytest

from scripts.bench_report import Row, Target, median, note_lines, table_lines


def ratio_row(runs: list[float], baseline: list[float], **kwargs: object) -> Row:
    return Row("1", "poll", "rec/s", Target("ratio_min", 0.85, ">= 0.85x raw"), runs=runs, baseline_runs=baseline,
               **kwargs)  # type: ignore[arg-type]


def test_median_of_odd_and_even_counts() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([1.0, 2.0, 3.0, 10.0]) == 2.5
    with pytest.raises(ValueError):
        median([])


def test_ratio_uses_medians_and_decides_pass() -> None:
    row = ratio_row([80.0, 90.0, 1000.0], [100.0, 100.0, 1.0])
    assert row.figure == 90.0
    assert row.baseline == 100.0
    assert row.ratio == pytest.approx(0.9)
    assert row.passed
    assert not ratio_row([84.0], [100.0]).passed


def test_lower_is_better_ratio_is_the_speedup() -> None:
    row = Row("3", "backfill", "s", Target("ratio_min", 5.0, ">= 5x"), runs=[4.0], baseline_runs=[22.0],
              higher_is_better=False)
    assert row.ratio == pytest.approx(5.5)
    assert row.passed
    row.runs = [5.0]
    assert not row.passed


def test_value_bounds_and_worst_run_for_memory() -> None:
    row = Row("5", "rss", "MB", Target("value_max", 256, "<= 256 MB"), runs=[200.0, 300.0, 210.0], summarize="max")
    assert row.figure == 300.0
    assert not row.passed
    row.runs = [200.0, 256.0]
    assert row.passed
    floor = Row("4", "sink", "writes/s", Target("value_min", 720, ">= 720/s"), runs=[719.0])
    assert not floor.passed


def test_missing_figures_and_errors_never_pass() -> None:
    assert not ratio_row([], [100.0]).passed
    assert not ratio_row([90.0], []).passed
    failed = ratio_row([90.0], [100.0], error="sncli exited 1")
    assert not failed.passed


def test_hidden_ratio_for_value_targets_only() -> None:
    row = Row("6", "start", "s", Target("value_max", 0.3, "<= 0.3 s"), runs=[0.2], baseline_runs=[0.03],
              show_ratio=False)
    assert row.ratio is None
    assert row.passed


def test_table_shows_errors_and_results() -> None:
    ok = ratio_row([90.0], [100.0], baseline_name="raw loop")
    skipped = Row("2", "dlt", "rec/s", Target("ratio_min", 5, ">= 5x"), error="skipped: dlt is not installed")
    broken = Row("3", "backfill", "s", Target("ratio_min", 5, ">= 5x"), error="x" * 100)
    lines = table_lines([ok, skipped, broken])
    assert "pass" in lines[2] and "0.90x" in lines[2] and "(raw loop)" in lines[2]
    assert "NOT RUN" in lines[3]
    assert lines[4].rstrip().endswith("FAIL") and "x" * 100 not in lines[4]
    assert any("x" * 100 in n for n in note_lines([broken]))  # the whole error is still printed below
    markdown = table_lines([ok], markdown=True)
    assert markdown[0].startswith("| #") and markdown[1].startswith("|---")
    assert len({line.count("|") for line in markdown}) == 1
