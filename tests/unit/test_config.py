"""Config loading: every bad input is one ConfigError naming the key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sncli.config import Settings, load_settings, parse_settings, table_fingerprint
from sncli.errors import ConfigError, ExitCode

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sncli.yaml"
ENV = {"SN_PASSWORD": "pw"}


def example() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return data


def test_example_config_is_valid() -> None:
    settings = load_settings(EXAMPLE, ENV)
    assert settings.source.table_names() == ["incident", "problem"]
    assert settings.servicenow.auth.type == "basic"
    assert settings.offsets.store == "file"


def error_of(raw: Any, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_settings(raw, ENV if env is None else env)
    assert info.value.exit_code == ExitCode.USAGE
    assert "\n" not in str(info.value)
    return str(info.value)


def test_unknown_key_is_named_with_its_path() -> None:
    raw = example()
    raw["source"]["page_sise"] = 10
    assert error_of(raw).startswith("source.page_sise: unknown key")


def test_unknown_key_in_a_list_item() -> None:
    raw = example()
    raw["source"]["tables"][1]["topc"] = "x"
    assert error_of(raw).startswith("source.tables[1].topc: unknown key")


def test_missing_env_var_names_variable_and_key() -> None:
    message = error_of(example(), env={})
    assert message == "servicenow.auth.password: environment variable SN_PASSWORD is not set"


def test_env_expansion_is_whole_token_only() -> None:
    raw = example()
    raw["servicenow"]["auth"]["password"] = "pre-${SN_PASSWORD}"
    settings = parse_settings(raw, ENV)
    assert settings.servicenow.auth.password.get_secret_value() == "pre-${SN_PASSWORD}"


def test_dollar_inside_an_expanded_secret_is_kept() -> None:
    settings = parse_settings(example(), {"SN_PASSWORD": "a$b${C}"})
    assert settings.servicenow.auth.password.get_secret_value() == "a$b${C}"


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    raw = example()
    raw["servicenow"]["auth"]["password"] = f"${{file:{secret}}}"
    assert parse_settings(raw, {}).servicenow.auth.password.get_secret_value() == "from-file"


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("servicenow", "instance_url"), "ftp://x", "servicenow.instance_url: instance_url must be an http(s) URL"),
        (("source", "page_size"), "lots", "source.page_size: Input should be a valid integer"),
        (("source", "page_size"), 0, "source.page_size: Input should be greater than or equal to 1"),
        (("servicenow", "auth", "type"), "basik", "servicenow.auth: type must be one of"),
        (("offsets", "url"), "s3://b/k", "offsets.url: unknown key"),
        (("metrics", "pushgateway"), "nope", "metrics.pushgateway: pushgateway must be an http(s) URL"),
    ],
)
def test_bad_values_name_the_key(path: tuple[str, ...], value: Any, expected: str) -> None:
    raw = example()
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert error_of(raw).startswith(expected)


def test_missing_required_key() -> None:
    raw = example()
    del raw["servicenow"]["auth"]["username"]
    assert error_of(raw).startswith("servicenow.auth.username: required key is missing")


def test_table_name_must_be_a_safe_path_segment() -> None:
    raw = example()
    raw["source"]["tables"][0]["name"] = "incident/../sys_user"
    assert error_of(raw).startswith("source.tables[0].name: table name must match")


def test_not_a_mapping() -> None:
    assert error_of(["a"]).startswith("<root>: expected a mapping")
    assert error_of(None).startswith("<root>: the config is empty")


def test_bad_yaml_reports_line(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("servicenow:\n  instance_url: [\n")
    with pytest.raises(ConfigError, match="line"):
        load_settings(bad, ENV)


def test_redacted_hides_every_secret() -> None:
    raw = example()
    raw["servicenow"]["auth"] = {
        "type": "oauth", "client_id": "cid", "client_secret": "canary-cs",
        "username": "u", "password": "canary-pw",
    }
    raw["kafka"]["client"] = {"sasl.password": "canary-kafka"}
    settings: Settings = parse_settings(raw, ENV)
    text = str(settings.redacted())
    for canary in ("canary-cs", "canary-pw", "canary-kafka"):
        assert canary not in text
        assert canary in settings.secret_values()
    assert settings.redacted()["servicenow"]["auth"]["client_id"] == "cid"


def test_fingerprint_changes_with_each_part() -> None:
    base = table_fingerprint("https://x.service-now.com", "incident", "active=true", "sys_updated_on")
    assert base == table_fingerprint("https://X.service-now.com/", "incident", "active=true", "sys_updated_on")
    others = {
        table_fingerprint("https://y.service-now.com", "incident", "active=true", "sys_updated_on"),
        table_fingerprint("https://x.service-now.com", "problem", "active=true", "sys_updated_on"),
        table_fingerprint("https://x.service-now.com", "incident", None, "sys_updated_on"),
        table_fingerprint("https://x.service-now.com", "incident", "active=true", "sys_created_on"),
    }
    assert base not in others and len(others) == 4


def test_a_refused_url_never_shows_its_password() -> None:
    raw = example()
    raw["metrics"] = {"pushgateway": "ftp://sncli:pAss-in-url-91c@gateway:9091"}
    message = error_of(raw)
    assert message.startswith("metrics.pushgateway:") and "sncli:***@gateway" in message
    assert "pAss-in-url-91c" not in message


def test_every_config_read_registers_its_secrets_for_masking() -> None:
    from sncli.logs import redact

    raw = example()
    raw["servicenow"]["auth"] = {"type": "basic", "username": "u", "password": "${SN_PASSWORD}"}
    parse_settings(raw, {"SN_PASSWORD": "rotated-pw-5d1e"})
    assert redact("login with rotated-pw-5d1e failed") == "login with *** failed"


@pytest.mark.parametrize("lag", [0, -1])
def test_safety_lag_below_one_second_is_refused(lag: int) -> None:
    # HI is inclusive at one-second resolution: with 0, a record written later in HI's second is skipped.
    raw = example()
    raw["source"]["safety_lag_seconds"] = lag
    message = error_of(raw)
    assert message.startswith("source.safety_lag_seconds:")
    assert "at least 1" in message


def test_safety_lag_of_one_second_is_accepted() -> None:
    raw = example()
    raw["source"]["safety_lag_seconds"] = 1
    assert parse_settings(raw, ENV).source.safety_lag_seconds == 1
