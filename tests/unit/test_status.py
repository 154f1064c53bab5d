"""``sncli status`` as data: what needs attention, the delete cursor's key, the Pushgateway's JSON, rendering."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from rich.console import Console

from sncli.cli.status_cmd import render_status
from sncli.errors import UsageError
from sncli.status.model import (
    DlqStatus,
    Policy,
    SinkLagStatus,
    StatusReport,
    TableStatus,
    assess,
    delete_cursor_key,
    duration_text,
    make_policy,
    parse_duration,
)
from sncli.status.pushed import LastRun, PushgatewayUnreadable, parse_groups

NOW = datetime(2026, 3, 3, 12, 0, 0, tzinfo=UTC)
OK_RUN = LastRun("incident", "source_poll", NOW, 0, 1.5, NOW)


def table(**kw: object) -> TableStatus:
    values: dict[str, object] = {"table": "incident", "cursor_timestamp": "2026-03-03 11:59:00",
                                 "cursor_sys_id": "a" * 32, "lag_seconds": 60, "fingerprint": "ok",
                                 "delete_cursor": None, "runs": (OK_RUN,)}
    values.update(kw)
    return TableStatus(**values)  # type: ignore[arg-type]


def test_a_healthy_deployment_needs_no_attention() -> None:
    reasons = assess([table()], [DlqStatus("dlq", {})], [SinkLagStatus("t", "incident", True, 5)], [], Policy())
    assert reasons == []
    assert StatusReport(NOW, [table()], [], [], None, [], reasons).exit_code == 0


@pytest.mark.parametrize(
    ("tables", "dlq", "sink", "problems", "expected"),
    [
        ([table(cursor_timestamp=None, lag_seconds=None, fingerprint=None)], [], [], [], "no cursor stored yet"),
        ([table(fingerprint="mismatch")], [], [], [], "fingerprint does not match"),
        ([table(lag_seconds=7200)], [], [], [], "freshness lag 7200s is above 3600s"),
        ([table(runs=(LastRun("incident", "sink_drain", NOW, 1, None, None),))], [], [], [],
         "last sink_drain ended with exit 1"),
        ([table()], [DlqStatus("dlq", {"decode": 1, "record": 2})], [], [], "3 record(s) pending (1 decode, 2 record)"),
        ([table()], [], [SinkLagStatus("t", "incident", False, None)], [], "sink topic t does not exist"),
        ([table()], [], [], ["the Pushgateway (refused)"], "could not read the Pushgateway"),
    ],
)
def test_each_rule_needs_attention(
    tables: list[TableStatus], dlq: list[DlqStatus], sink: list[SinkLagStatus], problems: list[str], expected: str
) -> None:
    reasons = assess(tables, dlq, sink, problems, Policy())
    assert len(reasons) == 1 and expected in reasons[0], reasons
    assert StatusReport(NOW, tables, dlq, sink, None, problems, reasons).exit_code == 3


def test_lock_contention_a_sink_only_table_and_an_unread_store_are_not_flagged() -> None:
    busy = table(runs=(LastRun("incident", "source_poll", NOW, 75, None, None),))
    sink_only = table(table="problem", cursor_timestamp=None, lag_seconds=None, fingerprint=None, polled=False)
    unread = table(cursor_timestamp=None, lag_seconds=None, fingerprint=None, cursor_known=False)
    assert assess([busy, sink_only, unread], [], [], [], Policy()) == []


def test_sink_lag_is_judged_only_with_a_threshold() -> None:
    sink = [SinkLagStatus("t", "incident", True, 500)]
    assert assess([], [], sink, [], Policy()) == []
    assert assess([], [], sink, [], Policy(max_sink_lag=100)) == ["sink topic t: group lag 500 is above 100"]


def test_delete_cursor_key_is_beside_the_tables_cursor() -> None:
    assert delete_cursor_key("incident", ["incident", "incident/deletes"]) == "incident/deletes"
    assert delete_cursor_key("incident", ["deletes/incident"]) == "deletes/incident"
    assert delete_cursor_key("incident", ["incident", "problem/deletes", "backfill/incident/r/0of2"]) is None
    assert delete_cursor_key("incident", ["incident_x/deletes"]) is None


def test_durations() -> None:
    assert parse_duration("90") == 90 and parse_duration("30m") == 1800 and parse_duration(" 2h ") == 7200
    with pytest.raises(UsageError, match="--max-lag"):
        make_policy("soon", None)
    assert (duration_text(None), duration_text(42), duration_text(3725), duration_text(90061)) == (
        "-", "42s", "1h 2m", "1d 1h")


def gauge(value: str) -> dict[str, object]:
    return {"type": "GAUGE", "metrics": [{"labels": {}, "value": value}]}


def test_parse_groups_reads_the_last_run_of_each_group_of_the_job() -> None:
    document = {"status": "success", "data": [
        {"labels": {"job": "sncli", "command": "source_poll", "table": "incident"},
         "push_time_seconds": gauge("1772539200"), "sncli_run_exit_code": gauge("3"),
         "sncli_run_duration_seconds": gauge("2.5"), "sncli_last_success_timestamp_seconds": gauge("1772535600")},
        {"labels": {"job": "other", "command": "source_poll", "table": "incident"}},
        {"labels": {"job": "sncli", "command": "x"}},
    ]}
    [run] = parse_groups(document, "sncli")
    assert (run.table, run.command, run.exit_code, run.duration_seconds) == ("incident", "source_poll", 3, 2.5)
    assert run.pushed_at == NOW and run.last_success_at == datetime(2026, 3, 3, 11, tzinfo=UTC)
    with pytest.raises(PushgatewayUnreadable):
        parse_groups({"oops": 1}, "sncli")


def test_the_screen_shows_every_part_and_what_needs_attention() -> None:
    dlq = [DlqStatus("servicenow.dlq", {"decode": 2})]
    report = StatusReport(NOW, [table(delete_cursor="2026-03-03 11:00:00")], dlq,
                          [SinkLagStatus("changes", "incident", True, 1234, 2)], "sncli-sink", [],
                          ["DLQ servicenow.dlq: 2 record(s) pending (2 decode)"])
    console = Console(record=True, width=160)
    console.print(render_status(report))
    text = console.export_text()
    for expected in ("incident", "2026-03-03 11:59:00", "1m", "2026-03-03 11:00:00", "source_poll: exit 0",
                     "servicenow.dlq", "decode: 2", "sink group sncli-sink", "1,234", "needs attention"):
        assert expected in text, expected
