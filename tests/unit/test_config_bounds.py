"""Hostile config text: bounded YAML loading and finite numbers only (issue 15 §5), exit 2 naming the problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sncli.config import load_settings, parse_settings
from sncli.errors import ConfigError, ExitCode

REPO = Path(__file__).resolve().parents[2]
BASE = """\
servicenow:
  instance_url: https://x.example.com
  auth: {type: basic, username: u, password: p}
"""


def laughs(levels: int) -> str:
    """The classic alias bomb: each level is a list of nine aliases of the level before."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ",".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_config_is_refused_at_once_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "laughs.yaml"
    config.write_text(BASE + laughs(9))  # 9^9 strings once expanded; used to run for more than 25 s
    assert len(config.read_bytes()) < 1024
    proc = subprocess.run([sys.executable, "-m", "sncli", "config", "validate", "--config", str(config)],
                          cwd=REPO, capture_output=True, text=True, timeout=20)
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert "aliases are expanded" in proc.stderr and "Traceback" not in proc.stderr


def test_deep_nesting_is_a_config_error_not_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "deep.yaml"
    config.write_text(BASE + "kafka: " + "[" * 1000 + "]" * 1000 + "\n")
    with pytest.raises(ConfigError, match=r"nested more than \d+ levels deep at line 4"):
        load_settings(config, {})


def test_an_alias_that_contains_itself_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "cycle.yaml"
    config.write_text(BASE + "source: &s {tables: [*s]}\n")
    with pytest.raises(ConfigError, match="refers to its own parent"):
        load_settings(config, {})


def test_an_oversized_file_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    config = tmp_path / "big.yaml"
    config.write_text(BASE + "#" * (2 * 1024 * 1024) + "\n")
    with pytest.raises(ConfigError, match="larger than"):
        load_settings(config, {})


def test_ordinary_anchors_aliases_and_merge_keys_still_work(tmp_path: Path) -> None:
    config = tmp_path / "anchors.yaml"
    config.write_text(BASE + """\
source:
  tables:
    - &incident {name: incident, topic: t.incident, key: &bysys {type: sys_id}}
    - {<<: *incident, name: problem, topic: t.problem, key: *bysys}
""")
    settings = load_settings(config, {})
    assert [(t.name, t.topic) for t in settings.source.tables] == [("incident", "t.incident"),
                                                                    ("problem", "t.problem")]


@pytest.mark.parametrize(("section", "key", "value", "path"), [
    ("servicenow", "timeout_seconds", float("inf"), "servicenow.timeout_seconds"),
    ("servicenow", "timeout_seconds", float("nan"), "servicenow.timeout_seconds"),
    ("retry", "max_elapsed_seconds", float("inf"), "servicenow.retry.max_elapsed_seconds"),
    ("rate_limit", "requests_per_second", float("inf"), "servicenow.rate_limit.requests_per_second"),
])
def test_infinite_or_nan_numbers_are_refused_naming_the_key(section: str, key: str, value: float,
                                                              path: str) -> None:
    raw: dict[str, object] = {"instance_url": "https://x.example.com",
                              "auth": {"type": "basic", "username": "u", "password": "p"}}
    if section == "servicenow":
        raw[key] = value
    else:
        raw[section] = {key: value}
    with pytest.raises(ConfigError, match=rf"^{path}: .*finite number") as caught:
        parse_settings({"servicenow": raw}, {})
    assert caught.value.exit_code == ExitCode.USAGE


def test_inf_written_in_yaml_fails_validate_not_the_run(tmp_path: Path) -> None:
    config = tmp_path / "inf.yaml"
    config.write_text(BASE + "  timeout_seconds: .inf\n")
    with pytest.raises(ConfigError, match=r"^servicenow\.timeout_seconds: "):
        load_settings(config, {})


def test_a_non_finite_kafka_client_number_names_the_setting() -> None:
    raw = {"servicenow": {"instance_url": "https://x.example.com", "auth": {"type": "basic", "username": "u",
                                                                            "password": "p"}},
           "kafka": {"client": {"linger.ms": float("nan")}}}
    with pytest.raises(ConfigError, match=r"^kafka\.client: linger\.ms must be a finite number"):
        parse_settings(raw, {})
