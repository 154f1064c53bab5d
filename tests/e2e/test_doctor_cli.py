"""`sncli doctor` as an operator runs it: against the emulator and the real local broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sncli.emulator.server import ServiceNowEmulator

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def write_config(
    tmp_path: Path, emulator: ServiceNowEmulator, bootstrap: str, pushgateway: str | None, query: str | None = None
) -> Path:
    config: dict[str, Any] = {
        "servicenow": {
            "instance_url": emulator.url,
            "auth": {"type": "basic", "username": "admin", "password": "${SN_PASSWORD}"},
            "retry": {"max_attempts": 2, "initial_backoff_ms": 10, "max_backoff_ms": 50},
        },
        "kafka": {"bootstrap_servers": bootstrap},
        "offsets": {"store": "file", "path": str(tmp_path / "offsets.json")},
        "metrics": {"pushgateway": pushgateway},
        "source": {"tables": [{"name": "incident", "topic": "doctor.incident", "query": query}]},
    }
    path = tmp_path / "sncli.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def doctor(config: Path) -> tuple[int, dict[str, Any]]:
    env = {**os.environ, "SN_PASSWORD": "admin"}
    proc = subprocess.run(
        [sys.executable, "-m", "sncli", "--json", "--log-format", "json", "doctor", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert "admin" not in proc.stderr.replace('"admin"', "")  # the password never leaks into logs
    return proc.returncode, json.loads(proc.stdout)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in report["checks"]}


@pytest.fixture
def seeded(emulator: ServiceNowEmulator) -> ServiceNowEmulator:
    emulator.state.generate("incident", 20, seed=1)
    return emulator


def test_everything_fine_exits_0(
    tmp_path: Path, seeded: ServiceNowEmulator, kafka_bootstrap: str, pushgateway_url: str
) -> None:
    code, report = doctor(write_config(tmp_path, seeded, kafka_bootstrap, pushgateway_url, query="active=true"))
    checks = by_name(report)
    assert code == 0, report
    assert report["exit_code"] == 0
    for name in (
        "servicenow reachable",
        "auth",
        "user time zone",
        "table incident readable",
        "table incident cursor fields",
        "table incident base query",
        "kafka",
        "pushgateway",
        "offsets store",
        "clock skew",
    ):
        assert checks[name]["status"] == "ok", checks[name]
    assert checks["schema registry"]["status"] == "skip"


def test_non_utc_user_warns_and_exits_3(tmp_path: Path, seeded: ServiceNowEmulator, kafka_bootstrap: str) -> None:
    seeded.state.update_settings(user_time_zone="America/New_York")
    code, report = doctor(write_config(tmp_path, seeded, kafka_bootstrap, None))
    check = by_name(report)["user time zone"]
    assert code == 3
    assert check["status"] == "warn" and "America/New_York" in check["detail"]
    assert by_name(report)["pushgateway"]["status"] == "skip"


def test_kafka_down_fails_naming_kafka(tmp_path: Path, seeded: ServiceNowEmulator) -> None:
    code, report = doctor(write_config(tmp_path, seeded, "127.0.0.1:1", None))
    failed = [c for c in report["checks"] if c["status"] == "fail"]
    assert code == 1
    assert [c["name"] for c in failed] == ["kafka"]
    assert "127.0.0.1:1" in failed[0]["detail"]


def test_unknown_field_in_base_query_fails(tmp_path: Path, seeded: ServiceNowEmulator, kafka_bootstrap: str) -> None:
    code, report = doctor(write_config(tmp_path, seeded, kafka_bootstrap, None, query="activ=true"))
    check = by_name(report)["table incident base query"]
    assert code == 1
    assert check["status"] == "fail" and "activ" in check["detail"]


def test_denied_table_fails_with_a_hint(tmp_path: Path, seeded: ServiceNowEmulator, kafka_bootstrap: str) -> None:
    seeded.state.update_settings(denied_tables={"incident"})
    code, report = doctor(write_config(tmp_path, seeded, kafka_bootstrap, None))
    check = by_name(report)["table incident readable"]
    assert code == 1
    assert check["status"] == "fail" and "403" in check["detail"] and "grant" in check["hint"]


def test_servicenow_unreachable_fails_and_skips_dependent_checks(tmp_path: Path, kafka_bootstrap: str) -> None:
    emu = ServiceNowEmulator(host="127.0.0.1", port=0).start()
    emu.stop()  # a URL where nothing listens any more
    code, report = doctor(write_config(tmp_path, emu, kafka_bootstrap, None))
    names = by_name(report)
    assert code == 1
    assert names["servicenow reachable"]["status"] == "fail"
    assert "auth" not in names and names["kafka"]["status"] == "ok"


def test_urls_and_expanded_values_are_shown_masked_in_json_and_in_the_table(
    tmp_path: Path, seeded: ServiceNowEmulator, kafka_bootstrap: str, pushgateway_url: str, registry_url: str
) -> None:
    """Registry and Pushgateway URLs carry user:password (both services ignore it); the instance URL
    comes from the environment. Doctor reaches all three and shows none of those values."""
    canaries = {"pushgateway": "cAnary-PGW-doctor-1", "registry": "cAnary-SR-doctor-2"}
    config = write_config(tmp_path, seeded, kafka_bootstrap,
                          pushgateway_url.replace("://", f"://pg-user:{canaries['pushgateway']}@", 1))
    data = yaml.safe_load(config.read_text())
    data["kafka"]["schema_registry"] = {"url": registry_url.replace("://", f"://sr-user:{canaries['registry']}@", 1)}
    data["servicenow"]["instance_url"] = "${SN_URL}"
    config.write_text(yaml.safe_dump(data))
    env = {**os.environ, "SN_PASSWORD": "admin", "SN_URL": seeded.url}
    outputs, stdouts = [], []
    for json_flag in (["--json"], []):
        proc = subprocess.run(
            [sys.executable, "-m", "sncli", *json_flag, "--log-format", "json", "doctor", "--config", str(config)],
            capture_output=True, text=True, env=env, timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outputs.append(proc.stdout + proc.stderr)
        stdouts.append(proc.stdout)
    checks = by_name(json.loads(stdouts[0]))
    assert checks["pushgateway"]["detail"] == pushgateway_url.replace("://", "://pg-user:***@", 1) + "/-/ready"
    # The registry is probed with the run's own client (its detail: the URL and what it listed).
    assert checks["schema registry"]["detail"].startswith(registry_url.replace("://", "://sr-user:***@", 1) + ": ")
    assert checks["servicenow reachable"]["detail"] == "*** (plain HTTP)"
    for output in outputs:
        assert "pg-user:***@" in output and "sr-user:***@" in output
        for secret in (*canaries.values(), seeded.url):
            assert secret not in output


@pytest.mark.parametrize(("table", "hidden", "status", "words"), [
    ("incident", False, "ok", "1 delete(s) recorded"),
    ("incident", True, "warn", "hide"),
    ("sys_user", False, "warn", "sys_* tables are not recorded"),
])
def test_deletes_audit_checks_sys_audit_delete_and_warns_about_unaudited_tables(
    tmp_path: Path, seeded: ServiceNowEmulator, kafka_bootstrap: str, table: str, hidden: bool, status: str,
    words: str,
) -> None:
    victim = seeded.state.insert(table, {"name": "gone"})
    seeded.state.delete(table, victim["sys_id"])
    if hidden:
        seeded.state.update_settings(hidden_rows={"sys_audit_delete": "tablenameISNOTEMPTY"})
    path = write_config(tmp_path, seeded, kafka_bootstrap, None)
    config = yaml.safe_load(path.read_text())
    config["source"]["tables"] = [{"name": table, "topic": "doctor.t", "deletes": "audit"}]
    path.write_text(yaml.safe_dump(config))
    code, report = doctor(path)
    check = by_name(report)[f"table {table} deletes"]
    assert check["status"] == status and words in check["detail"], check
    assert code == (0 if status == "ok" else 3), report


def test_an_integration_user_who_cannot_read_sys_audit_delete_fails_the_deletes_check(
    tmp_path: Path, seeded: ServiceNowEmulator, kafka_bootstrap: str
) -> None:
    seeded.state.update_settings(denied_tables={"sys_audit_delete"})
    path = write_config(tmp_path, seeded, kafka_bootstrap, None)
    config = yaml.safe_load(path.read_text())
    config["source"]["tables"][0]["deletes"] = "audit"
    path.write_text(yaml.safe_dump(config))
    code, report = doctor(path)
    check = by_name(report)["table incident deletes"]
    assert check["status"] == "fail" and "sys_audit_delete" in check["hint"]
    assert code == 1
