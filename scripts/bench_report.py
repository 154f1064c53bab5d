"""Benchmark results: medians, target checks and the printed table (pure, no I/O).

A scenario produces one or more :class:`Row`. A row holds the raw per-run
numbers so the JSON file shows the spread, not just the median; the table shows
medians. A row whose scenario could not run carries ``error`` and no figure:
it is printed as such and counts as not passed, never silently dropped.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Check = Literal["ratio_min", "value_min", "value_max"]


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


@dataclass
class Target:
    """What a row must reach: ``ratio_min`` (figure / baseline >= x), ``value_min`` or ``value_max``."""

    check: Check
    threshold: float
    text: str  # as printed, e.g. ">= 0.85x raw" or "<= 256 MB"

    def passed(self, figure: float | None, ratio: float | None) -> bool | None:
        if self.check == "ratio_min":
            return None if ratio is None else ratio >= self.threshold
        if figure is None:
            return None
        if self.check == "value_min":
            return figure >= self.threshold
        return figure <= self.threshold


@dataclass
class Row:
    scenario: str  # "1", "2", ...
    name: str  # short description, e.g. "source poll, page 1000"
    unit: str  # "rec/s", "writes/s", "MB", "s"
    target: Target
    runs: list[float] = field(default_factory=list)
    baseline_runs: list[float] = field(default_factory=list)
    baseline_name: str = ""
    higher_is_better: bool = True
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    summarize: Literal["median", "max"] = "median"  # a memory bound is checked on the worst run
    show_ratio: bool = True

    @property
    def figure(self) -> float | None:
        if not self.runs:
            return None
        return max(self.runs) if self.summarize == "max" else median(self.runs)

    @property
    def baseline(self) -> float | None:
        return median(self.baseline_runs) if self.baseline_runs else None

    @property
    def ratio(self) -> float | None:
        figure, baseline = self.figure, self.baseline
        if not self.show_ratio and self.target.check != "ratio_min":
            return None
        if figure is None or baseline is None or baseline == 0 or figure == 0:
            return None
        return figure / baseline if self.higher_is_better else baseline / figure

    @property
    def passed(self) -> bool:
        if self.error is not None:
            return False
        return bool(self.target.passed(self.figure, self.ratio))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(figure=self.figure, baseline=self.baseline, ratio=self.ratio, passed=self.passed)
        return data


def fmt_number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "MB":
        return f"{value:.0f} MB"
    if value >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.1f} {unit}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table_lines(rows: Sequence[Row], *, markdown: bool = False) -> list[str]:
    """The results table; ``markdown`` gives a pipe table for the README."""
    header = ["#", "scenario", "figure (median)", "baseline (same run)", "ratio", "target", "result"]
    body: list[list[str]] = []
    for row in rows:
        if row.error is not None:
            result = "NOT RUN" if row.error.startswith("skipped") else "FAIL"
            error = row.error if len(row.error) <= 60 else row.error[:57] + "..."
            body.append([row.scenario, row.name, error, "-", "-", row.target.text, result])
            continue
        baseline = fmt_number(row.baseline, row.unit)
        if row.baseline_name and row.baseline is not None:
            baseline = f"{baseline} ({row.baseline_name})"
        body.append(
            [
                row.scenario,
                row.name,
                fmt_number(row.figure, row.unit),
                baseline,
                fmt_ratio(row.ratio),
                row.target.text,
                "pass" if row.passed else "FAIL",
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return lines
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
    return [line(header), line(["-" * w for w in widths]), *[line(cells) for cells in body]]


def note_lines(rows: Sequence[Row]) -> list[str]:
    lines: list[str] = []
    for row in rows:
        if row.error is not None and len(row.error) > 60:
            lines.append(f"[{row.scenario}] {row.name}: {row.error}")
        for note in row.notes:
            lines.append(f"[{row.scenario}] {row.name}: {note}")
    return lines
