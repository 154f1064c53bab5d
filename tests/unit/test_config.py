"""Config loading: every bad input is one ConfigError naming the key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sncli.config import Settings, load_settings, parse_settings, table_fingerprint
from sncli.errors import ConfigError, ExitCode

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sncli.yaml"
ENV = {"SN_PASSWORD": "pw-from-env"}  # 4+ characters: shorter ones cannot be masked, so are refused


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


# --------------------------------------------------------------------------- secrets and ${...} references


def set_at(raw: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """Set ``value`` at a dotted path (a ``[i]`` part indexes a list), creating mappings on the way.

    Under ``kafka.client`` the rest of the path is one key (librdkafka's keys have dots).
    """
    if path.startswith("kafka.client."):
        raw.setdefault("kafka", {}).setdefault("client", {})[path.removeprefix("kafka.client.")] = value
        return raw
    node: Any = raw
    parts = path.replace("[", ".[").split(".")
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {})
    last = parts[-1]
    if last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value
    return raw


PLAIN_FIELDS = ["metrics.job", "source.tables[0].topic", "source.tables[1].query", "sink.group_id",
                "sink.dlq_topic", "offsets.path", "kafka.client.sasl.mechanism", "kafka.client.linger.ms",
                "sink.topics[0].table", "servicenow.tls.ca_bundle"]


@pytest.mark.parametrize("path", PLAIN_FIELDS)
def test_a_reference_in_a_field_that_is_no_secret_or_address_is_a_config_error(path: str) -> None:
    # A ConfigMap author must not pull an environment variable or a file into a field sncli prints,
    # logs or pushes as a metric label (metrics.job becomes the Pushgateway's job label).
    for reference in ("${SN_PASSWORD}", "${file:/etc/hostname}"):
        message = error_of(set_at(example(), path, reference))
        assert message.startswith(f"{path}: ${{...}} is not expanded here"), message
        assert "pw-from-env" not in message


EXPANDING_FIELDS = {
    "servicenow.instance_url": "https://expanded-1.service-now.com",
    "servicenow.proxy": "http://proxy-user:proxy-pw-71@proxy.local:3128",
    "servicenow.auth.username": "user-from-env",
    "servicenow.auth.password": "password-from-env",
    "kafka.bootstrap_servers": "broker-from-env:9093",
    "kafka.client.sasl.password": "sasl-pw-from-env",
    "kafka.client.sasl.username": "sasl-user-from-env",
    "kafka.client.sasl.oauthbearer.config": "clientId=a clientSecret=b-from-env",
    "kafka.schema_registry.url": "http://registry-from-env:8081",
    "kafka.schema_registry.basic_auth_user_info": "sr-user:sr-pw-from-env",
    "metrics.pushgateway": "http://gateway-from-env:9091",
}


@pytest.mark.parametrize("path", sorted(EXPANDING_FIELDS))
def test_a_reference_expands_in_secrets_addresses_and_user_names_and_its_value_is_masked(path: str) -> None:
    from sncli.logs import redact

    value = EXPANDING_FIELDS[path]
    parse_settings(set_at(example(), path, "${FROM_ENV}"), {**ENV, "FROM_ENV": value})
    assert redact(f"shown: {value}.") == "shown: ***."


def test_oauth_and_s3_fields_expand_too() -> None:
    from sncli.logs import redact

    raw = example()
    raw["servicenow"]["auth"] = {"type": "oauth", "client_id": "${ID}", "client_secret": "${file:/dev/null}",
                                 "username": "${ID}", "password": "${SN_PASSWORD}", "token_url": "${TOKEN_URL}"}
    raw["offsets"] = {"store": "s3", "url": "${S3_URL}", "endpoint_url": "${S3_ENDPOINT}"}
    env = {**ENV, "ID": "client-id-from-env", "TOKEN_URL": "https://idp.local/token",
           "S3_URL": "s3://bucket-from-env/key", "S3_ENDPOINT": "http://s3-from-env:9000"}
    settings = parse_settings(raw, env)
    assert settings.offsets.store == "s3" and settings.offsets.bucket == "bucket-from-env"
    for value in env.values():
        assert redact(value) == "***"


def test_a_reference_too_short_to_be_masked_is_refused_without_showing_it() -> None:
    message = error_of(example(), env={"SN_PASSWORD": "pw"})
    assert message == "servicenow.auth.password: ${SN_PASSWORD} is shorter than 4 characters, " \
                      "too short to be masked in output"
    empty = parse_settings(example(), {"SN_PASSWORD": ""})  # nothing to mask: an empty value is allowed
    assert empty.servicenow.auth.password.get_secret_value() == ""


def test_a_config_error_never_shows_an_expanded_value() -> None:
    raw = set_at(example(), "offsets", {"store": "s3", "url": "${S3_URL}"})
    message = error_of(raw, env={**ENV, "S3_URL": "not-an-s3-url-cAnary-5150"})
    assert message == "offsets.url: must be s3://bucket/key, got '***'"
    raw = set_at(example(), "servicenow.instance_url", "${SN_URL}")
    message = error_of(raw, env={**ENV, "SN_URL": "cAnary-no-scheme.service-now.com"})
    assert "cAnary" not in message and message.startswith("servicenow.instance_url:")


def test_a_rejected_config_registers_its_secrets_for_masking_too() -> None:
    from sncli.logs import redact

    raw = example()
    raw["source"]["page_sise"] = 10
    raw["kafka"]["client"] = {"sasl.password": "inline-sasl-cAnary-2"}
    error_of(raw, env={"SN_PASSWORD": "rejected-pw-cAnary-1"})
    # A looping process logs the rejected reload; nothing that config held may show in that line or later.
    assert redact("rejected-pw-cAnary-1 inline-sasl-cAnary-2") == "*** ***"


def test_config_show_redacts_by_the_secret_model_not_by_key_name() -> None:
    raw = example()
    raw["servicenow"]["auth"] = {"type": "oauth", "client_id": "cid", "client_secret": "canary-cs",
                                 "username": "u", "password": "canary-pw", "token_url": "https://idp.local/token"}
    raw["kafka"]["client"] = {"sasl.oauthbearer.config": "clientId=x clientSecret=canary-oauthbearer",
                              "sasl.mechanism": "OAUTHBEARER", "sasl.username": "kafka-user", "linger.ms": 5}
    shown = parse_settings(raw, ENV).redacted()
    assert shown["kafka"]["client"] == {"sasl.oauthbearer.config": "***", "sasl.mechanism": "OAUTHBEARER",
                                        "sasl.username": "kafka-user", "linger.ms": 5}
    auth = shown["servicenow"]["auth"]
    assert (auth["client_secret"], auth["password"], auth["refresh_token"]) == ("***", "***", None)
    assert (auth["client_id"], auth["username"], auth["token_url"]) == ("cid", "u", "https://idp.local/token")
    assert shown["source"]["tables"][0]["key"] == {"type": "sys_id"}  # a key named "key" is no secret


def test_every_secret_str_field_is_a_secret_and_the_addresses_are_the_expanding_fields() -> None:
    """The field model: any SecretStr is a secret (a new secret key needs no other change); which plain
    text fields may expand ${...} is listed here, so widening that list is a deliberate change."""
    from pydantic import BaseModel, SecretStr

    from sncli.config import Role, Settings, field_role
    from sncli.config.roles import models_in as _models_in
    from sncli.config.roles import types_in as _types_in

    roles: dict[str, Role | None] = {}

    def walk(model: type[BaseModel], prefix: tuple[str, ...]) -> None:
        for name, info in model.model_fields.items():
            path = (*prefix, name)
            roles[".".join(path)] = field_role(path)
            if SecretStr in _types_in(info.annotation):
                assert field_role(path) is Role.SECRET, path
            for inner in _models_in(info):
                walk(inner, path)

    walk(Settings, ())
    expanding = {path for path, role in roles.items() if role is Role.EXPANDS}
    assert expanding == {
        "servicenow.instance_url", "servicenow.proxy", "servicenow.auth.username", "servicenow.auth.client_id",
        "servicenow.auth.token_url", "kafka.bootstrap_servers", "kafka.schema_registry.url", "offsets.url",
        "offsets.endpoint_url", "metrics.pushgateway",
    }
    assert {p for p, r in roles.items() if r is Role.SECRET} >= {
        "servicenow.auth.password", "servicenow.auth.client_secret", "servicenow.auth.refresh_token",
        "kafka.schema_registry.basic_auth_user_info"}
