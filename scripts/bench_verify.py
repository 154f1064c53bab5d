"""Scenario 7 (issue 17): ``sncli verify`` of a large table, in sync and with 100 records missing.

One table of ``sizes.memory_records`` records (1 000 000 in a full run) is
polled into a fresh topic, then, side by side in one run:

- in sync: ``sncli verify`` wall time against a bare confluent-kafka consumer
  reading the same topic once (``bench_bare_read.py``, a process of its own
  like sncli), interleaved run by run; and the ServiceNow requests the verify
  sent (the emulator's journal, not sncli's own count);
- 100 records missing at random: inserted into ServiceNow with old
  ``sys_updated_on`` values picked at random among the table's (an import with
  auto sys fields off: behind the cursor, so the poll never sends them); the
  verify must exit 3 and name exactly those 100, with its requests counted;
  then ``verify --repair`` and one more ``verify``, which must exit 0.
"""

from __future__ import annotations

import random
from typing import Any

from bench_env import PYTHON, ROOT, TABLE, delete_topics, interleaved, log, make_run_dir, run_timed, sncli
from bench_report import Row, Target
from bench_scenarios import Context, ScenarioError, _check_ok

MISSING = 100


def _journal_size(ctx: Context) -> int:
    return len(ctx.emulator.journal())


def _verify(ctx: Context, run: Any, *args: str, rss: list[float] | None = None) -> tuple[Any, float, int]:
    """(the JSON report, wall seconds, ServiceNow requests the emulator saw); its peak RSS added to ``rss``."""
    ctx.emulator.clear_journal()
    result = sncli(run, "--json", "verify", *args)
    if result.returncode not in (0, 3):
        raise ScenarioError(result.describe_failure())
    if rss is not None:
        rss.append(round(result.peak_rss_mb, 1))
    return result.json(), result.seconds, _journal_size(ctx)


def scenario_verify(ctx: Context) -> list[Row]:
    n = ctx.sizes.memory_records
    label = f"{n // 1000}k rec"
    in_sync = Row("7", f"verify in sync, {label}", "s", Target("ratio_min", 1 / 1.5, "<= 1.5x bare read"),
                  baseline_name="bare consumer read", higher_is_better=False)
    requests = Row("7", f"verify in sync, {label}: ServiceNow requests", "req", Target("value_max", 100, "<= 100"),
                   show_ratio=False)
    found = Row("7", f"verify, {MISSING} missing of {label}: ServiceNow requests", "req",
                Target("value_max", 2000, "<= 2000, exactly the 100"), show_ratio=False)
    repaired = Row("7", "verify after --repair: exit code", "code", Target("value_max", 0, "exit 0"),
                   show_ratio=False)
    rows = [in_sync, requests, found, repaired]
    try:
        _scenario(ctx, n, in_sync, requests, found, repaired)
    except ScenarioError as exc:
        for row in rows:
            if not row.runs:
                row.error = str(exc)
    return rows


def _scenario(ctx: Context, n: int, in_sync: Row, requests: Row, found: Row, repaired: Row) -> None:
    ctx.seed(n)
    run = make_run_dir(ctx.services, ctx.work, page_size=10_000)
    try:
        polled = sncli(run, "--json", "source", "poll")
        _check_ok(polled)
        log(f"polled {n:,} records into {run.topic} in {polled.seconds:.1f}s")

        def verify_step(i: int) -> None:
            report, seconds, sent = _verify(ctx, run, rss=in_sync.extra.setdefault("peak_rss_mb", []))
            table = report["tables"][TABLE]
            if report["exit_code"] != 0:
                raise ScenarioError(f"verify of the table in sync exited {report['exit_code']}: {table}")
            in_sync.runs.append(seconds)
            requests.runs.append(sent)
            if i == 0:
                in_sync.extra["report"] = table

        def bare_step(i: int) -> None:
            result = run_timed([str(PYTHON), str(ROOT / "scripts" / "bench_bare_read.py"),
                                ctx.services.kafka_bootstrap, run.topic], cwd=ROOT)
            if result.returncode != 0:
                raise ScenarioError(result.describe_failure())
            read = result.json()["messages"]
            if read != n:
                raise ScenarioError(f"the bare read found {read} messages, expected {n}")
            in_sync.baseline_runs.append(result.seconds)

        interleaved(ctx.runs, verify_step, bare_step)
        in_sync.notes.append("figures = wall time of the whole process (interpreter start included) for both")
        requests.notes.append("counted in the emulator's request journal")
        _missing(ctx, run, found, repaired)
    finally:
        delete_topics(ctx.services.kafka_bootstrap, [run.topic])
        ctx.seeded = None  # the table now holds more than the generated records


def _missing(ctx: Context, run: Any, found: Row, repaired: Row) -> None:
    rng = random.Random(17)
    stamps = [r["sys_updated_on"] for r in rng.sample(ctx.emulator.records(), MISSING)]
    missing = sorted(f"{rng.getrandbits(128):032x}" for _ in range(MISSING))
    ctx.emulator.insert_records([{"sys_id": s, "short_description": "imported", "sys_updated_on": t,
                                  "sys_created_on": t} for s, t in zip(missing, stamps, strict=True)])
    report, seconds, sent = _verify(ctx, run)
    table = report["tables"][TABLE]
    found.runs.append(sent)
    found.extra["report"] = table
    found.extra["seconds"] = round(seconds, 2)
    if report["exit_code"] != 3 or table["missing"] != MISSING or table["stale"] or table["extra"]:
        found.error = f"expected exactly {MISSING} missing, got {table['missing']}/{table['stale']}/{table['extra']}"
        return
    # Only the inserted records are absent from the topic, so 100 missing whose first ids are theirs are them.
    found.notes.append(f"exit 3; missing = exactly the {MISSING} inserted sys_ids ({_same(table, missing)}); "
                       f"{seconds:.1f}s")
    fixed, fix_seconds, fix_sent = _verify(ctx, run, "--repair")
    again, _, _ = _verify(ctx, run)
    repaired.runs.append(float(again["exit_code"]))
    repaired.notes.append(f"--repair exited {fixed['exit_code']} in {fix_seconds:.1f}s with {fix_sent} requests "
                          f"(re-sent {fixed['tables'][TABLE].get('repair', {}).get('resent')}); the next verify "
                          f"exited {again['exit_code']}")


def _same(table: dict[str, Any], missing: list[str]) -> str:
    first = table["first_missing"]
    if first != missing[: len(first)]:
        raise ScenarioError(f"verify named other sys_ids than those inserted: {first[:3]} vs {missing[:3]}")
    return "first ids match"

