"""The Table API's shape, with no I/O: paths, query parameters, and what an answer's body and headers mean.

The client (:mod:`sncli.servicenow.client`) sends what this module builds and
hands every answer, whichever transport carried it, to one of the parsers
here. A parser raising :class:`Malformed` means the 2xx answer is not what the
Table API promises (judged by :mod:`sncli.servicenow.policy` like a transport
failure).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

import orjson

from sncli.servicenow.backoff import parse_http_date
from sncli.servicenow.errors import BadRequestError
from sncli.servicenow.transport import Answer

R = TypeVar("R")
DisplayValue = Literal["false", "true", "all"]

_TABLE = re.compile(r"[a-z0-9_]+")
_SYS_ID = re.compile(r"[0-9a-f]{32}")
JSON_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}
FORM_HEADERS = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}


@dataclass(frozen=True, slots=True)
class Page:
    """One Table API answer: its records untouched (as parsed by orjson) plus what the headers say."""

    records: list[dict[str, Any]]
    total: int | None  # X-Total-Count; None when sysparm_no_count=true
    server_time: datetime | None  # the answer's Date header, UTC
    links: dict[str, str] = field(default_factory=dict)  # Link header: rel -> URL


@dataclass(frozen=True, slots=True)
class DecodedPage(Generic[R]):
    """One Table API answer whose body went through the caller's decoder (see ``list_page_decoded``)."""

    records: R
    total: int | None
    server_time: datetime | None


class Malformed(Exception):
    """The body of a 2xx answer is not what the Table API promises."""


# -------------------------------------------------------------------- paths and parameters


def endpoint(table: str) -> str:
    """The low-cardinality label of a table's calls (metrics, error messages)."""
    return f"table/{_check_table(table)}"


def _check_table(table: str) -> str:
    if not _TABLE.fullmatch(table):
        raise BadRequestError(None, f"invalid table name {table!r}")
    return table


def table_path(table: str) -> str:
    return f"/api/now/table/{_check_table(table)}"


def record_path(table: str, sys_id: str) -> str:
    # A sys_id comes from data (Kafka messages); it must not be able to address another path.
    if not isinstance(sys_id, str) or not _SYS_ID.fullmatch(sys_id):
        raise BadRequestError(None, f"invalid sys_id {str(sys_id)[:40]!r} (expected 32 lowercase hex digits)",
                              endpoint=endpoint(table))
    return f"{table_path(table)}/{sys_id}"


def write_params() -> dict[str, str]:
    return {"sysparm_exclude_reference_link": "true"}


def flag(value: bool) -> str:
    return "true" if value else "false"


def display_value_param(value: str) -> str:
    if value not in ("false", "true", "all"):
        raise ValueError(f"display_value must be 'false', 'true' or 'all', got {value!r}")
    return value


def record_params(
    fields: list[str] | tuple[str, ...] | None, display_value: str, exclude_reference_link: bool
) -> dict[str, str]:
    params = {
        "sysparm_display_value": display_value_param(display_value),
        "sysparm_exclude_reference_link": flag(exclude_reference_link),
    }
    if fields:
        params["sysparm_fields"] = ",".join(fields)
    return params


def page_params(
    query: str,
    fields: list[str] | tuple[str, ...] | None,
    limit: int,
    display_value: str,
    exclude_reference_link: bool,
    no_count: bool,
    offset: int | None,
) -> dict[str, str]:
    params: dict[str, str] = {
        "sysparm_query": query,
        "sysparm_limit": str(int(limit)),
        "sysparm_display_value": display_value_param(display_value),
        "sysparm_exclude_reference_link": flag(exclude_reference_link),
        "sysparm_no_count": flag(no_count),
    }
    if fields:
        params["sysparm_fields"] = ",".join(fields)
    if offset is not None:
        params["sysparm_offset"] = str(int(offset))
    return params


def dump(body: dict[str, Any]) -> bytes:
    # Serialized once: every retry sends these exact bytes.
    return orjson.dumps(body)


# -------------------------------------------------------------------- answers


def _loads(content: bytes) -> object:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise Malformed(f"not JSON ({exc.msg} at byte {exc.pos})") from None


def parse_page(resp: Answer) -> Page:
    data = _loads(resp.content)
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(result, list):
        raise Malformed("no 'result' list")
    return Page(records=result, total=total(resp), server_time=parse_http_date(resp.headers.get("Date")),
                links=links(resp.headers.get("Link")))


def parse_record(resp: Answer) -> dict[str, Any]:
    data = _loads(resp.content)
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(result, dict):
        raise Malformed("no 'result' object")
    return result


def ignore_body(resp: Answer) -> None:
    return None


def parse_date(resp: Answer) -> datetime | None:
    return parse_http_date(resp.headers.get("Date"))


def total(resp: Answer) -> int | None:
    total_header = resp.headers.get("X-Total-Count")
    if total_header is None:
        return None
    try:
        return int(total_header)
    except ValueError:
        return None


def links(header: str | None) -> dict[str, str]:
    """The Link header as rel -> URL (what ``requests.Response.links`` gives, for any answer)."""
    if not header:
        return {}
    # Imported here: importing requests is a measured start-up cost (`python -X importtime`), and
    # only list_page (backfill, offset paging) reads a Link header.
    from requests.utils import parse_header_links

    return {str(link.get("rel") or link.get("url", "")): str(link.get("url", "")) for link in
            parse_header_links(header)}
