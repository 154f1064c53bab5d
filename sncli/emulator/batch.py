"""The Batch API (``POST /api/now/v1/batch``): many Table API calls in one exchange.

Request: ``{"batch_request_id", "rest_requests": [{"id", "method", "url",
"headers": [{"name", "value"}], "body": <base64>}]}``. Answer:
``{"batch_request_id", "serviced_requests": [{"id", "status_code",
"status_text", "headers", "body": <base64>, "execution_time"}],
"unserviced_requests": [{"id"}]}``.

Each item runs through the server's normal Table API handling (faults,
journal, ACLs included), one after another in the order given, as one
transaction; the items not started within the batch's time budget
(:func:`sncli.emulator.physics.served_within_budget`) come back unserviced.
This module is the shape of the exchange; the server supplies how one item is
run.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

Headers = list[tuple[str, str]]


@dataclass(frozen=True)
class BatchItem:
    id: str
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class ItemAnswer:
    status: int
    reason: str
    headers: Headers
    body: bytes
    milliseconds: int


class BadBatch(ValueError):
    """The batch request itself is malformed (a 400 for the whole exchange)."""


def parse_request(raw: bytes) -> tuple[str, list[BatchItem]]:
    """The batch id and its items; BadBatch when the body is not a batch request."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadBatch(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("rest_requests"), list):
        raise BadBatch("expected an object with a rest_requests list")
    items = [_item(entry, n) for n, entry in enumerate(data["rest_requests"])]
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise BadBatch("rest_requests ids must be unique")
    return str(data.get("batch_request_id", "")), items


def _item(entry: Any, n: int) -> BatchItem:
    if not isinstance(entry, dict):
        raise BadBatch(f"rest_requests[{n}] is not an object")
    method, url = entry.get("method"), entry.get("url")
    if not isinstance(method, str) or not isinstance(url, str) or "id" not in entry:
        raise BadBatch(f"rest_requests[{n}] needs id, method and url")
    headers: dict[str, str] = {}
    for header in entry.get("headers") or []:
        if isinstance(header, dict) and isinstance(header.get("name"), str):
            headers[header["name"].lower()] = str(header.get("value", ""))
    body = entry.get("body")
    try:
        raw = base64.b64decode(body, validate=True) if isinstance(body, str) and body else b""
    except (binascii.Error, ValueError):
        raise BadBatch(f"rest_requests[{n}].body is not base64") from None
    return BatchItem(str(entry["id"]), method.upper(), url, headers, raw)


def run_batch(
    items: list[BatchItem], run: Callable[[BatchItem], ItemAnswer], in_budget: Callable[[int], bool]
) -> tuple[list[tuple[BatchItem, ItemAnswer]], list[BatchItem]]:
    """Run the items in order while the budget lasts: (serviced with their answers, unserviced)."""
    serviced: list[tuple[BatchItem, ItemAnswer]] = []
    for index, item in enumerate(items):
        if not in_budget(index):
            return serviced, items[index:]
        serviced.append((item, run(item)))
    return serviced, []


def answer_body(batch_id: str, serviced: list[tuple[BatchItem, ItemAnswer]], unserviced: list[BatchItem]) -> bytes:
    return orjson.dumps({
        "batch_request_id": batch_id,
        "serviced_requests": [
            {
                "id": item.id,
                "status_code": answer.status,
                "status_text": answer.reason,
                "headers": [{"name": name, "value": value} for name, value in answer.headers],
                "body": base64.b64encode(answer.body).decode("ascii"),
                "execution_time": answer.milliseconds,
            }
            for item, answer in serviced
        ],
        "unserviced_requests": [{"id": item.id} for item in unserviced],
    })
