"""Scenario 1's baseline, the API limit: a plain ``requests.Session`` loop over sncli's keyset pages.

It fetches the pages and decodes the JSON, nothing else. It runs as a process
of its own, started and timed by the harness exactly like ``sncli source poll``,
so both figures carry an interpreter start and the imports of what they use;
measured inside the harness instead, the loop would get its start-up for free
and the comparison would be between a process and a function call.

Imports only requests and orjson, so its start-up is the least a Python client
of the Table API pays. Prints one JSON line:
``{"records": N, "seconds": S, "queries": [...]}`` (``seconds``: the loop alone).

Usage: python bench_raw_loop.py URL TABLE USER PASSWORD PAGE_SIZE
"""

from __future__ import annotations

import sys
import time

import orjson
import requests


def raw_loop(url: str, table: str, user: str, password: str, page_size: int) -> tuple[int, float, list[str]]:
    """(records, seconds, the queries sent).

    HI is local now - 2 s, the safety lag sncli uses on the server's clock (the
    emulator runs on this machine's clock).
    """
    session = requests.Session()
    session.auth = (user, password)
    hi = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 2))
    ts = "sys_updated_on"
    order = f"^ORDERBY{ts}^ORDERBYsys_id"
    query = f"{ts}>=1970-01-01 00:00:00^{ts}<={hi}{order}"
    params = {
        "sysparm_limit": str(page_size),
        "sysparm_display_value": "false",
        "sysparm_exclude_reference_link": "true",
        "sysparm_no_count": "true",
    }
    endpoint = f"{url}/api/now/table/{table}"
    count = 0
    queries: list[str] = []
    started = time.perf_counter()
    while True:
        queries.append(query)
        response = session.get(endpoint, params={"sysparm_query": query, **params})
        response.raise_for_status()
        records = orjson.loads(response.content)["result"]
        if not records:
            break
        count += len(records)
        last = records[-1]
        t, s = last[ts], last["sys_id"]
        query = f"{ts}={t}^sys_id>{s}^NQ{ts}>{t}^{ts}<={hi}{order}"
    return count, time.perf_counter() - started, queries


def main() -> None:
    url, table, user, password, page_size = sys.argv[1:6]
    count, seconds, queries = raw_loop(url, table, user, password, int(page_size))
    sys.stdout.buffer.write(orjson.dumps({"records": count, "seconds": seconds, "queries": queries}) + b"\n")


if __name__ == "__main__":
    main()
