"""Draw docs/status.svg: the `sncli status` screen of a sample deployment (rich's SVG export).

The sample is made of the same objects `sncli status` renders (sncli.status.model),
so the picture shows the real layout: python scripts/status_svg.py [OUT]
"""

from __future__ import annotations

import io
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console

from sncli.cli.status_cmd import render_status
from sncli.status.model import DlqStatus, Policy, SinkLagStatus, StatusReport, TableStatus, assess
from sncli.status.pushed import LastRun

NOW = datetime(2026, 3, 3, 12, 0, 0, tzinfo=UTC)


def sample() -> StatusReport:
    def run(table: str, command: str, code: int, ago: int, took: float) -> LastRun:
        return LastRun(table, command, NOW - timedelta(seconds=ago), code, took, NOW - timedelta(seconds=ago))

    tables = [
        TableStatus("incident", "2026-03-03 11:58:41", "5f1c09e2a4b34c6f9d1e", 79, "ok", "2026-03-03 11:57:02",
                    (run("incident", "source_poll", 0, 62, 4.2), run("incident", "sink_drain", 3, 240, 11.8))),
        TableStatus("problem", "2026-03-03 09:12:10", "0c77d2a1e5f94a0e8b3a", 10070, "ok", None,
                    (run("problem", "source_poll", 1, 65, 30.0),)),
        TableStatus("change_request", "2026-03-03 11:59:30", "9ab1f3c0d2e74b18a6c4", 30, "ok", None,
                    (run("change_request", "source_poll", 0, 61, 1.1),)),
    ]
    dlq = [DlqStatus("servicenow.dlq", {"permission": 3, "decode": 1})]
    sink = [SinkLagStatus("servicenow.incident.changes", "incident", True, 1250, 6)]
    policy = Policy()
    return StatusReport(NOW, tables, dlq, sink, "sncli-sink", [], assess(tables, dlq, sink, [], policy))


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "docs" / "status.svg"
    console = Console(record=True, width=150, file=io.StringIO())
    console.print(render_status(sample()))
    console.save_svg(str(out), title="sncli status")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
