"""The Aggregate API's shape (``GET /api/now/stats/{table}``), with no I/O: path, parameters, answer.

sncli asks it one thing: how many records match an encoded query
(``sysparm_count=true``), which ServiceNow answers as
``{"result": {"stats": {"count": "123"}}}``, the count a string. The request
needs read access to every record of the table: a row ACL that hides any
record makes it 403 (see :mod:`sncli.servicenow.errors` for how that surfaces).
"""

from __future__ import annotations

import orjson

from sncli.servicenow.table import Malformed, _check_table
from sncli.servicenow.transport import Answer


def stats_endpoint(table: str) -> str:
    """The low-cardinality label of a table's Aggregate calls (metrics, error messages)."""
    return f"stats/{_check_table(table)}"


def stats_path(table: str) -> str:
    return f"/api/now/stats/{_check_table(table)}"


def count_params(query: str) -> dict[str, str]:
    return {"sysparm_count": "true", "sysparm_query": query}


def parse_count(resp: Answer) -> int:
    """The count of a ``sysparm_count=true`` answer; Malformed when it is not a whole number."""
    try:
        data = orjson.loads(resp.content)
    except orjson.JSONDecodeError as exc:
        raise Malformed(f"not JSON ({exc.msg} at byte {exc.pos})") from None
    result = data.get("result") if isinstance(data, dict) else None
    stats = result.get("stats") if isinstance(result, dict) else None
    count = stats.get("count") if isinstance(stats, dict) else None
    if isinstance(count, int) and not isinstance(count, bool):
        return count
    if isinstance(count, str) and count.isdigit():
        return int(count)
    raise Malformed("no 'result.stats.count' whole number")
