"""`backfill` on the real broker and the emulator: every record, resumable windows, Indexed-Job split, Parquet."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from sncli.config import parse_settings
from sncli.emulator.server import ServiceNowEmulator
from sncli.errors import UsageError
from sncli.offsets.lock import run_lock
from sncli.source.backfill import BackfillRequest, run_backfill
from sncli.source.cycle import run_poll
from sncli.source.poller import StopControl
from tests.fixtures.kafka import read_all
from tests.integration.test_source_support import (
    config_dict,
    keyset,
    make_settings,
    stored_cursor,
    stored_offsets,
)

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
FMT = "%Y-%m-%d %H:%M:%S"


def _ts(moment: datetime) -> str:
    return moment.strftime(FMT)


def _stop_when(condition: Callable[[], bool], stop: StopControl, timeout: float = 60) -> None:
    """Request a stop (like SIGTERM) as soon as ``condition`` holds: timing-independent interruption."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.005)
        stop.request("signal")

    threading.Thread(target=watch, daemon=True).start()


def _page_requests(emulator: ServiceNowEmulator) -> int:
    return sum(1 for e in emulator.state.journal()
               if e.path.endswith("/incident") and "ORDERBYsys_id" in e.query.get("sysparm_query", ""))


def _kafka_keys(bootstrap: str, topic: str, expected: int) -> Counter[tuple[str, str]]:
    got = read_all(bootstrap, topic, timeout=90, expected=expected)
    return Counter((v["sys_updated_on"], v["sys_id"]) for v in (orjson.loads(r.value) for r in got))


def test_parallel_4_over_100000_records_yields_every_record_once(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"bf-{uuid.uuid4().hex[:8]}"
    emulator.state.generate("incident", 100_000, at=NOW - timedelta(days=30), spread_seconds=86_400 * 29,
                            field_count=8, record_bytes=120, seed=1)
    offsets = tmp_path / "o.json"
    settings = make_settings(emulator.url, kafka_bootstrap, offsets, [{"name": "incident", "topic": topic}])

    summary = run_backfill(settings, BackfillRequest(table="incident", parallel=4))

    assert summary.exit_code == 0, summary.to_json()
    assert summary.tables["incident"].records == 100_000
    windows = summary.extra["windows"]
    assert [w["index"] for w in windows] == [0, 1, 2, 3] and all(w["done"] for w in windows)
    assert all(20_000 < w["records"] < 30_000 for w in windows)  # balanced by counts
    counts = _kafka_keys(kafka_bootstrap, topic, 100_000)
    assert set(counts) == set(keyset(emulator.state.records("incident")))
    assert max(counts.values()) == 1
    assert "incident" not in stored_offsets(offsets)  # the poll cursor is not touched


def test_stopped_backfill_resumes_per_window_without_until(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"bf-{uuid.uuid4().hex[:8]}"
    emulator.state.generate("incident", 8_000, at=NOW - timedelta(days=3), spread_seconds=86_400 * 2,
                            field_count=5, record_bytes=80, seed=2)
    emulator.state.update_settings(read_latency_ms=30)
    offsets = tmp_path / "o.json"
    settings = make_settings(emulator.url, kafka_bootstrap, offsets, [{"name": "incident", "topic": topic}],
                             page_size=200)
    stop = StopControl()
    _stop_when(lambda: sum(k.startswith("backfill/") and ".plan" not in k for k in stored_offsets(offsets)) >= 2,
               stop)
    first = run_backfill(settings, BackfillRequest(table="incident", parallel=4), stop=stop)
    assert first.exit_code == 0 and first.tables["incident"].stopped == "signal"
    assert 0 < first.tables["incident"].records < 8_000
    assert first.extra["range_done"] is False
    emulator.state.update_settings(read_latency_ms=0)
    # New records arrive meanwhile; the resumed backfill keeps its own `until` and does not take them.
    emulator.state.generate("incident", 10, at=datetime.now(UTC) + timedelta(hours=1), spread_seconds=0, seed=3)

    second = run_backfill(settings, BackfillRequest(table="incident", parallel=4))

    assert second.exit_code == 0, second.to_json()
    assert second.extra["range_id"] == first.extra["range_id"]
    assert second.extra["range_done"] is True
    assert first.tables["incident"].records + second.tables["incident"].records == 8_000  # clean stop: no repeats
    counts = _kafka_keys(kafka_bootstrap, topic, 8_000)
    assert len(counts) == 8_000 and max(counts.values()) == 1
    third = run_backfill(settings, BackfillRequest(table="incident", parallel=4))
    assert third.extra["range_id"] != first.extra["range_id"]  # the finished one is not resumed again


def test_window_split_of_an_indexed_job_covers_the_range_exactly_once(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"bf-{uuid.uuid4().hex[:8]}"
    emulator.state.generate("incident", 3_000, at=NOW - timedelta(days=3), spread_seconds=86_400, seed=4,
                            field_count=5, record_bytes=80)
    emulator.state.generate("incident", 2_000, at=NOW - timedelta(days=1), spread_seconds=0, seed=5,
                            field_count=5, record_bytes=80)  # one bulk second
    offsets = tmp_path / "o.json"
    settings = make_settings(emulator.url, kafka_bootstrap, offsets, [{"name": "incident", "topic": topic}],
                             page_size=300)
    since, until = _ts(NOW - timedelta(days=4)), _ts(NOW - timedelta(hours=1))
    in_range = set(keyset(emulator.state.records("incident")))
    plans = []
    for i in (2, 0, 3, 1):  # pods start in any order
        summary = run_backfill(settings, BackfillRequest(table="incident", since=since, until=until,
                                                         window=(i, 4)))
        assert summary.exit_code == 0
        plans.append([(w["index"], w["lo"], w["hi"]) for w in summary.extra["windows"]])
        if i == 2:
            # The table changes after the first pod planned: later pods still use the stored plan.
            moved = sorted(in_range)[:500]
            for _, sys_id in moved:
                emulator.state.update("incident", sys_id, {"short_description": "changed"}, at=NOW)
    counts = _kafka_keys(kafka_bootstrap, topic, 4_500)
    expected = in_range - set(sorted(in_range)[:500])
    assert expected <= set(counts)
    assert max(counts.values()) == 1  # exactly once between the pods
    assert summary.extra["range_done"] is True


def test_set_cursor_moves_the_poll_cursor_to_until(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"bf-{uuid.uuid4().hex[:8]}"
    emulator.state.generate("incident", 500, at=NOW - timedelta(days=2), spread_seconds=3_600, seed=6)
    offsets = tmp_path / "o.json"
    settings = make_settings(emulator.url, kafka_bootstrap, offsets, [{"name": "incident", "topic": topic}],
                             page_size=100)
    until = _ts(NOW - timedelta(days=1))
    summary = run_backfill(settings, BackfillRequest(table="incident", until=until, parallel=2, set_cursor=True))
    assert summary.exit_code == 0 and summary.extra["poll_cursor_set"] is True
    assert stored_cursor(offsets, "incident") == (until, "")
    later = emulator.state.generate("incident", 7, at=NOW - timedelta(hours=2), spread_seconds=0, seed=7)
    poll = run_poll(settings)
    assert poll.tables["incident"].records == 7  # only what came after the backfill's range
    assert {v["sys_id"] for v in (orjson.loads(r.value) for r in read_all(kafka_bootstrap, topic, timeout=30,
                                                                           expected=507))} >= set(later)
    # Never backwards: a later backfill of an older range leaves the poll cursor alone.
    older = run_backfill(settings, BackfillRequest(table="incident", until=_ts(NOW - timedelta(days=3)),
                                                   set_cursor=True))
    assert older.extra["poll_cursor_set"] is False
    assert stored_cursor(offsets, "incident") != (until, "")


def _poll_cursor_before_a_gap(emulator: ServiceNowEmulator, settings: Any, offsets: Path) -> tuple[str, set[str]]:
    """A poll cursor at NOW-3d, then records after it (the gap, NOW-2d, and NOW-20h) none of which went to Kafka."""
    emulator.state.generate("incident", 5, at=NOW - timedelta(days=3), spread_seconds=0, seed=11)
    assert run_poll(settings).tables["incident"].records == 5
    cursor = stored_cursor(offsets, "incident")
    assert cursor is not None and cursor[0] == _ts(NOW - timedelta(days=3))
    gap = emulator.state.generate("incident", 6, at=NOW - timedelta(days=2), spread_seconds=60, seed=12)
    inside = emulator.state.generate("incident", 7, at=NOW - timedelta(hours=20), spread_seconds=60, seed=13)
    return cursor[0], set(gap) | set(inside)


def test_set_cursor_is_refused_when_the_range_starts_after_the_poll_cursor(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    # Moving the poll cursor from NOW-3d to --until would skip [NOW-3d, --since): records never exported.
    topic = f"bf-{uuid.uuid4().hex[:8]}"
    offsets = tmp_path / "o.json"
    settings = make_settings(emulator.url, kafka_bootstrap, offsets, [{"name": "incident", "topic": topic}])
    cursor_ts, unsent = _poll_cursor_before_a_gap(emulator, settings, offsets)
    before = stored_cursor(offsets, "incident")
    request = BackfillRequest(table="incident", since=_ts(NOW - timedelta(days=1)),
                              until=_ts(NOW - timedelta(hours=12)), set_cursor=True)
    with pytest.raises(UsageError) as refused:
        run_backfill(settings, request)
    assert refused.value.exit_code == 2
    assert "--set-cursor" in str(refused.value) and cursor_ts in str(refused.value)
    assert stored_cursor(offsets, "incident") == before
    assert not [k for k in stored_offsets(offsets) if k.startswith("backfill/")]  # refused before any work
    poll = run_poll(settings)  # the next poll still exports the gap
    assert poll.tables["incident"].records == len(unsent)
    sent = {orjson.loads(r.value)["sys_id"] for r in read_all(kafka_bootstrap, topic, timeout=30, expected=18)}
    assert unsent <= sent


def test_set_cursor_with_a_range_from_before_the_poll_cursor_moves_it(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"bf-{uuid.uuid4().hex[:8]}"
    offsets = tmp_path / "o.json"
    settings = make_settings(emulator.url, kafka_bootstrap, offsets, [{"name": "incident", "topic": topic}])
    cursor_ts, unsent = _poll_cursor_before_a_gap(emulator, settings, offsets)
    until = _ts(NOW - timedelta(hours=12))
    summary = run_backfill(settings, BackfillRequest(table="incident", since=cursor_ts, until=until,
                                                     set_cursor=True))
    assert summary.exit_code == 0 and summary.extra["poll_cursor_set"] is True
    assert stored_cursor(offsets, "incident") == (until, "")
    sent = {orjson.loads(r.value)["sys_id"] for r in read_all(kafka_bootstrap, topic, timeout=30, expected=23)}
    assert unsent <= sent


def test_set_cursor_with_parquet_output_is_refused(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    # A range that only went to Parquet never reached the topic: the poll cursor must not pass it.
    topic = f"bf-{uuid.uuid4().hex[:8]}"
    offsets = tmp_path / "o.json"
    settings = make_settings(emulator.url, kafka_bootstrap, offsets, [{"name": "incident", "topic": topic}])
    _, unsent = _poll_cursor_before_a_gap(emulator, settings, offsets)
    before = stored_cursor(offsets, "incident")
    request = BackfillRequest(table="incident", since=_ts(NOW - timedelta(days=4)),
                              until=_ts(NOW - timedelta(hours=12)), output=tmp_path / "pq", set_cursor=True)
    with pytest.raises(UsageError) as refused:
        run_backfill(settings, request)
    assert refused.value.exit_code == 2 and "parquet" in str(refused.value)
    assert stored_cursor(offsets, "incident") == before
    assert not (tmp_path / "pq").exists()
    assert run_poll(settings).tables["incident"].records == len(unsent)


def test_a_window_delivers_the_visible_rows_after_a_run_hidden_by_acls(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"bf-{uuid.uuid4().hex[:8]}"
    emulator.state.generate("incident", 40, at=NOW - timedelta(days=1), spread_seconds=40, seed=31)
    ordered = keyset(emulator.state.records("incident"))
    ts = "sys_updated_on"
    emulator.state.update_settings(hidden_rows={"incident": f"{ts}>={ordered[10][0]}^{ts}<={ordered[29][0]}"})
    settings = make_settings(emulator.url, kafka_bootstrap, tmp_path / "o.json", [{"name": "incident", "topic": topic}],
                             page_size=10)
    summary = run_backfill(settings, BackfillRequest(table="incident", until=_ts(NOW - timedelta(hours=1))))
    t = summary.tables["incident"]
    assert (summary.exit_code, t.records, summary.extra["range_done"]) == (0, 20, True)
    assert t.hidden == 20
    assert sorted(_kafka_keys(kafka_bootstrap, topic, 20)) == ordered[:10] + ordered[30:]


def test_parquet_output_has_every_record_and_resumes(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    import pyarrow.dataset as ds

    emulator.state.generate("incident", 6_000, at=NOW - timedelta(days=2), spread_seconds=86_400, seed=8,
                            field_count=6, record_bytes=80)
    added = emulator.state.insert("incident", {"short_description": "late column", "u_extra": "x"},
                                  at=NOW - timedelta(hours=12))
    emulator.state.update_settings(read_latency_ms=25)
    out = tmp_path / "parquet"
    settings = make_settings(emulator.url, kafka_bootstrap, tmp_path / "o.json",
                             [{"name": "incident", "topic": "unused"}], page_size=250)
    stop = StopControl()
    _stop_when(lambda: _page_requests(emulator) >= 6, stop)
    first = run_backfill(settings, BackfillRequest(table="incident", parallel=3, output=out), stop=stop)
    assert first.exit_code == 0 and first.tables["incident"].stopped == "signal"
    assert not list(out.glob("*.tmp"))  # an interrupted window leaves no partial file
    emulator.state.update_settings(read_latency_ms=0)

    second = run_backfill(settings, BackfillRequest(table="incident", parallel=3, output=out))
    assert second.exit_code == 0 and second.extra["range_done"] is True
    files = sorted(p.name for p in out.iterdir())
    assert {f.split("-part")[0].removesuffix(".parquet") for f in files} == {f"incident-w{i}of3" for i in range(3)}
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(str(p) for p in out.iterdir())
    unified = pa.unify_schemas([pq.read_schema(p) for p in parts])  # parts may differ by late columns
    table = ds.dataset(parts, format="parquet", schema=unified).to_table()
    rows = table.to_pylist()
    source = {r["sys_id"]: r for r in emulator.state.records("incident")}
    assert len(rows) == 6_001 and {r["sys_id"] for r in rows} == set(source)
    assert all(f.type == "string" for f in table.schema)
    late = next(r for r in rows if r["sys_id"] == added["sys_id"])
    assert late["u_extra"] == "x"  # a column seen late is not dropped
    sample = rows[0]
    assert {k: v for k, v in sample.items() if v is not None} == {
        k: v for k, v in source[sample["sys_id"]].items() if k in sample
    }


def test_dry_run_plans_and_counts_only(emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path) -> None:
    emulator.state.generate("incident", 1_000, at=NOW - timedelta(days=2), spread_seconds=86_400, seed=9)
    offsets = tmp_path / "o.json"
    settings = make_settings(emulator.url, kafka_bootstrap, offsets, [{"name": "incident", "topic": "unused"}])
    summary = run_backfill(settings, BackfillRequest(table="incident", parallel=4, dry_run=True))
    assert summary.exit_code == 0
    assert sum(w["records_in_window"] for w in summary.extra["windows"]) == 1_000
    assert not offsets.exists()


def test_window_needs_until_and_locks_are_honoured(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    emulator.state.generate("incident", 100, at=NOW - timedelta(days=2), spread_seconds=86_400, seed=10)
    offsets = tmp_path / "o.json"
    settings = make_settings(emulator.url, kafka_bootstrap, offsets, [{"name": "incident", "topic": "unused"}])
    with pytest.raises(UsageError, match="--window needs --until"):
        run_backfill(settings, BackfillRequest(table="incident", window=(0, 2)))
    until = _ts(NOW - timedelta(days=1))
    with run_lock(settings, "incident"):
        locked = run_backfill(settings, BackfillRequest(table="incident", until=until, set_cursor=True))
    assert locked.exit_code == 75
    assert not offsets.exists()


def test_progress_bar_on_a_terminal_shows_count_rate_and_eta(capfd: pytest.CaptureFixture[str]) -> None:
    from sncli.cli.progress import terminal_progress

    progress = terminal_progress("backfill incident", 1_000, tty=True)
    for _ in range(10):
        progress.add(100)
    progress.close()
    err = capfd.readouterr().err
    assert "backfill incident" in err and "1000/1000" in err and "rec/s" in err


def test_indexed_job_pods_running_at_once_on_the_s3_store_all_finish(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    """N pods of an Indexed Job save their own window after every (small) page, all at the same time."""
    topic = f"bf-{uuid.uuid4().hex[:8]}"
    emulator.state.generate("incident", 2_400, at=NOW - timedelta(days=2), spread_seconds=86_400, seed=6,
                            field_count=3, record_bytes=40)
    data = config_dict(emulator.url, kafka_bootstrap, tmp_path / "unused.json",
                       [{"name": "incident", "topic": topic}], page_size=10)
    data["offsets"] = {"store": "s3", "url": f"s3://{s3_bucket}/sncli/offsets.json", "endpoint_url": s3_endpoint,
                       "region": "us-east-1"}
    settings = parse_settings(data, environ={})
    since, until = _ts(NOW - timedelta(days=3)), _ts(NOW - timedelta(hours=1))
    pods = 8
    results: dict[int, int] = {}

    def pod(i: int) -> None:  # one try each: a pod that finds the plan lock held waits for the plan
        summary = run_backfill(settings, BackfillRequest(table="incident", since=since, until=until,
                                                         window=(i, pods)))
        results[i] = summary.exit_code

    threads = [threading.Thread(target=pod, args=(i,)) for i in range(pods)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert results == dict.fromkeys(range(pods), 0)
    counts = _kafka_keys(kafka_bootstrap, topic, 2_400)
    assert set(counts) == set(keyset(emulator.state.records("incident"))) and max(counts.values()) == 1


def test_a_run_waits_for_the_planner_that_holds_the_plan_lock_then_gives_up_with_75(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A held plan lock is waited for (bounded): a stuck planner ends the run with 75, not a hang."""
    from sncli.source import backfill
    from sncli.source.windows import range_id, to_epoch

    emulator.state.generate("incident", 50, at=NOW - timedelta(days=2), spread_seconds=86_400, seed=11)
    offsets = tmp_path / "o.json"
    settings = make_settings(emulator.url, kafka_bootstrap, offsets, [{"name": "incident", "topic": "unused"}])
    since, until = _ts(NOW - timedelta(days=3)), _ts(NOW - timedelta(hours=1))
    rid = range_id(to_epoch(since), to_epoch(until))
    monkeypatch.setattr(backfill, "PLAN_WAIT_SECONDS", 1.0)
    started = time.monotonic()
    with run_lock(settings, f"backfill/incident/{rid}/plan"):
        stuck = run_backfill(settings, BackfillRequest(table="incident", since=since, until=until, window=(0, 2)))
    assert stuck.exit_code == 75
    assert 1.0 <= time.monotonic() - started < 10
