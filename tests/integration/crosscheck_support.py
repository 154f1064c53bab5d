"""Shared by the pysnc and pysnow cross-checks: the same 300 records, and what sncli's own client sees of them."""

from __future__ import annotations

from typing import Any

from sncli.config import ServiceNowSettings
from sncli.emulator.server import ServiceNowEmulator
from sncli.servicenow.client import ServiceNowClient

AUTH = ("admin", "admin")
RECORDS = 300


def seed(emu: ServiceNowEmulator) -> list[dict[str, str]]:
    """300 incidents over ten minutes, a few sharing each second, on a frozen clock."""
    emu.state.clock.freeze("2026-03-03 12:00:00")
    emu.state.generate("incident", RECORDS, at="2026-03-01 00:00:00", spread_seconds=600, field_count=20, seed=19)
    return emu.state.records("incident")


def sncli_client(emu: ServiceNowEmulator) -> ServiceNowClient:
    settings = ServiceNowSettings.model_validate(
        {
            "instance_url": emu.url,
            "auth": {"type": "basic", "username": AUTH[0], "password": AUTH[1]},
            "timeout_seconds": 5,
            "rate_limit": None,
            "retry": {"max_attempts": 1, "initial_backoff_ms": 10, "max_backoff_ms": 10, "max_elapsed_seconds": 5},
        }
    )
    return ServiceNowClient(settings)


def sncli_view(emu: ServiceNowEmulator, query: str = "", *, page: int = 64) -> dict[str, dict[str, Any]]:
    """Every record sncli's client reads, by sys_id: offset pages in sys_id order, as backfill pages."""
    seen: dict[str, dict[str, Any]] = {}
    with sncli_client(emu) as client:
        offset = 0
        while True:
            answer = client.list_page("incident", query=f"{query}^ORDERBYsys_id" if query else "ORDERBYsys_id",
                                      limit=page, offset=offset)
            for record in answer.records:
                assert record["sys_id"] not in seen, "a record came back twice"
                seen[record["sys_id"]] = record
            if "next" not in answer.links:  # not a short page: row ACLs make pages short mid-table
                return seen
            offset += page
