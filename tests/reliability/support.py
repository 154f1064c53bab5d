"""Helpers shared by the reliability suite (no tests here): configs, running the CLI, reading results.

The suite drives sncli the way a scheduler does: as a subprocess with a config
file, judged by its exit code, its stdout/stderr and what it left behind (Kafka
topics, the offsets file, the emulator's records and request journal).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[2]
BASIC = {"type": "basic", "username": "admin", "password": "admin"}


# --------------------------------------------------------------------------- configs


def source_config(
    emu_url: str,
    bootstrap: str,
    offsets: Path,
    tables: Sequence[Mapping[str, Any]],
    *,
    page_size: int = 1000,
    auth: Mapping[str, Any] | None = None,
    retry: Mapping[str, Any] | None = None,
    kafka_client: Mapping[str, Any] | None = None,
    partitions: int = 3,
    pushgateway: str | None = None,
    timeout_seconds: float = 10,
) -> dict[str, Any]:
    """A config for ``source poll`` against the emulator and a broker (safety lag 0: every record counts)."""
    servicenow: dict[str, Any] = {
        "instance_url": emu_url,
        "auth": dict(auth or BASIC),
        "rate_limit": None,
        "timeout_seconds": timeout_seconds,
        "retry": dict(retry or {"max_attempts": 4, "initial_backoff_ms": 10, "max_backoff_ms": 200,
                               "max_elapsed_seconds": 20}),
    }
    kafka: dict[str, Any] = {"bootstrap_servers": bootstrap, "topics": {"partitions": partitions}}
    if kafka_client:
        kafka["client"] = dict(kafka_client)
    return {
        "servicenow": servicenow,
        "kafka": kafka,
        "offsets": {"store": "file", "path": str(offsets)},
        "metrics": {"pushgateway": pushgateway, "job": "sncli-reliability"},
        "source": {"page_size": page_size, "safety_lag_seconds": 0, "tables": [dict(t) for t in tables]},
    }


def write_config(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
    return path


# --------------------------------------------------------------------------- the CLI


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SNCLI_CONFIG", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def sncli_argv(config: Path | None, args: Sequence[str], *, json_output: bool = False,
               log_format: str = "json") -> list[str]:
    argv = [sys.executable, "-m", "sncli", "--log-format", log_format]
    if json_output:
        argv.append("--json")
    if config is not None:
        argv += ["--config", str(config)]
    return argv + list(args)


def run_sncli(
    config: Path | None,
    *args: str,
    json_output: bool = False,
    log_format: str = "json",
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    cwd: Path | None = None,
) -> CliResult:
    proc = subprocess.run(
        sncli_argv(config, args, json_output=json_output, log_format=log_format),
        env=cli_env(env),
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(result: CliResult, code: int, *needles: str) -> str:
    """The run failed with ``code`` and one ``sncli: error:`` line naming every needle, no traceback."""
    assert result.code == code, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("sncli: error:")]
    assert len(errors) == 1, lines
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


# --------------------------------------------------------------------------- results


def keyset(records: Iterable[Mapping[str, str]], ts_field: str = "sys_updated_on") -> list[tuple[str, str]]:
    return sorted((r[ts_field], r["sys_id"]) for r in records)


def decoded(records: Iterable[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


def stored_offsets(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    offsets: dict[str, dict[str, Any]] = json.loads(path.read_text())["offsets"]
    return offsets


def stored_cursor(path: Path, key: str) -> tuple[str, str] | None:
    entry = stored_offsets(path).get(key)
    return None if entry is None else (entry["timestamp"], entry["sys_id"])
