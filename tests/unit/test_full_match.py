"""Identifiers are checked whole: a trailing newline is not a valid sys_id, table or key (issue 15, 2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sncli.config import SinkTopic
from sncli.dlq.record import parse_entry
from sncli.offsets import model
from sncli.servicenow import table
from sncli.servicenow.errors import BadRequestError

SID = "0123456789abcdef0123456789abcdef"


def _config_table(name: str) -> Any:
    return SinkTopic.model_validate({"topic": "t", "table": name})


CHECKS: dict[str, tuple[Callable[[str], Any], str, type[Exception]]] = {
    "client record path": (lambda s: table.record_path("incident", s), SID, BadRequestError),
    "client table path": (table.table_path, "incident", BadRequestError),
    "config table": (_config_table, "incident", ValueError),
    "offsets sys_id": (model.check_sys_id, SID, ValueError),
    "offsets poll key": (model.poll_key, "incident", ValueError),
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_a_trailing_newline_is_refused(name: str) -> None:
    check, good, error = CHECKS[name]
    check(good)
    with pytest.raises(error):
        check(good + "\n")


def test_a_key_with_a_trailing_newline_is_not_shown_as_a_sys_id() -> None:
    assert parse_entry(0, 0, None, SID.encode(), b"nope", []).sys_id == SID
    assert parse_entry(0, 0, None, (SID + "\n").encode(), b"nope", []).sys_id is None
