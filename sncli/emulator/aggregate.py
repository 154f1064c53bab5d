"""ServiceNow's Aggregate API for the emulator: ``GET /api/now/stats/{table}``.

What is emulated (the parts sncli uses, in the shapes ServiceNow documents):

- ``sysparm_count=true`` with ``sysparm_query``: ``{"result": {"stats": {"count": "N"}}}``,
  the count a string, as the real service sends it;
- ``sysparm_group_by=f1,f2``: ``{"result": [{"stats": {"count": "N"}, "groupby_fields":
  [{"field": "f1", "value": "..."}, ...]}, ...]}``, groups in value order;
- without ``sysparm_count=true`` (and no other aggregate) ServiceNow computes nothing: ``{"stats": {}}``.

Row ACLs: the documentation says an Aggregate request needs read access to
*every* record of the table, and answers 403 Forbidden when an ACL hides any
record from the user. The emulator's row ACLs (``settings.hidden_rows``) are
applied that way: one hidden row in the table and the answer is 403, whatever
the query (the Table API instead drops hidden rows from its pages). A denied
table is 403 like on the Table API (checked by the server before this module).

Pure with respect to HTTP: the server hands the parsed parameters here and
sends back the status and body this returns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import orjson

from sncli.emulator.render import error_body
from sncli.emulator.state import EmulatorState

STATS_PATH = re.compile(r"^/api/now/(?:v[12]/)?stats/([^/]+)/?$")


def answer(state: EmulatorState, method: str, table: str, params: Mapping[str, str]) -> tuple[int, bytes]:
    """The status and body of one Aggregate API request."""
    if method != "GET":
        return 405, error_body("Method not Supported", "the Aggregate API answers GET only")
    if state.settings.strict_tables and not state.has_table(table):
        return 400, error_body(f"Invalid table {table}", None)
    if state.any_hidden(table):
        return 403, error_body(
            "User Not Authorized", f"ACL restricts read access to some records of table {table}"
        )
    query = params.get("sysparm_query", "")
    counting = params.get("sysparm_count", "false").lower() == "true"
    group_by = [f.strip() for f in params.get("sysparm_group_by", "").split(",") if f.strip()]
    if group_by:
        groups = state.group_counts(table, query, group_by)
        result = [
            {
                "stats": {"count": str(count)} if counting else {},
                "groupby_fields": [{"field": f, "value": v} for f, v in zip(group_by, values, strict=True)],
            }
            for values, count in sorted(groups.items())
        ]
        return 200, orjson.dumps({"result": result})
    stats = {"count": str(state.count_matching(table, query))} if counting else {}
    return 200, orjson.dumps({"result": {"stats": stats}})

