"""``sncli backfill``: load a time range of one table, split into windows that run in parallel.

The range is ``[since, until)``: ``since`` defaults to the table's ``start``,
``until`` to ServiceNow's clock minus the safety lag (+1 s, so it covers what a
poll would). It is split into N windows by record counts
(:mod:`sncli.source.windows`); each window pages with the same keyset cursor as
a poll (``ts<hi`` instead of ``ts<=HI``), with its own producer, and stores its
cursor under ``backfill/<table>/<range-id>/<i>of<N>`` after every acknowledged
page, so a killed backfill resumes per window. A finished window's cursor is
``(hi, "")`` - "everything before hi was read" - which is how a later run knows
it is done.

The plan (the windows' boundaries) is stored before any window runs, under
``backfill/<table>/<range-id>.plan/<i>of<N>`` (timestamp = the window's start),
while holding a plan lock. Why store it: a re-planned split of a live table can
differ (records move out of the range when they are updated), and resuming a
window's cursor inside different boundaries could leave a gap. With the plan
stored, a resumed backfill and the N pods of an Indexed Job (``--window i/N``)
all use the very same windows: together they cover the range exactly once.

Resuming without ``--until``: the latest unfinished backfill of the same table,
``since``, N and output is continued (its ``until`` kept); with ``--until`` the
range is exactly the one given. ``--window`` requires ``--until`` (pods must not
each pick their own "now").

Parquet output (``parquet:PATH``) writes one file per window (see
:mod:`sncli.source.parquet_out`); such a window resumes from its start (its file
is only complete at the end), and its range id carries a hash of PATH so a
backfill to another place is not mistaken for this one.

The poll cursor is not touched unless ``--set-cursor``: then, once every window
of the range is done (by this run or others), it moves to ``(until, "")`` if it
is behind that - never backwards. That needs the table's poll lock, taken with
the window locks before any work (exit 75 if any is held). ``--set-cursor`` is
refused (exit 2, before any work) when moving the cursor could pass records the
topic never got (:func:`check_set_cursor`): with a Parquet output (the range
went to files, not to the topic), and when the range starts after the poll
cursor (everything between the cursor and ``since`` was never exported).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sncli.config import source_fingerprint
from sncli.errors import ExitCode, LockHeldError, SncliError, UsageError
from sncli.metrics import RunMetrics
from sncli.offsets.lock import run_lock
from sncli.offsets.model import StoredOffset, check_offset, normalize_timestamp
from sncli.offsets.store import open_store
from sncli.source.backfill_deletes import check_deletes_request, deletes_before_records, move_deletes_cursor
from sncli.source.backfill_plan import (
    COUNT_THREADS,
    RangeCounter,
    load_plan,
    make_plan,
    save_plan,
    unfinished_until,
    window_done,
    window_key,
)
from sncli.source.cursor import Cursor, UpperBound, upper_bound
from sncli.source.outcome import RunSummary, TableOutcome, combined_exit_code, describe_error
from sncli.source.parquet_out import ParquetWindowWriter
from sncli.source.poller import Deliver, Records, StopControl
from sncli.source.range_run import RangeRun
from sncli.source.runkit import (
    Background,
    check_source_settings,
    finish_metrics,
    make_client,
    new_producer,
    start_metrics,
    start_topic_check,
)
from sncli.source.set_cursor import check_set_cursor, check_until_reached, poll_position, set_poll_cursor
from sncli.source.windows import Window, range_id, to_epoch, to_sn

if TYPE_CHECKING:
    from sncli.config import Settings, SourceTable
    from sncli.kafka.producer import PageProducer
    from sncli.offsets.lock import RunLock
    from sncli.offsets.store import OffsetStore
    from sncli.servicenow.client import ServiceNowClient

log = logging.getLogger("sncli.backfill")

PROGRESS_LOG_SECONDS = 10.0
#: How long a run that finds the plan lock held waits for that planner's plan before exiting 75.
PLAN_WAIT_SECONDS = 120.0


# --------------------------------------------------------------------------- request


@dataclass(frozen=True)
class BackfillRequest:
    table: str
    since: str | None = None
    until: str | None = None
    parallel: int = 1
    window: tuple[int, int] | None = None  # (i, N): run only window i of N
    output: Path | None = None  # None = Kafka
    set_cursor: bool = False
    dry_run: bool = False
    deletes: bool = False  # the range's deletes as tombstones first (sncli.source.backfill_deletes)

    @property
    def count(self) -> int:
        return self.window[1] if self.window else self.parallel


def parse_output(text: str) -> Path | None:
    """``kafka`` -> None; ``parquet:PATH`` -> PATH."""
    if text == "kafka":
        return None
    if text.startswith("parquet:") and text[len("parquet:"):].strip():
        return Path(text[len("parquet:"):].strip())
    raise UsageError(f"--output must be 'kafka' or 'parquet:PATH', got {text!r}")


def _normalize(value: str, what: str) -> str:
    try:
        return normalize_timestamp(value)
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}") from None


def output_suffix(output: Path | None) -> str:
    if output is None:
        return ""
    digest = hashlib.sha256(str(output.resolve()).encode()).hexdigest()[:8]
    return f".pq-{digest}"


# --------------------------------------------------------------------------- keys and the stored plan


def lock_plan_or_wait(
    stack: ExitStack,
    settings: Settings,
    store: OffsetStore,
    table: str,
    rid: str,
    since: int,
    until: int,
    n: int,
    *,
    wait_seconds: float | None = None,
    interval: float = 0.25,
) -> dict[str, StoredOffset]:
    """Take the plan lock (held until ``stack`` closes) or wait for the planner that holds it.

    The pods of an Indexed Job start together and all find no plan: one takes the
    lock and plans, the others wait (at most ``wait_seconds``, default
    :data:`PLAN_WAIT_SECONDS`) for its plan to be stored instead of exiting 75
    at once. Returns what the store holds once a plan may be read: under the lock
    (a planner may have finished just before it was taken), or with the plan.
    Raises LockHeldError when no plan appears in time (a stuck planner).
    """
    try:
        stack.enter_context(run_lock(settings, f"backfill/{table}/{rid}/plan"))
    except LockHeldError:
        deadline = time.monotonic() + (PLAN_WAIT_SECONDS if wait_seconds is None else wait_seconds)
        log.info("backfill %s %s: another run is planning; waiting for its plan", table, rid)
        while time.monotonic() < deadline:
            time.sleep(interval)
            stored = store.load_all()
            if load_plan(stored, table, rid, since, until, n) is not None:
                return stored
        raise
    return store.load_all()


# --------------------------------------------------------------------------- progress


class ProgressReport(Protocol):
    """Where the windows' threads report records loaded (a bar on a terminal: :mod:`sncli.cli.progress`)."""

    def add(self, records: int) -> None: ...

    def close(self) -> None: ...


#: Makes the run's progress report from its label and the records the windows hold.
ProgressFactory = Callable[[str, int], ProgressReport]


class LogProgress:
    """A log line every :data:`PROGRESS_LOG_SECONDS` with the count, rate and ETA (and one at the end)."""

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last_log = self._started

    def add(self, records: int) -> None:
        with self._lock:
            self.done += records
            now = time.monotonic()
            if now - self._last_log < PROGRESS_LOG_SECONDS:
                return
            self._last_log = now
        self._log_line(now)

    def _log_line(self, now: float) -> None:
        rate = self.done / max(now - self._started, 1e-6)
        eta = f", ETA {max(0, self.total - self.done) / rate:.0f}s" if rate > 0 and self.total else ""
        log.info("%s: %d/%d records (%.0f/s%s)", self.label, self.done, self.total, rate, eta)

    def close(self) -> None:
        self._log_line(time.monotonic())


# --------------------------------------------------------------------------- one window


@dataclass
class WindowOutcome(TableOutcome):
    window: Window | None = None
    done: bool = False
    files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        if self.window is not None:
            data.update(index=self.window.index, lo=self.window.lo_text, hi=self.window.hi_text)
        data["done"] = self.done
        if self.files:
            data["files"] = self.files
        return data


def run_window(
    *,
    settings: Settings,
    table: SourceTable,
    client: ServiceNowClient,
    store: OffsetStore,
    rid: str,
    window: Window,
    fingerprint: str,
    output: Path | None,
    stop: StopControl,
    metrics: RunMetrics,
    progress: ProgressReport,
    outcome: WindowOutcome,
    producer: PageProducer | None = None,
    lock: RunLock | None = None,
) -> None:
    """Load one window (resuming from its stored cursor); fills ``outcome``, raises nothing.

    The window is a :class:`~sncli.source.range_run.RangeRun` with ``ts<hi``; what is
    its own: a finished window is skipped, a Parquet window is redone from its start
    into its file, and a window read to its end stores ``(hi, "")``.
    """
    run = RangeRun(settings=settings, table=table, client=client, metrics=metrics, stop=stop, outcome=outcome,
                   key=window_key(table.name, rid, window.index, window.count), fingerprint=fingerprint,
                   store=store, lock=lock, label=f"{table.name} window {window.label}", progress=progress.add)
    parquet: ParquetWindowWriter | None = None

    def abort() -> None:
        if parquet is not None:
            parquet.abort()

    with run.guard(producer, on_error=abort):
        if window_done(run.load(), window):
            outcome.done, outcome.stopped = True, "done"
            return
        hi = UpperBound(window.hi_text, inclusive=False)
        if output is not None:  # created only now: it removes the files of an earlier attempt
            parquet = ParquetWindowWriter(output, table.name, window.index, window.count)
        if parquet is None:
            run.open_kafka(producer)
            result = run.pages(hi, outcome.cursor_before or Cursor.at_start(window.lo_text))
        else:  # a Parquet window is redone from its start (its file is only complete at the end)
            result = run.pages(hi, Cursor.at_start(window.lo_text), deliver=_writing(parquet))
        if result.stopped is not None:
            outcome.stopped = result.stopped
            if parquet is not None:
                parquet.abort()
            return
        if parquet is not None:
            outcome.files = [str(p) for p in parquet.finish()]
        run.save(Cursor(window.hi_text, ""))
        outcome.done, outcome.stopped = True, "caught_up"


def _writing(parquet: ParquetWindowWriter) -> Deliver:
    def deliver(records: Records, prepared: object) -> int:
        return parquet.write(records)

    return deliver


# --------------------------------------------------------------------------- the run


def run_backfill(
    settings: Settings, request: BackfillRequest, *, stop: StopControl | None = None,
    progress: ProgressFactory = LogProgress,
) -> RunSummary:
    """Run a backfill (see the module doc); a held lock gives exit code 75. Raises UsageError/ConfigError.

    ``progress``: how the windows' records loaded are shown (the CLI passes a bar for a terminal).
    """
    table = settings.source.table(request.table)
    check_source_settings(settings)
    if request.window is not None and request.until is None:
        raise UsageError("--window needs --until: every pod of the split must use the same range")
    if request.window is not None and request.parallel != 1:
        raise UsageError("use --parallel or --window, not both")
    if request.set_cursor and request.output is not None:
        check_set_cursor(None, "", table=table.name, parquet=True)  # before any request
    if request.deletes or (request.set_cursor and table.deletes == "audit"):
        check_deletes_request(parquet=request.output is not None, window=request.window is not None,
                              set_cursor_without=request.set_cursor and not request.deletes)
    n = request.count
    stop = StopControl(parent=stop)
    started = time.monotonic()
    metrics = RunMetrics()
    summary = RunSummary(command="backfill")
    outcome = summary.tables[table.name] = TableOutcome(table.name)
    client = make_client(settings, metrics, max(n, COUNT_THREADS // 2))
    try:
        _run(settings, request, table, client, metrics, stop, summary, outcome, progress)
    except LockHeldError as exc:  # another run holds a window (or the poll lock): nothing was done
        summary.error, summary.exit_code = str(exc), int(exc.exit_code)
        outcome.stopped = "locked"
    except UsageError:
        raise
    except SncliError as exc:  # before any window ran: ServiceNow, Kafka, offsets
        summary.error, summary.exit_code = describe_error(exc)
        outcome.error, outcome.exit_code = summary.error, summary.exit_code
        log.error("backfill %s: %s", table.name, summary.error)
    finally:
        client.close()
    summary.duration_seconds = time.monotonic() - started
    # The pods of an Indexed Job (--window i/N) run at once: one group each, so that no two
    # of them carry the same group's counters forward concurrently (sncli.metrics).
    finish_metrics(settings, metrics, "backfill", {table.name: summary.exit_code}, summary.exit_code,
                   _window_key(request))
    return summary


def _window_key(request: BackfillRequest) -> dict[str, str] | None:
    """The Pushgateway grouping key a ``--window`` pod adds: one group per pod (see run_backfill)."""
    return {"window": f"{request.window[0]}of{request.window[1]}"} if request.window else None


@dataclass(frozen=True)
class _Range:
    """The range of a backfill run, and its edges when learnt with ServiceNow's clock."""

    since: int
    until: int
    rid: str
    first: int | None = None
    last: int | None = None
    edges_known: bool = False  # first/last learnt with the clock (saves a planning round trip)


def _run(
    settings: Settings,
    request: BackfillRequest,
    table: SourceTable,
    client: ServiceNowClient,
    metrics: RunMetrics,
    stop: StopControl,
    summary: RunSummary,
    outcome: TableOutcome,
    make_progress: ProgressFactory,
) -> None:
    n = request.count
    store = open_store(settings)
    fingerprint = source_fingerprint(settings, table)
    counter = RangeCounter(client, table, threads=COUNT_THREADS)
    rng = _resolve_range(settings, request, table, client, store, counter)
    rid, since, until = rng.rid, rng.since, rng.until
    summary.extra.update(range_id=rid, since=to_sn(since), until=to_sn(until),
                         output="kafka" if request.output is None else f"parquet:{request.output}")
    summary.upper_bound = to_sn(until)
    selected = [request.window[0]] if request.window else list(range(n))

    held: dict[int, RunLock] = {}
    with ExitStack() as locks:
        if not request.dry_run:
            for i in selected:
                held[i] = locks.enter_context(run_lock(settings, window_key(table.name, rid, i, n)))
            if request.set_cursor:
                locks.enter_context(run_lock(settings, table.name))
            start_metrics(settings, "backfill", [table.name], _window_key(request))
        if request.set_cursor:  # with the poll lock held (no poll moves the cursor meanwhile), before any work
            check_set_cursor(poll_position(store, table, fingerprint), to_sn(since), table=table.name,
                             parquet=request.output is not None)
        producers: dict[int, PageProducer] = {}
        topics: Background | None = None
        if not request.dry_run and request.output is None:
            producers = {i: new_producer(settings) for i in selected}  # warm up while planning
            locks.callback(_close_all, producers)
            topics = start_topic_check(settings, [table])  # overlaps with planning; awaited before any window
            locks.callback(topics.settle)  # finished (topics created) even when planning fails
        plan = _plan(settings, request, table, store, counter, rng, fingerprint, topics)
        if topics is not None:
            topics.wait()
        windows = [plan[i] for i in selected]
        counts = _window_counts(counter, windows)
        summary.extra["windows"] = []
        if request.dry_run:
            summary.extra["windows"] = [
                {"index": w.index, "lo": w.lo_text, "hi": w.hi_text, "records_in_window": c}
                for w, c in zip(windows, counts, strict=True)
            ]
            outcome.stopped = "dry_run"
            return
        if request.deletes and not deletes_before_records(
            settings, table, client, store, rid=rid, since=to_sn(since), until=to_sn(until), stop=stop,
            metrics=metrics, summary=summary, locks=locks,
        ):
            return
        outcomes = _run_windows(settings, request, table, client, store, rid, fingerprint, windows, stop, metrics,
                                make_progress(f"backfill {table.name}", sum(counts)), producers, held)
        _sum_up(summary, outcome, outcomes, counts)
        everything = store.load_all()
        all_done = all(window_done(everything.get(window_key(table.name, rid, w.index, n)), w) for w in plan)
        summary.extra["range_done"] = all_done
        if request.set_cursor:
            summary.extra["poll_cursor_set"] = False
            if all_done:
                summary.extra["poll_cursor_set"] = set_poll_cursor(store, table, since, until, fingerprint)
                if request.deletes and table.deletes == "audit":
                    move_deletes_cursor(settings, store, table, to_sn(until))


def _run_windows(
    settings: Settings, request: BackfillRequest, table: SourceTable, client: ServiceNowClient, store: OffsetStore,
    rid: str, fingerprint: str, windows: list[Window], stop: StopControl, metrics: RunMetrics,
    progress: ProgressReport, producers: dict[int, PageProducer], held: dict[int, RunLock],
) -> list[WindowOutcome]:
    """Each window on its own thread (:func:`run_window`), with its producer and its lock; their outcomes."""
    outcomes = [WindowOutcome(name=w.label, window=w) for w in windows]
    threads = [
        threading.Thread(
            target=run_window, name=f"backfill-{w.label}",
            kwargs={"settings": settings, "table": table, "client": client, "store": store, "rid": rid,
                    "window": w, "fingerprint": fingerprint, "output": request.output, "stop": stop,
                    "metrics": metrics, "progress": progress, "outcome": o,
                    "producer": producers.pop(w.index, None), "lock": held.get(w.index)},
        )
        for w, o in zip(windows, outcomes, strict=True)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    finally:
        progress.close()
    return outcomes


def _resolve_range(
    settings: Settings, request: BackfillRequest, table: SourceTable, client: ServiceNowClient,
    store: OffsetStore, counter: RangeCounter,
) -> _Range:
    """``[since, until)`` of the run: as given, the unfinished one resumed, or up to ServiceNow's clock."""
    n = request.count
    suffix = output_suffix(request.output)
    since = to_epoch(_normalize(request.since or table.start, "--since"))
    first: int | None = None
    last: int | None = None
    edges_known = False
    if request.until is not None:
        until = to_epoch(_normalize(request.until, "--until"))
    else:
        resumed = unfinished_until(store.load_all(), table.name, since, n, suffix)
        if resumed is not None:
            until = resumed
            log.info("resuming the unfinished backfill of %s up to %s", table.name, to_sn(until))
        else:
            first, last, clock = counter.first_and_clock(since) if n > 1 else (None, None, None)
            edges_known = clock is not None
            if clock is None:
                clock = client.server_time(table.name)
            until = to_epoch(upper_bound(clock, settings.source.safety_lag_seconds).value) + 1
    if until <= since:
        raise UsageError(f"--until ({to_sn(until)}) must be after --since ({to_sn(since)})")
    if request.set_cursor and request.until is not None:
        reached = to_epoch(upper_bound(client.server_time(table.name), settings.source.safety_lag_seconds).value) + 1
        check_until_reached(until, reached, table=table.name)
    return _Range(since, until, range_id(since, until) + suffix, first, last, edges_known)


def _plan(
    settings: Settings, request: BackfillRequest, table: SourceTable, store: OffsetStore, counter: RangeCounter,
    rng: _Range, fingerprint: str, topics: Background | None,
) -> list[Window]:
    """The range's stored plan, else a new one stored under the plan lock (see the module doc)."""
    n, rid = request.count, rng.rid
    with ExitStack() as planning:
        stored = store.load_all()
        if not request.dry_run and load_plan(stored, table.name, rid, rng.since, rng.until, n) is None:
            stored = lock_plan_or_wait(planning, settings, store, table.name, rid, rng.since, rng.until, n)
        for key, entry in stored.items():
            if key.startswith(f"backfill/{table.name}/{rid}"):
                check_offset(entry, fingerprint)
        plan = load_plan(stored, table.name, rid, rng.since, rng.until, n)
        if plan is not None:
            log.info("backfill %s %s: using the stored plan of %d windows", table.name, rid, n)
            return plan
        plan = make_plan(counter, rng.since, rng.until, n, first=rng.first, last=rng.last,
                         edges_known=rng.edges_known)
        if topics is not None:
            topics.wait()  # a topic that cannot be used stops the run before a plan is stored
        if not request.dry_run:
            save_plan(store, table.name, rid, plan, fingerprint)
        log.info("backfill %s %s: %d windows %s", table.name, rid, n,
                 ", ".join(f"[{w.lo_text}, {w.hi_text})" for w in plan))
        return plan


def _window_counts(counter: RangeCounter, windows: list[Window]) -> list[int]:
    """Records per window for the progress: known from planning, else (a stored plan) counted now."""
    unknown = [w for w in windows if w.records is None]
    counted = dict(zip((w.index for w in unknown), counter.count_many([(w.lo, w.hi) for w in unknown]),
                       strict=True))
    return [w.records if w.records is not None else counted[w.index] for w in windows]


def _sum_up(summary: RunSummary, outcome: TableOutcome, outcomes: list[WindowOutcome], counts: list[int]) -> None:
    """The windows' outcomes into the run's summary and the table's outcome."""
    for o, c in zip(outcomes, counts, strict=True):
        data = o.to_json()
        data["records_in_window"] = c
        summary.extra["windows"].append(data)
    outcome.records = sum(o.records for o in outcomes)
    outcome.pages = sum(o.pages for o in outcomes)
    outcome.produced = sum(o.produced for o in outcomes)
    for o in outcomes:
        for error_class, count in o.dlq.items():
            outcome.dlq[error_class] = outcome.dlq.get(error_class, 0) + count
    outcome.hidden = sum(o.hidden for o in outcomes)
    failed = [o for o in outcomes if o.error]
    stopped = sorted({o.stopped for o in outcomes if o.stopped not in (None, "done", "caught_up")})
    outcome.stopped = stopped[0] if stopped else "caught_up"
    summary.exit_code = combined_exit_code(list(outcomes))
    if summary.exit_code == ExitCode.OK and outcome.dlq:  # deletes dead-lettered before the windows
        summary.exit_code = int(ExitCode.PARTIAL)
    if failed:
        outcome.error = "; ".join(f"window {o.name}: {o.error}" for o in failed)
        outcome.exit_code = summary.exit_code


def _close_all(producers: dict[int, PageProducer]) -> None:
    for producer in producers.values():  # never handed to a window (the run stopped before)
        producer.close(0)
