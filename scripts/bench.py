#!/usr/bin/env python3
"""sncli's benchmark harness (issue 6): each speed target measured side by side with its baseline.

    scripts/bench.py [--quick] [--scenarios 1,2,...] [--runs N] [--output bench-results.json]

Starts its own Kafka (Tansu) and ServiceNow emulator with scripts/services.sh on
its own port block (SNCLI_PORT_BASE, default 29100; SNCLI_SERVICES_DIR, default a
temporary directory), seeds incident-like records (~30 string fields, ~1 KiB)
through the emulator's control API, runs every scenario ``--runs`` times
(default 3; the table shows medians) with its baseline interleaved run by run,
prints the table and writes the JSON results. The services it started are
stopped at the end, also on failure or Ctrl-C.

Scenarios: 1 source poll vs a raw requests loop, 2 source poll vs dlt's rest_api
source, 3 backfill --parallel 8 vs 1 at 100 ms read latency, 4 sink drain
throughput at 20 ms write latency, 5 peak RSS of a 1 M record backfill (Kafka
and Parquet), 6 start-up time, 7 verify of a 1 M record table in sync and with 100 missing
(scripts/bench_verify.py), 8 sink drain in batch mode vs single calls against an instance of
50 ms round trip, 5 ms per write and 8 transaction slots (scripts/bench_batch.py). ``--quick`` runs
them on small sizes in about a
minute (a smoke run: its figures are not the targets' sizes).

Run it with the project's virtualenv: .venv/bin/python scripts/bench.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

_HERE = Path(__file__).resolve().parent
_VENV_PYTHON = _HERE.parent / ".venv" / "bin" / "python"
if Path(sys.prefix).resolve() != _VENV_PYTHON.parent.parent.resolve() and _VENV_PYTHON.exists():
    os.execv(str(_VENV_PYTHON), [str(_VENV_PYTHON), __file__, *sys.argv[1:]])  # the project's venv has sncli
sys.path.insert(0, str(_HERE))

from bench_batch import scenario_batch  # noqa: E402
from bench_env import DEFAULT_PORT_BASE, ROOT, Emulator, Services, log, machine, work_dir  # noqa: E402
from bench_report import Row, Target, note_lines, table_lines  # noqa: E402
from bench_scenarios import FULL, QUICK, SCENARIOS, Context, ScenarioError  # noqa: E402
from bench_verify import scenario_verify  # noqa: E402

SCENARIOS[7] = scenario_verify  # issue 17: verify in sync and with records missing
SCENARIOS[8] = scenario_batch  # issue 18: batch vs single calls against the instance's physics


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a ~1 minute smoke run")
    parser.add_argument("--scenarios", default="1,2,3,4,5,6,7,8", help="comma-separated scenario numbers (default all)")
    parser.add_argument("--runs", type=int, default=None, help="runs per scenario (default 3; 1 with --quick)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench-results.json", help="results JSON file")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown (for the README)")
    parser.add_argument("--install-peers", action="store_true",
                        help="install dlt for scenario 2 even with --quick (a full run always does)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    args = parser.parse_args(argv)
    try:
        args.scenario_list = sorted({int(s) for s in args.scenarios.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--scenarios: expected numbers like 1,3,5, got {args.scenarios!r}")
    unknown = [s for s in args.scenario_list if s not in SCENARIOS]
    if unknown or not args.scenario_list:
        parser.error(f"--scenarios: choose from {sorted(SCENARIOS)}")
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be >= 1")
    return args


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the finally blocks that stop the services


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_term)
    started = time.perf_counter()
    runs = args.runs or (1 if args.quick else 3)
    sizes = QUICK if args.quick else FULL
    port_base = int(os.environ.get("SNCLI_PORT_BASE") or DEFAULT_PORT_BASE)
    own_dir = not os.environ.get("SNCLI_SERVICES_DIR")
    services_dir = Path(os.environ.get("SNCLI_SERVICES_DIR") or tempfile.mkdtemp(prefix="sncli-bench-svc-"))
    services = Services(port_base=port_base, directory=services_dir)
    needs_services = any(s != 6 for s in args.scenario_list)
    rows: list[Row] = []
    info = machine()
    log(f"{'quick' if args.quick else 'full'} run, scenarios {args.scenario_list}, {runs} runs each; "
        f"{info.get('cpus')} CPUs, load {info['loadavg_at_start'][0]:.2f}")
    interrupted = False
    with work_dir(keep=args.keep) as work:
        try:
            if needs_services:
                services.start(["kafka", "snow"])
            ctx = Context(
                services=services, emulator=Emulator(services.snow_url), work=work, sizes=sizes, runs=runs,
                quick=args.quick, install_peers=args.install_peers or not args.quick,
            )
            for number in args.scenario_list:
                log(f"scenario {number} ...")
                t0 = time.perf_counter()
                load0 = os.getloadavg()[0]
                try:
                    produced = SCENARIOS[number](ctx)
                except ScenarioError as exc:  # scenarios report their own; this is a safety net
                    produced = [Row(str(number), "scenario", "", Target("value_min", 0, "-"), error=str(exc))]
                load1 = os.getloadavg()[0]
                for row in produced:  # the machine is shared: say how busy it was
                    row.extra["loadavg_1min"] = [round(load0, 2), round(load1, 2)]
                rows.extend(produced)
                log(f"scenario {number} done in {time.perf_counter() - t0:.0f}s (load {load0:.1f} -> {load1:.1f})")
        except KeyboardInterrupt:
            interrupted = True
            log("interrupted: stopping the services and printing what was measured")
        finally:
            stopped = services.stop()
            if own_dir and not args.keep and stopped:
                shutil.rmtree(services_dir, ignore_errors=True)  # PID files and service logs of this run
    elapsed = time.perf_counter() - started
    _print(rows, info, args, runs, elapsed, interrupted)
    _write_json(args.output, rows, info, args, runs, elapsed)
    if interrupted:
        return 130
    return 0 if all(r.passed for r in rows) else 1


def _print(rows: list[Row], info: dict[str, Any], args: argparse.Namespace, runs: int, elapsed: float,
           interrupted: bool) -> None:
    mode = "quick (small sizes, smoke only)" if args.quick else "full"
    load = os.getloadavg()
    print()
    print(f"sncli benchmark: {mode}, median of {runs} runs, {info.get('cpus')} CPUs ({info.get('cpu', '?')}), "
          f"Python {info.get('python')}, took {elapsed:.0f}s{' (INTERRUPTED)' if interrupted else ''}; "
          f"load average {info['loadavg_at_start'][0]:.1f} at start, {load[0]:.1f} at end")
    print()
    for line in table_lines(rows):
        print(line)
    notes = note_lines(rows)
    if notes:
        print()
        for line in notes:
            print(line)
    if args.markdown:
        print()
        for line in table_lines(rows, markdown=True):
            print(line)
    print()
    passed = sum(r.passed for r in rows)
    print(f"{passed}/{len(rows)} targets met; results in {args.output}")


def _write_json(path: Path, rows: list[Row], info: dict[str, Any], args: argparse.Namespace, runs: int,
                elapsed: float) -> None:
    import orjson

    data = {
        "mode": "quick" if args.quick else "full",
        "runs": runs,
        "machine": info,
        "seconds": round(elapsed, 1),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": [r.to_json() for r in rows],
    }
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
