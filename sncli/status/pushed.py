"""The last run of each table and command, as the Pushgateway holds it (parse is pure; fetch is one GET).

Every run pushes one group per table, ``{job, command, table}`` (+ ``window`` for a
backfill pod: :func:`sncli.metrics.push_per_table`), so the gateway's JSON API
(``GET /api/v1/metrics``) says per group when it was last pushed
(``push_time_seconds``), how that run ended (``sncli_run_exit_code``), how long
it took (``sncli_run_duration_seconds``) and when a run last succeeded
(``sncli_last_success_timestamp_seconds``).
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.client import HTTPException
from typing import Any

import orjson


class PushgatewayUnreadable(Exception):
    """The gateway could not be reached or its answer was not its JSON API's."""


@dataclass(frozen=True)
class LastRun:
    table: str
    command: str  # source_poll | sink_drain | backfill | dlq_replay | ...
    pushed_at: datetime | None
    exit_code: int | None
    duration_seconds: float | None
    last_success_at: datetime | None
    window: str | None = None  # a backfill pod's window group

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table, "command": self.command, "window": self.window,
            "pushed_at": _iso(self.pushed_at), "exit_code": self.exit_code,
            "duration_seconds": self.duration_seconds, "last_success_at": _iso(self.last_success_at),
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _gauge(group: Mapping[str, Any], name: str) -> float | None:
    family = group.get(name)
    if not isinstance(family, Mapping):
        return None
    for metric in family.get("metrics") or []:
        try:
            value = float(metric.get("value"))
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            return value
    return None


def _when(seconds: float | None) -> datetime | None:
    return None if seconds is None or seconds <= 0 else datetime.fromtimestamp(seconds, UTC)


def parse_groups(document: Any, job: str) -> list[LastRun]:
    """The runs of ``job`` in a ``/api/v1/metrics`` answer, one per group that has a table."""
    if not isinstance(document, Mapping) or not isinstance(document.get("data"), list):
        raise PushgatewayUnreadable("not a Pushgateway /api/v1/metrics answer")
    runs = []
    for group in document["data"]:
        labels = group.get("labels") if isinstance(group, Mapping) else None
        if not isinstance(labels, Mapping) or labels.get("job") != job or not labels.get("table"):
            continue
        code = _gauge(group, "sncli_run_exit_code")
        runs.append(LastRun(
            table=str(labels["table"]),
            command=str(labels.get("command") or "?"),
            pushed_at=_when(_gauge(group, "push_time_seconds")),
            exit_code=None if code is None else int(code),
            duration_seconds=_gauge(group, "sncli_run_duration_seconds"),
            last_success_at=_when(_gauge(group, "sncli_last_success_timestamp_seconds")),
            window=str(labels["window"]) if labels.get("window") else None,
        ))
    runs.sort(key=lambda r: (r.table, r.command, r.window or ""))
    return runs


def read_last_runs(gateway: str, job: str, *, timeout: float = 5.0) -> list[LastRun]:
    """GET the gateway's JSON API and parse it; PushgatewayUnreadable when that fails."""
    url = f"{gateway.rstrip('/')}/api/v1/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            document = orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise PushgatewayUnreadable(f"HTTP {exc.code} from the Pushgateway") from None
    except (OSError, HTTPException, orjson.JSONDecodeError) as exc:
        raise PushgatewayUnreadable(f"{type(exc).__name__}: {exc}") from None
    return parse_groups(document, job)
