"""`source poll` on the real broker and the emulator: lossless, exactly the records, bounded."""

from __future__ import annotations

import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from sncli.config import parse_settings
from sncli.emulator.faults import Fault
from sncli.emulator.server import ServiceNowEmulator
from sncli.errors import ExitCode
from sncli.offsets.lock import run_lock
from sncli.source.cycle import run_poll
from sncli.source.poller import StopControl
from tests.fixtures.kafka import read_all
from tests.integration.test_source_support import (
    config_dict,
    keyset,
    make_settings,
    stored_cursor,
    stored_offsets,
    values,
)

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def _seed_bulk(emulator: ServiceNowEmulator, table: str = "incident") -> None:
    """12 000 records sharing one second (a bulk update) + 3 000 spread over time."""
    emulator.state.generate(
        table, 12_000, at=NOW - timedelta(hours=3), spread_seconds=0, field_count=12, record_bytes=256, seed=1
    )
    emulator.state.generate(
        table, 3_000, at=NOW - timedelta(hours=2), spread_seconds=3_000, field_count=12, record_bytes=256, seed=2
    )


def test_15000_records_one_bulk_second_each_exactly_once_in_order(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    _seed_bulk(emulator)
    offsets = tmp_path / "offsets.json"
    settings = make_settings(emulator.url, kafka_bootstrap, offsets, [{"name": "incident", "topic": unique_topic}])

    summary = run_poll(settings)

    assert summary.exit_code == 0, summary.to_json()
    t = summary.tables["incident"]
    assert (t.records, t.produced, t.pages, t.stopped, t.error) == (15_000, 15_000, 15, "caught_up", None)
    expected = keyset(emulator.state.records("incident"))
    got = read_all(kafka_bootstrap, unique_topic, timeout=60, expected=15_000)
    decoded = values(got)
    assert len(got) == 15_000
    assert sorted((v["sys_updated_on"], v["sys_id"]) for v in decoded) == expected  # each exactly once
    # In order: within each partition (so for each key) records are in keyset order.
    by_partition: dict[int, list[tuple[str, str]]] = {}
    for rec, val in zip(got, decoded, strict=True):
        by_partition.setdefault(rec.partition, []).append((val["sys_updated_on"], val["sys_id"]))
    assert len(by_partition) > 1
    for seq in by_partition.values():
        assert seq == sorted(seq)
    assert stored_cursor(offsets, "incident") == expected[-1]
    # Record shape: key, headers, Kafka timestamp.
    first, first_value = got[0], decoded[0]
    assert first.key == first_value["sys_id"].encode()
    assert first.header("sn.table") == b"incident"
    assert first.header("sn.sys_id") == first_value["sys_id"].encode()
    assert first.header("sn.instance") == f"127.0.0.1:{emulator.port}".encode()
    assert first.header("sn.extracted_at") is not None and first.header("sn.extracted_at").endswith(b"Z")
    updated = datetime.strptime(first_value["sys_updated_on"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert first.timestamp_ms == int(updated.timestamp() * 1000)


def test_keyset_queries_never_use_an_offset_and_keep_hi_fixed(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    emulator.state.generate("incident", 250, at=NOW - timedelta(hours=1), spread_seconds=0, seed=3)
    settings = make_settings(
        emulator.url,
        kafka_bootstrap,
        tmp_path / "o.json",
        [{"name": "incident", "topic": unique_topic, "query": "active=true^ORactive=false"}],
        page_size=100,
        safety_lag_seconds=5,
    )
    emulator.state.clear_journal()
    summary = run_poll(settings)
    assert summary.exit_code == 0
    pages = [
        e
        for e in emulator.state.journal()
        if e.path.endswith("/incident") and e.method == "GET" and "ORDERBY" in e.query.get("sysparm_query", "")
    ]
    # 100 + 100 + 50 + the empty page, then the look past it (with the count) that says nothing remains.
    assert len(pages) == 5
    assert [e.query["sysparm_no_count"] for e in pages] == ["true"] * 4 + ["false"]
    his = set()
    for entry in pages:
        assert "sysparm_offset" not in entry.query
        assert entry.query["sysparm_limit"] == ("100" if entry is not pages[-1] else "200")
        q = entry.query["sysparm_query"]
        assert q.endswith("^ORDERBYsys_updated_on^ORDERBYsys_id")
        his.add(q.split("sys_updated_on<=")[1].split("^")[0])
        assert q.count("active=true^ORactive=false") == q.count("^NQ") + 1  # base query in every clause
    assert his == {summary.upper_bound}
    assert pages[0].query["sysparm_query"].startswith("active=true^ORactive=false^sys_updated_on>=1970-01-01 00:00:00")


def test_short_pages_are_not_the_end(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    emulator.state.generate("incident", 300, at=NOW - timedelta(hours=1), spread_seconds=10, seed=4)
    emulator.state.faults.add(Fault(kind="short_page", table="incident", times=5, records=7))
    settings = make_settings(
        emulator.url, kafka_bootstrap, tmp_path / "o.json", [{"name": "incident", "topic": unique_topic}], page_size=100
    )
    summary = run_poll(settings)
    assert summary.exit_code == 0
    got = values(read_all(kafka_bootstrap, unique_topic, timeout=30, expected=300))
    assert sorted((v["sys_updated_on"], v["sys_id"]) for v in got) == keyset(emulator.state.records("incident"))


def test_rows_hidden_by_acls_across_whole_pages_do_not_end_the_cycle(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path, pushgateway_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 60 rows, one a second; ACLs hide rows 10..34 (2.5 pages: sysparm_limit counts them, so whole pages come
    # back empty mid-table) and the last 10 (the end of the range). The visible rows after the first hidden
    # run must come in this cycle; the 35 hidden ones are counted and reported.
    at = NOW - timedelta(hours=1)
    emulator.state.generate("incident", 60, at=at, spread_seconds=60, seed=21)
    ordered = keyset(emulator.state.records("incident"))
    stamp = [k[0] for k in ordered]
    ts = "sys_updated_on"
    hidden = f"{ts}>={stamp[10]}^{ts}<={stamp[34]}^NQ{ts}>={stamp[50]}^{ts}<={stamp[59]}"
    emulator.state.update_settings(hidden_rows={"incident": hidden})
    visible = ordered[:10] + ordered[35:50]
    offsets = tmp_path / "o.json"
    data = config_dict(emulator.url, kafka_bootstrap, offsets, [{"name": "incident", "topic": unique_topic}],
                       page_size=10, pushgateway=pushgateway_url)
    data["metrics"]["job"] = job = f"sncli-acl-{unique_topic}"
    settings = parse_settings(data, environ={})
    with caplog.at_level("WARNING", logger="sncli.source"):
        summary = run_poll(settings)
    t = summary.tables["incident"]
    assert (summary.exit_code, t.stopped, t.error) == (0, "caught_up", None)
    assert (t.records, t.produced) == (25, 25)
    assert t.hidden == 35
    assert summary.to_json()["tables"]["incident"]["hidden_by_acl"] == 35
    with urllib.request.urlopen(f"{pushgateway_url}/metrics", timeout=5) as resp:
        pushed = [line for line in resp.read().decode().splitlines()
                  if line.startswith("sncli_source_hidden_records_total{") and f'job="{job}"' in line]
    assert len(pushed) == 1 and float(pushed[0].rsplit(" ", 1)[1]) == 35
    got = values(read_all(kafka_bootstrap, unique_topic, timeout=30, expected=25))
    assert sorted((v[ts], v["sys_id"]) for v in got) == visible
    assert any("hidden from the integration user by ACLs" in r.getMessage() and "25 rows" in r.getMessage()
               for r in caplog.records)
    # Past the hidden rest of the range: the next cycle neither reads nor counts it again.
    hi = datetime.strptime(summary.upper_bound or "", "%Y-%m-%d %H:%M:%S")
    assert stored_cursor(offsets, "incident") == ((hi + timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S"), "")
    later = emulator.state.generate("incident", 3, at=emulator.state.clock.now(), seed=22)  # written after it
    emulator.state.clock.advance(2)  # and settled: within the next cycle's bound (safety lag 1 s)
    again = run_poll(settings).tables["incident"]
    assert (again.records, again.hidden, again.error) == (3, 0, None)
    got = values(read_all(kafka_bootstrap, unique_topic, timeout=30, expected=28))
    assert set(later) <= {v["sys_id"] for v in got}


def test_a_hidden_run_longer_than_the_look_past_may_read_fails_the_table_loudly(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sncli.source import fetch

    monkeypatch.setattr(fetch, "LOOK_PAST_MAX_ROWS", 20)  # 100 000 in the product
    emulator.state.generate("incident", 60, at=NOW - timedelta(hours=1), spread_seconds=60, seed=23)
    ordered = keyset(emulator.state.records("incident"))
    ts = "sys_updated_on"
    emulator.state.update_settings(hidden_rows={"incident": f"{ts}>={ordered[5][0]}^{ts}<={ordered[54][0]}"})
    offsets = tmp_path / "o.json"
    settings = make_settings(emulator.url, kafka_bootstrap, offsets, [{"name": "incident", "topic": unique_topic}],
                             page_size=5)
    summary = run_poll(settings)
    t = summary.tables["incident"]
    assert summary.exit_code == ExitCode.FAILED and t.records == 5
    assert t.error is not None and "hidden from the integration user by ACLs" in t.error
    assert stored_cursor(offsets, "incident") == ordered[4]  # never past rows it could not see


def test_next_run_continues_after_the_cursor_and_start_is_inclusive(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    start = NOW - timedelta(hours=5)
    emulator.state.generate("incident", 10, at=start - timedelta(seconds=1), spread_seconds=0, seed=5)  # before
    at_start = emulator.state.generate("incident", 3, at=start, spread_seconds=0, seed=6)
    offsets = tmp_path / "o.json"
    settings = make_settings(
        emulator.url,
        kafka_bootstrap,
        offsets,
        [{"name": "incident", "topic": unique_topic, "start": start.strftime("%Y-%m-%d %H:%M:%S")}],
        page_size=2,
    )
    assert run_poll(settings).tables["incident"].records == 3
    first = values(read_all(kafka_bootstrap, unique_topic, timeout=30, expected=3))
    assert sorted(v["sys_id"] for v in first) == sorted(at_start)

    later = emulator.state.generate("incident", 4, at=NOW - timedelta(minutes=1), spread_seconds=0, seed=7)
    again = run_poll(settings)
    assert again.tables["incident"].records == 4
    assert again.tables["incident"].cursor_before is not None
    everything = values(read_all(kafka_bootstrap, unique_topic, timeout=30, expected=7))
    assert sorted(v["sys_id"] for v in everything) == sorted(at_start + later)
    assert run_poll(settings).tables["incident"].records == 0  # caught up: nothing re-sent


def test_max_records_is_exact_and_stores_what_was_acknowledged(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    emulator.state.generate("incident", 500, at=NOW - timedelta(hours=1), spread_seconds=100, seed=8)
    offsets = tmp_path / "o.json"
    settings = make_settings(
        emulator.url, kafka_bootstrap, offsets, [{"name": "incident", "topic": unique_topic}], page_size=100
    )
    summary = run_poll(settings, max_records=250)
    assert summary.exit_code == 0
    t = summary.tables["incident"]
    assert (t.records, t.stopped) == (250, "max_records")
    expected = keyset(emulator.state.records("incident"))
    assert stored_cursor(offsets, "incident") == expected[249]
    rest = run_poll(settings)
    assert rest.tables["incident"].records == 250
    got = values(read_all(kafka_bootstrap, unique_topic, timeout=30, expected=500))
    assert sorted((v["sys_updated_on"], v["sys_id"]) for v in got) == expected


def test_stop_request_ends_at_a_page_boundary_with_exit_0(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    emulator.state.generate(
        "incident", 2_000, at=NOW - timedelta(hours=1), spread_seconds=100, seed=9, field_count=5, record_bytes=100
    )
    emulator.state.update_settings(read_latency_ms=50)
    offsets = tmp_path / "o.json"
    settings = make_settings(
        emulator.url, kafka_bootstrap, offsets, [{"name": "incident", "topic": unique_topic}], page_size=100
    )
    stop = StopControl()

    def stop_after_two_pages() -> None:  # like a SIGTERM arriving mid-run, whatever the machine's speed
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            cursor = stored_cursor(offsets, "incident")
            if cursor is not None and cursor >= keyset(emulator.state.records("incident"))[199]:
                break
            time.sleep(0.005)
        stop.request("signal")

    threading.Thread(target=stop_after_two_pages, daemon=True).start()
    summary = run_poll(settings, stop=stop)
    t = summary.tables["incident"]
    assert summary.exit_code == 0 and t.stopped == "signal"
    assert 0 < t.records < 2_000 and t.records % 100 == 0
    assert stored_cursor(offsets, "incident") == keyset(emulator.state.records("incident"))[t.records - 1]
    assert len(read_all(kafka_bootstrap, unique_topic, timeout=30, expected=t.records)) == t.records


def test_max_seconds_bounds_the_run(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    emulator.state.generate(
        "incident", 2_000, at=NOW - timedelta(hours=1), spread_seconds=100, seed=10, field_count=5, record_bytes=100
    )
    emulator.state.update_settings(read_latency_ms=100)
    settings = make_settings(
        emulator.url, kafka_bootstrap, tmp_path / "o.json", [{"name": "incident", "topic": unique_topic}], page_size=100
    )
    summary = run_poll(settings, max_seconds=0.5)
    assert summary.exit_code == 0
    assert summary.tables["incident"].stopped == "max_seconds"
    assert summary.tables["incident"].records < 2_000
    assert summary.duration_seconds < 5


def test_one_failing_table_does_not_stop_the_others(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    emulator.state.generate("incident", 120, at=NOW - timedelta(hours=1), spread_seconds=10, seed=11)
    emulator.state.generate("problem", 5, at=NOW - timedelta(hours=1), spread_seconds=10, seed=12)
    emulator.state.update_settings(denied_tables={"problem"})
    offsets = tmp_path / "o.json"
    tables = [{"name": "incident", "topic": unique_topic}, {"name": "problem", "topic": unique_topic + "-p"}]
    settings = make_settings(emulator.url, kafka_bootstrap, offsets, tables, page_size=50)
    summary = run_poll(settings)
    assert summary.exit_code == ExitCode.PARTIAL
    assert summary.tables["incident"].records == 120 and summary.tables["incident"].error is None
    assert "403" in (summary.tables["problem"].error or "")
    assert "problem" not in stored_offsets(offsets)
    only_problem = run_poll(settings, tables=["problem"])
    assert only_problem.exit_code == ExitCode.FAILED


def test_a_changed_base_query_refuses_the_stored_cursor(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    emulator.state.generate("incident", 20, at=NOW - timedelta(hours=1), spread_seconds=10, seed=13)
    offsets = tmp_path / "o.json"
    table: dict[str, Any] = {"name": "incident", "topic": unique_topic}
    assert run_poll(make_settings(emulator.url, kafka_bootstrap, offsets, [table])).exit_code == 0
    before = offsets.read_bytes()
    changed = make_settings(emulator.url, kafka_bootstrap, offsets, [{**table, "query": "active=true"}])
    summary = run_poll(changed)
    error = summary.tables["incident"].error or ""
    assert summary.exit_code == ExitCode.USAGE
    assert "fingerprint" in error and "sncli offsets reset --table incident" in error
    assert offsets.read_bytes() == before  # untouched


def test_held_lock_exits_75_before_doing_anything(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    emulator.state.generate("incident", 20, at=NOW - timedelta(hours=1), spread_seconds=10, seed=14)
    emulator.state.generate("problem", 20, at=NOW - timedelta(hours=1), spread_seconds=10, seed=15)
    offsets = tmp_path / "o.json"
    tables = [{"name": "incident", "topic": unique_topic}, {"name": "problem", "topic": unique_topic + "-p"}]
    settings = make_settings(emulator.url, kafka_bootstrap, offsets, tables)
    emulator.state.clear_journal()
    with run_lock(settings, "problem"):
        summary = run_poll(settings)
    assert summary.exit_code == ExitCode.LOCKED
    assert "problem" in (summary.error or "")
    assert not offsets.exists()
    assert [e for e in emulator.state.journal() if "/api/now/table/" in e.path] == []  # not a single request


def test_dry_run_fetches_and_counts_but_stores_and_produces_nothing(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    emulator.state.generate("incident", 130, at=NOW - timedelta(hours=1), spread_seconds=10, seed=16)
    offsets = tmp_path / "o.json"
    settings = make_settings(
        emulator.url, kafka_bootstrap, offsets, [{"name": "incident", "topic": unique_topic}], page_size=50
    )
    summary = run_poll(settings, dry_run=True)
    assert summary.exit_code == 0 and summary.tables["incident"].records == 130
    assert summary.tables["incident"].produced == 0  # counted, not produced
    assert not offsets.exists()
    from sncli.kafka.admin import existing_topics

    assert unique_topic not in existing_topics(settings.kafka)


def test_configured_fields_and_fields_key(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    emulator.state.generate("incident", 40, at=NOW - timedelta(hours=1), spread_seconds=10, seed=17)
    table = {
        "name": "incident",
        "topic": unique_topic,
        "fields": ["sys_id", "sys_updated_on", "number", "priority"],
        "key": {"type": "fields", "fields": ["priority"]},
    }
    settings = make_settings(emulator.url, kafka_bootstrap, tmp_path / "o.json", [table], page_size=15)
    assert run_poll(settings).exit_code == 0
    got = read_all(kafka_bootstrap, unique_topic, timeout=30, expected=40)
    assert len(got) == 40
    import hashlib

    for rec in got:
        value = orjson.loads(rec.value)
        assert set(value) == {"sys_id", "sys_updated_on", "number", "priority"}
        raw = value["priority"].encode()
        assert rec.key == hashlib.sha256(b"%d:%s;" % (len(raw), raw)).hexdigest().encode()
