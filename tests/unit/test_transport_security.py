"""Plain HTTP and unverified TLS are warned about; OAuth secrets never go over plain HTTP by default (issue 15 §5)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from sncli.config import SchemaRegistry, parse_settings
from sncli.doctor import exit_code_for, transport_checks
from sncli.errors import ConfigError, ExitCode
from sncli.kafka.serde import registry_conf
from sncli.servicenow.client import ServiceNowClient
from sncli.transport_security import plain_http_off_host

BASIC = {"type": "basic", "username": "u", "password": "p"}
OAUTH = {"type": "oauth", "grant_type": "client_credentials", "client_id": "c", "client_secret": "s3cret"}


def config(url: str = "https://x.example.com", auth: dict[str, Any] | None = None, **servicenow: Any) -> Any:
    return {"servicenow": {"instance_url": url, "auth": auth or BASIC, **servicenow}}


@pytest.mark.parametrize(("url", "off_host"), [
    ("http://x.example.com", True), ("HTTP://10.1.2.3:8080/x", True), ("https://x.example.com", False),
    ("http://127.0.0.1:18080", False), ("http://localhost", False), ("http://[::1]:80", False),
])
def test_plain_http_counts_only_when_it_leaves_the_machine(url: str, off_host: bool) -> None:
    assert plain_http_off_host(url) is off_host


@pytest.mark.parametrize(("raw", "finding"), [
    (config("http://x.example.com"), "servicenow.instance_url is plain http://"),
    (config(tls={"verify": False}), "servicenow.tls.verify is false"),
    (config(auth={**OAUTH, "token_url": "http://sso.example.com/token", "allow_plain_http": True}),
     "OAuth token requests go over plain http://"),
    ({**config(), "kafka": {"schema_registry": {"url": "http://registry.example.com"}}},
     "kafka.schema_registry.url is plain http://"),
    ({**config(), "kafka": {"schema_registry": {"url": "https://registry.example.com", "tls": {"verify": False}}}},
     "kafka.schema_registry.tls.verify is false"),
])
def test_doctor_warns_about_plain_http_and_unverified_tls_and_exits_3(raw: Any, finding: str) -> None:
    checks = transport_checks(parse_settings(raw, {}))
    assert [c.status for c in checks] == ["warn"] and finding in checks[0].detail
    assert exit_code_for(checks) == ExitCode.PARTIAL


def test_https_with_verification_or_loopback_is_ok() -> None:
    for raw in (config(), config("http://127.0.0.1:18080", auth=OAUTH)):
        assert [c.status for c in transport_checks(parse_settings(raw, {}))] == ["ok"]


@pytest.mark.parametrize(("raw", "key"), [
    (config("http://x.example.com", auth=OAUTH), "instance_url"),
    (config(auth={**OAUTH, "token_url": "http://sso.example.com/oauth_token.do"}), "auth.token_url"),
])
def test_oauth_over_plain_http_is_refused_unless_allowed(raw: Any, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^servicenow: {key} is plain http://.*allow_plain_http") as caught:
        parse_settings(raw, {})
    assert caught.value.exit_code == ExitCode.USAGE
    raw["servicenow"]["auth"]["allow_plain_http"] = True
    assert parse_settings(raw, {}).servicenow.auth.type == "oauth"


def test_a_plain_http_instance_is_warned_about_at_run_time(caplog: pytest.LogCaptureFixture) -> None:
    settings = parse_settings(config("http://instance.invalid"), {})
    with caplog.at_level(logging.WARNING, logger="sncli"), ServiceNowClient(settings.servicenow):
        pass
    assert any("plain http://" in r.getMessage() for r in caplog.records)


def test_registry_tls_settings_reach_the_registry_client() -> None:
    registry = SchemaRegistry.model_validate({
        "url": "https://registry.example.com", "basic_auth_user_info": "u:p",
        "tls": {"ca_bundle": "/etc/ca.pem", "client_cert": "/etc/c.pem", "client_key": "/etc/c.key"},
    })
    conf = registry_conf(registry)
    assert conf["ssl.ca.location"] == "/etc/ca.pem"
    assert conf["ssl.certificate.location"] == "/etc/c.pem" and conf["ssl.key.location"] == "/etc/c.key"
    assert conf["basic.auth.user.info"] == "u:p"
    unverified = SchemaRegistry.model_validate({"url": "https://r.example.com", "tls": {"verify": False}})
    assert registry_conf(unverified)["ssl.ca.location"] is False
