"""The six benchmark scenarios of issue 6, each measured side by side with its baseline in the same run.

Every scenario returns :class:`~bench_report.Row` objects. A scenario that
cannot run (a command not built yet, a peer that does not install) returns a
row with ``error`` saying why instead of raising, so the table is always printed.
"""

from __future__ import annotations

import queue
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests
from bench_env import (
    PASSWORD,
    PYTHON,
    ROOT,
    SNCLI,
    TABLE,
    USER,
    Emulator,
    ProcessResult,
    Services,
    delete_topics,
    interleaved,
    log,
    make_run_dir,
    produce,
    read_keys,
    run_timed,
    sncli,
)
from bench_report import Row, Target, median

PEERS_VENV = ROOT / ".venv" / "bench-peers"
DLT_JOB = Path(__file__).resolve().parent / "bench_dlt_job.py"
RAW_LOOP = Path(__file__).resolve().parent / "bench_raw_loop.py"
DLT_DESTINATION = "parquet"  # filesystem + parquet: dlt's fastest local destination measured here


class ScenarioError(Exception):
    """A scenario could not produce a figure; the message goes into the table."""


@dataclass(frozen=True)
class Sizes:
    source_records: int  # scenarios 1-3
    sink_messages: int
    sink_keys: int
    memory_records: int
    startup_runs: int = 10


FULL = Sizes(source_records=200_000, sink_messages=4_000, sink_keys=1_000, memory_records=1_000_000)
QUICK = Sizes(source_records=20_000, sink_messages=1_000, sink_keys=250, memory_records=100_000)


@dataclass
class Context:
    services: Services
    emulator: Emulator
    work: Path
    sizes: Sizes
    runs: int
    quick: bool
    install_peers: bool
    seeded: int | None = None  # records of the current generated dataset (None: something else)
    sys_ids: list[str] = field(default_factory=list)
    source_rates: dict[int, list[float]] = field(default_factory=dict)  # page size -> sncli poll rec/s runs

    def seed(self, count: int) -> list[str]:
        """The emulator holds exactly ``count`` generated incidents (re-generated only when needed)."""
        if self.seeded != count:
            self.emulator.reset()
            started = time.perf_counter()
            self.sys_ids = self.emulator.generate(count)
            self.seeded = count
            log(f"seeded {count:,} incident records (~1 KiB, 30 fields) in {time.perf_counter() - started:.1f}s")
        return self.sys_ids


def _require_command(*words: str) -> None:
    """Raise ScenarioError if ``sncli <words> --help`` says the command is not built yet."""
    result = subprocess.run([str(SNCLI), *words, "--help"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise ScenarioError(f"skipped: `sncli {' '.join(words)}` is not available ({result.stderr.strip()[:120]})")


def _not_built(result: ProcessResult) -> bool:
    return result.returncode == 2 and "not built yet" in result.stderr


def _check_ok(result: ProcessResult) -> Any:
    if _not_built(result):
        raise ScenarioError(f"skipped: {result.stderr.strip()}")
    if result.returncode != 0:
        raise ScenarioError(result.describe_failure())
    return result.json()


def _verify_keys(ctx: Context, topic: str, expected: list[str]) -> str:
    """Every expected sys_id is in ``topic`` (distinct keys read back to partition EOF)."""
    started = time.perf_counter()
    keys = read_keys(ctx.services.kafka_bootstrap, topic)
    distinct = {k.decode() for k in keys if k is not None}
    missing = set(expected) - distinct
    if missing:
        raise ScenarioError(f"{len(missing)} of {len(expected)} records missing from {topic} (e.g. {min(missing)})")
    extra = len(distinct) - len(expected)
    log(f"verified {topic}: {len(keys):,} messages, {len(distinct):,} distinct sys_ids, all present "
        f"({time.perf_counter() - started:.1f}s)")
    return f"verified: all {len(expected):,} sys_ids read back ({len(keys):,} messages, {extra} unexpected keys)"


# --------------------------------------------------------------------------- scenario 1: poll vs raw loop


_TS = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


def query_shape(query: str) -> str:
    """A sysparm_query with its values replaced, to compare sncli's pages with the raw loop's."""
    return re.sub(r"[0-9a-f]{32}", "<S>", re.sub(_TS, "<T>", query))


def scenario_source_poll(ctx: Context) -> list[Row]:
    n = ctx.sizes.source_records
    ids = ctx.seed(n)
    return [_poll_row(ctx, page_size, ids) for page_size in (1000, 10_000)]


def _poll_row(ctx: Context, page_size: int, ids: list[str]) -> Row:
    n = len(ids)
    row = Row("1", f"source poll {n // 1000}k rec, page {page_size}", "rec/s",
              Target("ratio_min", 0.85, ">= 0.85x raw"), baseline_name="raw loop")
    in_process: list[float] = []  # sncli: records / its summary's duration
    loop_alone: list[float] = []  # the raw loop: records / its loop's own time (no start-up)
    raw_queries: list[str] = []

    def baseline(i: int) -> None:
        result = run_timed([str(PYTHON), str(RAW_LOOP), ctx.services.snow_url, TABLE, USER, PASSWORD, str(page_size)])
        if result.returncode != 0:
            raise ScenarioError(f"raw loop failed: {result.describe_failure()}")
        out = result.json()
        if out["records"] != n:
            raise ScenarioError(f"raw loop read {out['records']} records, expected {n}")
        row.baseline_runs.append(n / result.seconds)
        loop_alone.append(n / out["seconds"])
        raw_queries[:] = out["queries"]

    def measured(i: int) -> None:
        run = make_run_dir(ctx.services, ctx.work, page_size=page_size)
        if i == 0:
            ctx.emulator.clear_journal()
        result = sncli(run, "--json", "source", "poll")
        summary = _check_ok(result)
        records = summary["tables"][TABLE]["records"]
        if records != n or summary["exit_code"] != 0:
            raise ScenarioError(f"sncli polled {records} records (exit {summary['exit_code']}), expected {n}")
        row.runs.append(n / result.seconds)
        in_process.append(n / summary["duration_seconds"])
        row.extra.setdefault("process_seconds", []).append(round(result.seconds, 3))
        row.extra.setdefault("peak_rss_mb", []).append(round(result.peak_rss_mb, 1))
        if i == 0:
            row.notes.append(_compare_queries(ctx, raw_queries))
            row.notes.append(_verify_keys(ctx, run.topic, ids))
        delete_topics(ctx.services.kafka_bootstrap, [run.topic])

    try:
        baseline(-1)  # warm the emulator's caches before anything is timed
        row.baseline_runs.clear()
        loop_alone.clear()
        interleaved(ctx.runs, baseline, measured)
    except ScenarioError as exc:
        row.error = str(exc)
        return row
    ctx.source_rates[page_size] = list(row.runs)
    if row.baseline and row.figure:
        inside, alone = median(in_process), median(loop_alone)
        row.notes.append(
            f"figure and baseline = records / wall time of each one's whole process, started and timed alike "
            f"(interpreter start and imports included; sncli's also topic creation and the producer's start). "
            f"Without start-up: the raw loop alone {alone:,.0f} rec/s, sncli inside its run (its summary's "
            f"duration) {inside:,.0f} rec/s = {inside / alone:.2f}x; sncli's whole process = "
            f"{row.figure / alone:.2f}x the loop alone"
        )
    return row


def _compare_queries(ctx: Context, raw_queries: list[str]) -> str:
    """sncli's page queries (from the emulator journal) have the raw loop's shape."""
    entries = ctx.emulator.journal(path_prefix=f"/api/now/table/{TABLE}", method="GET")
    sncli_queries = [e["query"].get("sysparm_query", "") for e in entries if "sysparm_query" in e["query"]]
    pages = [q for q in sncli_queries if "ORDERBY" in q]
    sncli_shapes = {query_shape(q) for q in pages}
    raw_shapes = {query_shape(q) for q in raw_queries}
    if sncli_shapes == raw_shapes:
        return f"query shapes match the raw loop's ({len(pages)} sncli page requests): {sorted(raw_shapes)[-1]}"
    return f"QUERY SHAPES DIFFER: sncli {sorted(sncli_shapes)} vs raw {sorted(raw_shapes)}"


# --------------------------------------------------------------------------- scenario 2: vs dlt


def ensure_dlt(ctx: Context) -> None:
    """dlt in its own virtualenv: dlt needs pytz>=2022.6, pysnow (a test dependency) needs pytz<2020."""
    py = PEERS_VENV / "bin" / "python"
    probe = [str(py), "-c", "import dlt, pyarrow"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return
    if not ctx.install_peers:
        raise ScenarioError(
            f"skipped: dlt is not installed in {PEERS_VENV.relative_to(ROOT)} (a full run installs it; "
            "or pass --install-peers)"
        )
    log(f"installing dlt[parquet] into {PEERS_VENV.relative_to(ROOT)} (a separate venv: dlt's pytz>=2022.6 "
        "conflicts with pysnow's pytz<2020 in .venv) ...")
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    result = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "dlt[parquet]"],
        capture_output=True, text=True,
    )
    if result.returncode != 0 or subprocess.run(probe, capture_output=True).returncode != 0:
        lines = [ln for ln in result.stderr.splitlines() if "is ignored" not in ln]
        raise ScenarioError(f"dlt could not be installed: {' '.join(lines)[-200:]}")
    log("dlt installed")


def scenario_dlt(ctx: Context) -> list[Row]:
    n = ctx.sizes.source_records
    row = Row("2", f"source poll vs dlt rest_api, {n // 1000}k rec, page 1000", "rec/s",
              Target("ratio_min", 5.0, ">= 5x dlt"), baseline_name=f"dlt -> {DLT_DESTINATION}")
    try:
        ensure_dlt(ctx)
        ctx.seed(n)
        version = subprocess.run([str(PEERS_VENV / "bin" / "python"), "-c", "import dlt; print(dlt.__version__)"],
                                 capture_output=True, text=True).stdout.strip()

        def peer(i: int) -> None:
            workdir = Path(ctx.work) / f"dlt-{uuid.uuid4().hex[:8]}"
            workdir.mkdir()
            result = run_timed(
                [str(PEERS_VENV / "bin" / "python"), str(DLT_JOB), ctx.services.snow_url, USER, PASSWORD, "1000",
                 DLT_DESTINATION, str(workdir)],
                cwd=workdir,
            )
            shutil.rmtree(workdir, ignore_errors=True)
            if result.returncode != 0:
                raise ScenarioError(f"dlt failed: {result.describe_failure()}")
            records = int(result.json()["records"])
            if records != n:
                raise ScenarioError(f"dlt loaded {records} records, expected {n}")
            row.baseline_runs.append(n / result.seconds)

        own = ctx.source_rates.get(1000)

        def measured(i: int) -> None:
            run = make_run_dir(ctx.services, ctx.work, page_size=1000)
            result = sncli(run, "--json", "source", "poll")
            _check_ok(result)
            row.runs.append(n / result.seconds)
            delete_topics(ctx.services.kafka_bootstrap, [run.topic])

        if own:
            row.runs = list(own)
            interleaved(ctx.runs, peer)
            row.notes.append("sncli figure = scenario 1's page-1000 runs (same data, same emulator, same run)")
        else:
            interleaved(ctx.runs, peer, measured)
        row.notes.append(
            f"dlt {version} rest_api source, incremental on sys_updated_on (placeholder in sysparm_query), "
            f"offset paginator (sysparm_offset), 1000/page, filesystem destination with parquet files (fastest "
            f"measured: duckdb, duckdb+parquet and jsonl were slower); both figures are process wall time"
        )
    except ScenarioError as exc:
        row.error = str(exc)
    return [row]


# --------------------------------------------------------------------------- scenario 3: parallel backfill


def scenario_backfill(ctx: Context) -> list[Row]:
    n = ctx.sizes.source_records
    row = Row("3", f"backfill --parallel 8 vs 1, {n // 1000}k rec, read latency 100 ms", "s",
              Target("ratio_min", 5.0, ">= 5x faster"), baseline_name="--parallel 1", higher_is_better=False)
    try:
        _require_command("backfill")
        ids = ctx.seed(n)
        ctx.emulator.settings(read_latency_ms=100)

        def backfill(parallel: int, runs: list[float]) -> Callable[[int], None]:
            def step(i: int) -> None:
                run = make_run_dir(ctx.services, ctx.work, page_size=1000)
                result = sncli(run, "--json", "backfill", "--table", TABLE, "--parallel", str(parallel))
                summary = _check_ok(result)
                runs.append(result.seconds)
                if i == 0:
                    row.extra[f"summary_p{parallel}"] = summary
                note = _verify_keys(ctx, run.topic, ids)
                if i == 0:
                    row.notes.append(f"--parallel {parallel}: {note}")
                delete_topics(ctx.services.kafka_bootstrap, [run.topic])
            return step

        try:
            interleaved(ctx.runs, backfill(8, row.runs), backfill(1, row.baseline_runs))
        finally:
            ctx.emulator.settings(read_latency_ms=0)
        row.notes.append("figures = wall time of the whole `sncli backfill` process; every run's topic was read "
                         "back to partition EOF and every sys_id found")
    except ScenarioError as exc:
        row.error = str(exc)
    return [row]


# --------------------------------------------------------------------------- scenario 4: sink throughput


WORKERS, WRITE_LATENCY_MS = 16, 20


def _sink_messages(keys: list[str], count: int, tag: str) -> list[tuple[str, int, bytes]]:
    """Message i updates key i % len(keys) with its sequence number i // len(keys) (key, seq, value)."""
    out = []
    for i in range(count):
        key = keys[i % len(keys)]
        seq = i // len(keys)
        out.append((key, seq, orjson.dumps({"sys_id": key, "short_description": f"{tag}-{seq}"})))
    return out


def _keys_queue(messages: list[tuple[str, int, bytes]]) -> queue.SimpleQueue[tuple[str, list[bytes]]]:
    """Each key with its messages in order, as one item of a queue the writer threads share."""
    by_key: dict[str, list[bytes]] = {}
    for key, _seq, value in messages:
        by_key.setdefault(key, []).append(value)
    todo: queue.SimpleQueue[tuple[str, list[bytes]]] = queue.SimpleQueue()
    for item in by_key.items():
        todo.put(item)
    return todo


def _writes_per_second(count: int, workers: int, worker: Callable[[], None]) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(worker) for _ in range(workers)]:
            future.result()
    return count / (time.perf_counter() - started)


def raw_writes(url: str, messages: list[tuple[str, int, bytes]], workers: int) -> float:
    """The emulator's write limit: ``workers`` threads with a requests.Session each, taking whole keys from
    a shared queue (so no thread idles while keys are left) and PATCHing each key's messages in order."""
    todo = _keys_queue(messages)

    def worker() -> None:
        session = requests.Session()
        session.auth = (USER, PASSWORD)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        while True:
            try:
                key, values = todo.get_nowait()
            except queue.Empty:
                return
            for value in values:
                response = session.patch(f"{url}/api/now/table/{TABLE}/{key}", data=value, headers=headers)
                response.raise_for_status()

    return _writes_per_second(len(messages), workers, worker)


def bare_writes(url: str, messages: list[tuple[str, int, bytes]], workers: int) -> float:
    """The emulator's own ceiling: like :func:`raw_writes`, on urllib3 connections with no client library on top.

    Not the scenario's baseline (the issue names the plain requests loop); it
    shows how close ``workers / latency`` the emulator lets any client get on
    this machine, since its own time per write adds to the configured latency.
    """
    import base64

    from urllib3.connection import HTTPConnection

    todo = _keys_queue(messages)
    parts = urlsplit(url)
    auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    headers = {"Authorization": auth, "Content-Type": "application/json", "Accept": "application/json"}

    def worker() -> None:
        conn = HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
        while True:
            try:
                key, values = todo.get_nowait()
            except queue.Empty:
                return
            for value in values:
                conn.request("PATCH", f"/api/now/table/{TABLE}/{key}", body=value, headers=headers)
                answer = conn.getresponse()
                answer.read()
                if answer.status != 200:
                    raise ScenarioError(f"bare PATCH answered {answer.status}")

    return _writes_per_second(len(messages), workers, worker)


def scenario_sink(ctx: Context) -> list[Row]:
    m, k = ctx.sizes.sink_messages, ctx.sizes.sink_keys
    target = 0.9 * WORKERS / (WRITE_LATENCY_MS / 1000)
    row = Row("4", f"sink drain {m:,} msgs / {k:,} keys, {WORKERS} workers, write latency {WRITE_LATENCY_MS} ms",
              "writes/s", Target("value_min", target, f">= {target:.0f}/s (0.9 x {WORKERS}/{WRITE_LATENCY_MS}ms)"),
              baseline_name=f"raw {WORKERS}-thread PATCH loop")
    try:
        _require_command("sink", "drain")
        ctx.emulator.reset()
        ctx.seeded = None
        keys = [uuid.uuid4().hex for _ in range(k)]
        ctx.emulator.insert_records([{"sys_id": key, "short_description": "initial"} for key in keys])
        ctx.emulator.settings(write_latency_ms=WRITE_LATENCY_MS)
        wall: list[float] = []

        bare: list[float] = []

        def baseline(i: int) -> None:
            row.baseline_runs.append(raw_writes(ctx.services.snow_url, _sink_messages(keys, m, f"raw{i}"), WORKERS))
            bare.append(bare_writes(ctx.services.snow_url, _sink_messages(keys, m, f"bare{i}"), WORKERS))

        def measured(i: int) -> None:
            tag = f"run{i}-{uuid.uuid4().hex[:6]}"
            topic = f"bench.sink.{uuid.uuid4().hex[:8]}"
            messages = _sink_messages(keys, m, tag)
            produce(ctx.services.kafka_bootstrap, topic, ((key.encode(), value) for key, _s, value in messages))
            run = make_run_dir(ctx.services, ctx.work, sink_topic=topic)
            ctx.emulator.clear_journal()
            result = sncli(run, "--json", "sink", "drain", "--workers", str(WORKERS), marks=["assigned"])
            summary = _check_ok(result)
            written = sum(summary.get("written", {}).values())
            if written != m:
                raise ScenarioError(f"sink wrote {written} of {m} messages: {summary}")
            joined = result.marks.get("assigned")
            if joined is None:
                raise ScenarioError("no 'assigned' log line from sink drain; cannot separate the group join")
            row.runs.append(m / (result.seconds - joined))
            wall.append(m / result.seconds)
            row.extra.setdefault("join_seconds", []).append(round(joined, 2))
            order_note = _verify_sink_order(ctx, messages, tag)
            if i == 0:
                row.notes.append(order_note)
            delete_topics(ctx.services.kafka_bootstrap, [topic, f"{topic}.dlq"])

        try:
            interleaved(ctx.runs, baseline, measured)
        finally:
            ctx.emulator.settings(write_latency_ms=0)
        row.notes.append(
            f"figure = messages / (process end - the 'assigned' log line), i.e. after the consumer-group join "
            f"(join {median(row.extra['join_seconds']):.1f}s with session.timeout.ms 6000); "
            f"whole process incl. start and join: {median(wall):.0f} writes/s"
        )
        ceiling = median(bare)
        row.extra["bare_urllib3_writes_per_s"] = [round(b, 1) for b in bare]
        row.notes.append(
            f"the emulator's ceiling, same run: a bare {WORKERS}-thread urllib3 PATCH loop reaches {ceiling:.0f} "
            f"writes/s ({WORKERS / ceiling * 1000:.1f} ms per write against {WRITE_LATENCY_MS} ms of configured "
            f"latency); sncli = {median(row.runs) / ceiling:.2f}x of it"
        )
    except ScenarioError as exc:
        row.error = str(exc)
    return [row]


def _verify_sink_order(ctx: Context, messages: list[tuple[str, int, bytes]], tag: str) -> str:
    """Per key, the PATCHes reached ServiceNow in message order, and the last value is the last message's."""
    last: dict[str, str] = {}
    for key, seq, _value in messages:
        last[key] = f"{tag}-{seq}"
    records = {r["sys_id"]: r for r in ctx.emulator.records()}
    wrong = [key for key, want in last.items() if records.get(key, {}).get("short_description") != want]
    if wrong:
        got = records.get(wrong[0], {}).get("short_description")
        raise ScenarioError(f"{len(wrong)} keys end with the wrong value (e.g. {wrong[0]}: {got!r})")
    seen: dict[str, list[int]] = {}
    for entry in ctx.emulator.journal(method="PATCH"):
        body = orjson.loads(entry["body"] or "{}")
        value = str(body.get("short_description", ""))
        if value.startswith(tag + "-") and entry["status"] == 200:
            seen.setdefault(entry["sys_id"], []).append(int(value.rsplit("-", 1)[1]))
    unordered = [key for key, seqs in seen.items() if seqs != sorted(seqs)]
    if unordered:
        raise ScenarioError(f"{len(unordered)} keys written out of order (e.g. {unordered[0]}: {seen[unordered[0]]})")
    writes = sum(len(s) for s in seen.values())
    return (f"order verified: last value of all {len(last):,} keys = last message; per-key PATCH order in the "
            f"emulator journal = message order ({writes:,} writes)")


# --------------------------------------------------------------------------- scenario 5: memory


def scenario_memory(ctx: Context) -> list[Row]:
    n = ctx.sizes.memory_records
    rows = [
        Row("5", f"backfill {n // 1000}k rec -> Kafka, peak RSS", "MB", Target("value_max", 256, "<= 256 MB"),
            summarize="max"),
        Row("5", f"backfill {n // 1000}k rec -> Parquet, peak RSS", "MB", Target("value_max", 256, "<= 256 MB"),
            summarize="max"),
    ]
    try:
        _require_command("backfill")
    except ScenarioError as exc:
        for row in rows:
            row.error = str(exc)
        return rows
    ids = ctx.seed(n)
    for row, output in zip(rows, ("kafka", "parquet"), strict=True):
        try:
            def step(i: int, row: Row = row, output: str = output) -> None:
                run = make_run_dir(ctx.services, ctx.work, page_size=1000)
                target = run.path / "out"
                args = ["--json", "backfill", "--table", TABLE]
                args += ["--output", f"parquet:{target}"] if output == "parquet" else []
                result = sncli(run, *args)
                _check_ok(result)
                row.runs.append(result.peak_rss_mb)
                row.extra.setdefault("seconds", []).append(round(result.seconds, 2))
                if i == 0:
                    if output == "kafka":
                        row.notes.append(_verify_keys(ctx, run.topic, ids))
                    else:
                        row.notes.append(_verify_parquet(target, n))
                if output == "kafka":
                    delete_topics(ctx.services.kafka_bootstrap, [run.topic])
                shutil.rmtree(target, ignore_errors=True)

            interleaved(ctx.runs, step)
            row.notes.append(
                f"figure = the worst run's peak RSS (VmHWM of the sncli process, sampled every 10 ms); "
                f"{n / median(row.extra['seconds']):,.0f} rec/s"
                + (" (--quick: a smaller count than the target's 1 000 000)" if ctx.quick else "")
            )
        except ScenarioError as exc:
            row.error = str(exc)
    return rows


def _verify_parquet(target: Path, expected: int) -> str:
    import pyarrow.parquet as pq

    files = [target] if target.is_file() else sorted(target.rglob("*.parquet"))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    if rows != expected:
        raise ScenarioError(f"parquet output holds {rows} rows in {len(files)} files, expected {expected}")
    return f"verified: {rows:,} rows in {len(files)} parquet file(s)"


# --------------------------------------------------------------------------- scenario 6: start-up


def scenario_startup(ctx: Context) -> list[Row]:
    rows = []

    def start(args: list[str]) -> float:
        result = run_timed(args, cwd=ROOT)
        if result.returncode != 0:
            raise ScenarioError(result.describe_failure())
        return result.seconds

    for words in (["--help"], ["source", "poll", "--help"]):
        row = Row("6", f"start-up: sncli {' '.join(words)}", "s", Target("value_max", 0.3, "<= 0.3 s"),
                  baseline_name="python -c pass", show_ratio=False)
        try:
            for _ in range(ctx.sizes.startup_runs):
                row.baseline_runs.append(start([str(PYTHON), "-c", "pass"]))
                row.runs.append(start([str(SNCLI), *words]))
        except ScenarioError as exc:
            row.error = str(exc)
        row.notes.append(f"median of {ctx.sizes.startup_runs} fresh processes; baseline = the bare interpreter of "
                         f"the same venv, for scale")
        rows.append(row)
    return rows


SCENARIOS: dict[int, Callable[[Context], list[Row]]] = {
    1: scenario_source_poll,
    2: scenario_dlt,
    3: scenario_backfill,
    4: scenario_sink,
    5: scenario_memory,
    6: scenario_startup,
}
