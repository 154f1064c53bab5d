"""What a verify found, per table and for the run: the JSON document, the exit code, the metrics.

The JSON keys ``tables`` / ``<table>`` / ``missing`` / ``stale`` / ``extra``
are the contract; the rest (first sys_ids, windows, requests, repair) helps an
operator and may grow. Exit codes: 0 every table in sync; 3 differences found
in at least one table (after ``--repair``: still found by the check that
follows it); 1 no differences found but some table could not be verified; 2 is
usage, raised before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Gauge

from sncli.errors import ExitCode
from sncli.metrics import RunMetrics
from sncli.source.windows import to_sn
from sncli.verify.search import Findings, Visited

#: How many sys_ids of each kind the report lists.
FIRST_IDS = 10


@dataclass
class Repair:
    """What ``--repair`` sent (every message acknowledged by Kafka before it counts)."""

    resent: int = 0  # missing and stale records fetched by sys_id and produced again
    tombstones: int = 0  # extras
    vanished: int = 0  # missing or stale records ServiceNow no longer had when fetched

    def to_json(self) -> dict[str, int]:
        return {"resent": self.resent, "tombstones": self.tombstones, "vanished": self.vanished}


@dataclass
class TableReport:
    table: str
    topic: str
    since: int = 0
    bound: str = ""  # the compared range's end, as text
    findings: Findings = field(default_factory=Findings)
    windows: list[Visited] = field(default_factory=list)
    kafka_messages: int = 0
    kafka_alive: int = 0
    unidentified: int = 0
    sn_records: int = 0  # ServiceNow records in the range (sum of the first level's counts)
    requests: int = 0
    error: str | None = None
    repair: Repair | None = None
    before_repair: dict[str, int] | None = None  # the counts the repair started from
    extra_keys: dict[str, bytes] = field(default_factory=dict)  # each extra's key in the topic (for its tombstone)
    pending_complete: bool = True  # every record changed after the bound was listed (sncli.verify.search)

    @property
    def differences(self) -> int:
        f = self.findings
        return len(f.missing) + len(f.stale) + len(f.extra)

    @property
    def exit_code(self) -> ExitCode:
        if self.differences:
            return ExitCode.PARTIAL
        return ExitCode.FAILED if self.error else ExitCode.OK

    def counts(self) -> dict[str, int]:
        f = self.findings
        return {"missing": len(f.missing), "stale": len(f.stale), "extra": len(f.extra)}

    def to_json(self) -> dict[str, Any]:
        f = self.findings
        out: dict[str, Any] = {
            **self.counts(),
            "pending": len(f.pending),
            "pending_complete": self.pending_complete,
            "in_sync": self.differences == 0 and self.error is None,
            "first_missing": f.missing[:FIRST_IDS],
            "first_stale": [
                {"sys_id": s.sys_id, "kafka": to_sn(s.kafka_ts), "servicenow": to_sn(s.sn_ts)}
                for s in f.stale[:FIRST_IDS]
            ],
            "first_extra": f.extra[:FIRST_IDS],
            "topic": self.topic,
            "since": to_sn(self.since),
            "until": self.bound,
            "servicenow_records": self.sn_records,
            "kafka_messages": self.kafka_messages,
            "kafka_alive": self.kafka_alive,
            "kafka_unidentified": self.unidentified,
            "windows": len(self.windows),
            "windows_differing": sum(1 for w in self.windows if w.verdict != "same"),
            "windows_diffed": sum(1 for w in self.windows if w.verdict == "diff"),
            "servicenow_requests": self.requests,
            "error": self.error,
        }
        if self.repair is not None:
            out["repair"] = self.repair.to_json()
            out["before_repair"] = self.before_repair
        return out


@dataclass
class VerifyReport:
    tables: dict[str, TableReport] = field(default_factory=dict)
    duration_seconds: float = 0.0

    @property
    def exit_code(self) -> ExitCode:
        codes = {t.exit_code for t in self.tables.values()}
        if ExitCode.PARTIAL in codes:
            return ExitCode.PARTIAL
        return ExitCode.FAILED if ExitCode.FAILED in codes else ExitCode.OK

    def to_json(self) -> dict[str, Any]:
        return {
            "tables": {name: t.to_json() for name, t in self.tables.items()},
            "exit_code": int(self.exit_code),
            "duration_seconds": round(self.duration_seconds, 3),
        }


def record_metrics(metrics: RunMetrics, report: VerifyReport) -> None:
    """``sncli_verify_{missing,stale,extra}_records{table}`` for every table that was verified."""
    gauges = {
        kind: Gauge(f"sncli_verify_{kind}_records", f"Records {what} (last verify).", ["table"],
                    registry=metrics.registry)
        for kind, what in (
            ("missing", "in ServiceNow but not alive in the topic"),
            ("stale", "in the topic with another sys_updated_on than ServiceNow's"),
            ("extra", "alive in the topic but absent from ServiceNow"),
        )
    }
    for name, table in report.tables.items():
        if table.error is not None and not table.differences:
            continue  # not verified: leave the last known figures on the gateway
        for kind, value in table.counts().items():
            gauges[kind].labels(table=name).set(value)
