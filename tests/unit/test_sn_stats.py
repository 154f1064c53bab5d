"""The Aggregate API's shape on the client side (sncli.servicenow.stats): path, parameters, the count."""

from __future__ import annotations

import pytest

from sncli.servicenow.errors import BadRequestError
from sncli.servicenow.stats import count_params, parse_count, stats_endpoint, stats_path
from sncli.servicenow.table import Malformed
from sncli.servicenow.transport import Answer


def _answer(body: bytes) -> Answer:
    return Answer(200, "OK", {}, body)


def test_path_endpoint_and_parameters() -> None:
    assert stats_path("incident") == "/api/now/stats/incident"
    assert stats_endpoint("incident") == "stats/incident"
    assert count_params("active=true") == {"sysparm_count": "true", "sysparm_query": "active=true"}
    with pytest.raises(BadRequestError):
        stats_path("../table/x")


@pytest.mark.parametrize(("body", "count"), [
    (b'{"result": {"stats": {"count": "123"}}}', 123),  # as ServiceNow sends it: a string
    (b'{"result": {"stats": {"count": 7}}}', 7),
    (b'{"result": {"stats": {"count": "0"}}}', 0),
])
def test_the_count(body: bytes, count: int) -> None:
    assert parse_count(_answer(body)) == count


@pytest.mark.parametrize("body", [
    b"<html>", b'{"result": {"stats": {}}}', b'{"result": []}', b'{"result": {"stats": {"count": "-1"}}}',
    b'{"result": {"stats": {"count": true}}}', b'{"result": {"stats": {"count": "1.5"}}}',
])
def test_anything_else_is_malformed(body: bytes) -> None:
    with pytest.raises(Malformed):
        parse_count(_answer(body))
