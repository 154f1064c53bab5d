"""A verify's report: the JSON contract, exit codes, the metrics it sets."""

from __future__ import annotations

from prometheus_client import generate_latest

from sncli.metrics import RunMetrics
from sncli.verify.report import TableReport, VerifyReport, record_metrics
from sncli.verify.search import Findings, Stale


def _report(**tables: TableReport) -> VerifyReport:
    return VerifyReport(tables=dict(tables))


def test_exit_codes_differences_first_then_failures() -> None:
    ok = TableReport("a", "ta")
    differs = TableReport("b", "tb", findings=Findings(missing=["1" * 32]))
    failed = TableReport("c", "tc", error="the topic could not be read")
    assert _report(a=ok).exit_code == 0
    assert _report(a=ok, b=differs).exit_code == 3
    assert _report(a=ok, c=failed).exit_code == 1
    assert _report(b=differs, c=failed).exit_code == 3
    pending_only = TableReport("d", "td", findings=Findings(pending=["2" * 32]))
    assert _report(d=pending_only).exit_code == 0  # the next poll delivers those


def test_json_has_the_contract_keys_and_first_ids() -> None:
    ids = [f"{i:032x}" for i in range(15)]
    t = TableReport("incident", "topic", since=0, findings=Findings(missing=ids, extra=ids[:2],
                                                                    stale=[Stale(ids[3], 100, 200)]))
    doc = _report(incident=t).to_json()
    table = doc["tables"]["incident"]
    assert (table["missing"], table["stale"], table["extra"]) == (15, 1, 2)
    assert table["first_missing"] == ids[:10]
    assert table["first_stale"] == [{"sys_id": ids[3], "kafka": "1970-01-01 00:01:40",
                                     "servicenow": "1970-01-01 00:03:20"}]
    assert doc["exit_code"] == 3 and table["in_sync"] is False


def test_metrics_per_table_and_none_for_a_table_not_verified() -> None:
    metrics = RunMetrics()
    record_metrics(metrics, _report(
        a=TableReport("a", "ta", findings=Findings(missing=["1" * 32, "2" * 32])),
        c=TableReport("c", "tc", error="down"),
    ))
    text = generate_latest(metrics.registry).decode()
    assert 'sncli_verify_missing_records{table="a"} 2.0' in text
    assert 'sncli_verify_extra_records{table="a"} 0.0' in text
    assert 'table="c"' not in text
