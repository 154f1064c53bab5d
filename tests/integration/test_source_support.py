"""Helpers shared by the source and backfill tests (no tests here): config, expectations, offsets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import yaml

from sncli.config import Settings, parse_settings

BASIC = {"type": "basic", "username": "admin", "password": "admin"}


def config_dict(
    emu_url: str,
    bootstrap: str,
    offsets_path: Path,
    tables: list[dict[str, Any]],
    *,
    page_size: int = 1000,
    pushgateway: str | None = None,
    registry: str | None = None,
    fmt: str = "json",
    kafka_client: dict[str, Any] | None = None,
    safety_lag_seconds: int = 1,
    retry: dict[str, Any] | None = None,
) -> dict[str, Any]:
    kafka: dict[str, Any] = {"bootstrap_servers": bootstrap, "topics": {"partitions": 3}}
    if kafka_client:
        kafka["client"] = kafka_client
    if registry:
        kafka["schema_registry"] = {"url": registry}
    servicenow: dict[str, Any] = {"instance_url": emu_url, "auth": BASIC, "rate_limit": None, "timeout_seconds": 10}
    if retry:
        servicenow["retry"] = retry
    return {
        "servicenow": servicenow,
        "kafka": kafka,
        "offsets": {"store": "file", "path": str(offsets_path)},
        "metrics": {"pushgateway": pushgateway, "job": "sncli-test"},
        "source": {"page_size": page_size, "safety_lag_seconds": safety_lag_seconds, "format": fmt, "tables": tables},
    }


def make_settings(*args: Any, **kwargs: Any) -> Settings:
    return parse_settings(config_dict(*args, **kwargs), environ={})


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def keyset(records: list[dict[str, str]], ts_field: str = "sys_updated_on") -> list[tuple[str, str]]:
    """Records as (timestamp, sys_id) in keyset order."""
    return sorted((r[ts_field], r["sys_id"]) for r in records)


def stored_offsets(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    offsets: dict[str, dict[str, Any]] = json.loads(path.read_text())["offsets"]
    return offsets


def stored_cursor(path: Path, key: str) -> tuple[str, str] | None:
    entry = stored_offsets(path).get(key)
    return None if entry is None else (entry["timestamp"], entry["sys_id"])


def values(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]
