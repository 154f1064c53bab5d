"""The peer for scenario 2: dlt's ``rest_api`` source, incremental on ``sys_updated_on``, one full run.

Runs in the bench's separate virtualenv (dlt pins pytz>=2022.6, which conflicts
with pysnow in the project's .venv), so it imports nothing from sncli. Prints
one JSON line: ``{"records": N, "seconds": S, "destination": D}``.

Usage: python bench_dlt_job.py URL USER PASSWORD PAGE_SIZE DESTINATION WORKDIR
(DESTINATION: duckdb | jsonl)
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    url, user, password, page_size, destination, workdir = sys.argv[1:7]
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")  # no calls home from a benchmark
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    started = time.perf_counter()
    import dlt
    from dlt.sources.rest_api import rest_api_source

    limit = int(page_size)
    source = rest_api_source(
        {
            "client": {
                "base_url": f"{url}/api/now/",
                "auth": {"type": "http_basic", "username": user, "password": password},
            },
            "resources": [
                {
                    "name": "incident",
                    "primary_key": "sys_id",
                    "write_disposition": "append",
                    "endpoint": {
                        "path": "table/incident",
                        "params": {
                            "sysparm_query": "sys_updated_on>={incremental.start_value}"
                            "^ORDERBYsys_updated_on^ORDERBYsys_id",
                            "sysparm_no_count": "true",
                            "sysparm_display_value": "false",
                            "sysparm_exclude_reference_link": "true",
                        },
                        "data_selector": "result",
                        "paginator": {
                            "type": "offset",
                            "limit": limit,
                            "offset_param": "sysparm_offset",
                            "limit_param": "sysparm_limit",
                            "total_path": None,
                            "stop_after_empty_page": True,
                        },
                        "incremental": {"cursor_path": "sys_updated_on", "initial_value": "1970-01-01 00:00:00"},
                    },
                }
            ],
        }
    )
    if destination == "duckdb":
        dest = dlt.destinations.duckdb(os.path.join(workdir, "bench.duckdb"))
        run_kwargs: dict[str, str] = {}
    elif destination == "duckdb-parquet":
        dest = dlt.destinations.duckdb(os.path.join(workdir, "bench.duckdb"))
        run_kwargs = {"loader_file_format": "parquet"}
    elif destination == "parquet":
        dest = dlt.destinations.filesystem(bucket_url="file://" + os.path.join(workdir, "fs"))
        run_kwargs = {"loader_file_format": "parquet"}
    elif destination == "jsonl":
        dest = dlt.destinations.filesystem(bucket_url="file://" + os.path.join(workdir, "fs"))
        run_kwargs = {"loader_file_format": "jsonl"}
    else:
        raise SystemExit(f"unknown destination {destination!r}")
    pipeline = dlt.pipeline(
        pipeline_name="sncli_bench", destination=dest, dataset_name="sn", pipelines_dir=os.path.join(workdir, "p")
    )
    pipeline.run(source, **run_kwargs)
    counts = pipeline.last_trace.last_normalize_info.row_counts
    records = int(counts.get("incident", 0))
    print(json.dumps({"records": records, "seconds": time.perf_counter() - started, "destination": destination}))


if __name__ == "__main__":
    main()
