"""``sncli offsets show|set|reset|import`` as a subprocess against a file store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sncli.config import load_settings, source_fingerprint
from sncli.offsets import run_lock

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SNCLI = REPO / ".venv" / "bin" / "sncli"
A = "0123456789abcdef0123456789abcdef"
B = "fedcba9876543210fedcba9876543210"


def write_config(tmp_path: Path, *, problem_query: str = "active=true") -> Path:
    config = {
        "servicenow": {"instance_url": "https://dev1.example.com",
                       "auth": {"type": "basic", "username": "u", "password": "p"}},
        "offsets": {"store": "file", "path": str(tmp_path / "offsets.json")},
        "source": {"tables": [
            {"name": "incident", "topic": "sn.incident"},
            {"name": "problem", "topic": "sn.problem", "query": problem_query},
        ]},
    }
    path = tmp_path / "sncli.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def sncli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [str(SNCLI)] if SNCLI.exists() else [sys.executable, "-m", "sncli"]
    env = {k: v for k, v in os.environ.items() if k != "SNCLI_CONFIG"}
    return subprocess.run([*command, *args], cwd=cwd, env=env, text=True, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=60)


def show_json(config: Path, *extra: str) -> list[dict[str, Any]]:
    result = sncli("--config", str(config), "--json", "offsets", "show", *extra, cwd=config.parent)
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def test_set_show_reset_round_trip(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    rows = show_json(config)
    assert [(r["table"], r["stored"]) for r in rows] == [("incident", False), ("problem", False)]

    result = sncli("--config", str(config), "offsets", "set", "--table", "incident",
                   "--timestamp", "2024-05-01 12:00:00", "--sys-id", A, "--yes", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2024-05-01 12:00:00" in result.stdout

    rows = show_json(config, "--table", "incident")
    assert len(rows) == 1
    row = rows[0]
    assert (row["table"], row["timestamp"], row["sys_id"], row["fingerprint"]) == (
        "incident", "2024-05-01 12:00:00", A, "ok")
    assert row["lag_seconds"] > 0
    settings = load_settings(config)
    assert row["stored_fingerprint"] == source_fingerprint(settings, settings.source.table("incident"))

    stored = json.loads((tmp_path / "offsets.json").read_text())
    assert stored["version"] == 1 and stored["offsets"]["incident"]["sys_id"] == A

    text = sncli("offsets", "show", "--config", str(config), cwd=tmp_path)  # --config after the command
    assert text.returncode == 0 and "incident" in text.stdout and "ok" in text.stdout

    result = sncli("--config", str(config), "--json", "offsets", "reset", "--table", "incident", "--yes", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"table": "incident", "deleted": ["incident"]}
    assert json.loads((tmp_path / "offsets.json").read_text())["offsets"] == {}


def test_changes_need_yes_without_a_terminal_and_unknown_tables_exit_2(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = sncli("--config", str(config), "offsets", "set", "--table", "incident",
                   "--timestamp", "2024-05-01 12:00:00", cwd=tmp_path)
    assert result.returncode == 2 and "--yes" in result.stderr
    assert not (tmp_path / "offsets.json").exists()

    for args in (["show", "--table", "nope"], ["reset", "--table", "nope", "--yes"],
                 ["set", "--table", "nope", "--timestamp", "2024-05-01 12:00:00", "--yes"]):
        result = sncli("--config", str(config), "offsets", *args, cwd=tmp_path)
        assert result.returncode == 2, args
        assert "nope" in result.stderr and "Traceback" not in result.stderr

    result = sncli("--config", str(config), "offsets", "set", "--table", "incident",
                   "--timestamp", "yesterday", "--yes", cwd=tmp_path)
    assert result.returncode == 2 and "YYYY-MM-DD HH:MM:SS" in result.stderr
    result = sncli("--config", str(config), "offsets", "set", "--table", "incident",
                   "--timestamp", "2024-05-01 12:00:00", "--sys-id", "x^NQactive=true", "--yes", cwd=tmp_path)
    assert result.returncode == 2 and "sys_id" in result.stderr


def test_a_running_poll_holds_the_lock_and_set_exits_75(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with run_lock(load_settings(config), "incident"):
        result = sncli("--config", str(config), "offsets", "set", "--table", "incident",
                       "--timestamp", "2024-05-01 12:00:00", "--yes", cwd=tmp_path)
        assert result.returncode == 75
        assert "incident" in result.stderr and f"pid {os.getpid()}" in result.stderr
        other = sncli("--config", str(config), "offsets", "set", "--table", "problem",
                      "--timestamp", "2024-05-01 12:00:00", "--yes", cwd=tmp_path)
        assert other.returncode == 0, other.stderr
    stored = json.loads((tmp_path / "offsets.json").read_text())["offsets"]
    assert list(stored) == ["problem"]


def test_a_corrupt_offsets_file_exits_2_and_is_not_overwritten(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    broken = b'{"version": 1, "offsets": {"incident": {"version": 1, "tab'
    (tmp_path / "offsets.json").write_bytes(broken)
    for args in (["show"], ["set", "--table", "incident", "--timestamp", "2024-05-01 12:00:00", "--yes"],
                 ["reset", "--table", "incident", "--yes"]):
        result = sncli("--config", str(config), "offsets", *args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert "is corrupt" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "offsets.json").read_bytes() == broken


def test_import_from_the_bridge_and_a_config_change_shows_a_mismatch(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    bridge = tmp_path / "bridge-offsets.json"
    bridge.write_text(json.dumps({
        "incident": {"timestamp": 1714564800, "last_identifier": A},
        "problem": {"timestamp": "2024-05-01T12:00:01Z", "last_identifier": B},
    }))
    result = sncli("--config", str(config), "--json", "offsets", "import", "--from-bridge", str(bridge), "--yes",
                   cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = json.loads(result.stdout)
    assert [(o["table"], o["timestamp"], o["sys_id"]) for o in written] == [
        ("incident", "2024-05-01 12:00:00", A), ("problem", "2024-05-01 12:00:01", B)]
    assert {r["table"]: r["fingerprint"] for r in show_json(config)} == {"incident": "ok", "problem": "ok"}

    # The base query of problem changes: its cursor no longer matches.
    changed = write_config(tmp_path, problem_query="active=false")
    assert {r["table"]: r["fingerprint"] for r in show_json(changed)} == {"incident": "ok", "problem": "mismatch"}


def test_import_refuses_tables_not_in_the_config(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    bridge = tmp_path / "bridge-offsets.json"
    bridge.write_text(json.dumps({"offsets": {
        "incident": {"timestamp": 1714564800, "last_identifier": A},
        "change_request": {"timestamp": 1714564800, "last_identifier": A},
        "sc_req_item": {"timestamp": 1714564800, "last_identifier": A},
    }}))
    result = sncli("--config", str(config), "offsets", "import", "--from-bridge", str(bridge), "--yes", cwd=tmp_path)
    assert result.returncode == 2
    assert "change_request, sc_req_item" in result.stderr and "Nothing was imported" in result.stderr
    assert not (tmp_path / "offsets.json").exists()

    bridge.write_text("{not json")
    result = sncli("--config", str(config), "offsets", "import", "--from-bridge", str(bridge), "--yes", cwd=tmp_path)
    assert result.returncode == 2 and "not valid JSON" in result.stderr
