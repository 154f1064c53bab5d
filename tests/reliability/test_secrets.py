"""Secret hygiene: canary secrets never appear in any output, DLQ record, pushed metric or ``config show``.

Canaries: the ServiceNow password and OAuth client secret (right ones and
wrong ones), the access/refresh tokens the emulator issued, a Schema Registry
password and a librdkafka ``sasl.password``, all handed to sncli through
``${VAR}`` references. A representative set of commands runs as processes,
successes and failures alike (bad credentials, records
dead-lettered, doctor, config show, ``--json`` summaries, JSON and text logs);
then every captured stdout/stderr line, every DLQ key/value/header, every
metric on the Pushgateway (read back over HTTP) and ``config show`` is searched.
The broker-down case (a SASL password canary) is in
tests/reliability/test_kafka_faults.py::test_source_poll_with_the_broker_down_exits_1_fast_naming_kafka_and_stores_nothing.

TLS verification on by default (an untrusted certificate refused unless
``tls.verify: false`` or a ``ca_bundle``) is proven in
tests/integration/test_sn_client.py::test_tls_verification_is_on_by_default_and_an_untrusted_cert_is_refused_without_retries,
::test_tls_verify_false_accepts_the_untrusted_cert and ::test_tls_ca_bundle_trusts_the_cert; not repeated here.
"""

from __future__ import annotations

import copy
import json
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from sncli.emulator.server import ServiceNowEmulator
from tests.fixtures.kafka import read_all
from tests.reliability.support import (
    CliResult,
    assert_one_line_error,
    create_topic,
    produce,
    run_sncli,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

NOW = datetime.now(UTC).replace(microsecond=0)
CANARY = {
    "SN_PASSWORD": "cAnary-PW-4c1d9e",
    "SN_CLIENT_SECRET": "cAnary-CS-88af02",
    "SN_WRONG_PASSWORD": "cAnary-WRONGPW-71b3",
    "SN_WRONG_CLIENT_SECRET": "cAnary-WRONGCS-9d0e",
    "SR_USER_INFO": "registry-user:cAnary-SR-5e6f",
    "KAFKA_SASL_PASSWORD": "cAnary-SASL-12ab",
}
USER = "sncli-integration"


@pytest.fixture
def canary_emulator() -> Iterator[ServiceNowEmulator]:
    emu = ServiceNowEmulator(username=USER, password=CANARY["SN_PASSWORD"], client_id="sncli",
                             client_secret=CANARY["SN_CLIENT_SECRET"]).start()
    try:
        yield emu
    finally:
        emu.stop()


def _config(emu_url: str, bootstrap: str, tmp_path: Path, *, registry: str, pushgateway: str, topic: str,
            sink_topic: str, dlq: str, password_var: str = "SN_PASSWORD", secret_var: str = "SN_CLIENT_SECRET",
            job: str) -> dict[str, Any]:
    return {
        "servicenow": {
            "instance_url": emu_url,
            "auth": {"type": "oauth", "grant_type": "password", "client_id": "sncli",
                     "client_secret": "${" + secret_var + "}", "username": USER,
                     "password": "${" + password_var + "}"},
            "rate_limit": None, "timeout_seconds": 5,
            "retry": {"max_attempts": 2, "initial_backoff_ms": 10, "max_backoff_ms": 50, "max_elapsed_seconds": 10},
        },
        "kafka": {
            "bootstrap_servers": bootstrap,
            "client": {"session.timeout.ms": 2000, "heartbeat.interval.ms": 500, "message.timeout.ms": 5000,
                       "sasl.password": "${KAFKA_SASL_PASSWORD}"},
            "schema_registry": {"url": registry, "basic_auth_user_info": "${SR_USER_INFO}"},
            "topics": {"partitions": 1},
        },
        "offsets": {"store": "file", "path": str(tmp_path / "offsets.json")},
        "metrics": {"pushgateway": pushgateway, "job": job},
        "source": {"page_size": 50, "safety_lag_seconds": 1, "tables": [{"name": "incident", "topic": topic}]},
        "sink": {"group_id": f"h9-sec-{uuid.uuid4().hex[:6]}", "workers": 2, "dlq_topic": dlq,
                 "topics": [{"topic": sink_topic, "table": "incident", "route_header": "sn.table",
                             "allowed_tables": ["u_denied"]}]},
    }


def test_canary_secrets_appear_in_no_output_dlq_record_metric_or_config_show(
    canary_emulator: ServiceNowEmulator, kafka_bootstrap: str, registry_url: str, pushgateway_url: str,
    tmp_path: Path,
) -> None:
    emu = canary_emulator
    emu.state.generate("incident", 120, at=NOW - timedelta(hours=1), spread_seconds=600, seed=7)
    emu.state.update_settings(denied_tables={"u_denied"})
    topic, sink_topic, dlq = (f"h9-sec-{n}-{uuid.uuid4().hex[:6]}" for n in ("src", "sink", "dlq"))
    job = f"sncli-h9-secrets-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, sink_topic, 1)
    create_topic(kafka_bootstrap, dlq, 1)
    produce(kafka_bootstrap, sink_topic, [
        (b"k1", orjson.dumps({"short_description": "fine"}), None),
        (b"k2", b"\xff not json", [("trace", b"1")]),
        (b"k3", orjson.dumps({"short_description": "denied"}), [("sn.table", b"u_denied")]),
    ])

    kw = {"registry": registry_url, "pushgateway": pushgateway_url, "topic": topic, "sink_topic": sink_topic,
          "dlq": dlq, "job": job}
    good = write_config(tmp_path / "good.yaml", _config(emu.url, kafka_bootstrap, tmp_path, **kw))
    wrong_pw = write_config(tmp_path / "wrong-pw.yaml", _config(
        emu.url, kafka_bootstrap, tmp_path, password_var="SN_WRONG_PASSWORD", **kw))
    wrong_cs = write_config(tmp_path / "wrong-cs.yaml", _config(
        emu.url, kafka_bootstrap, tmp_path, secret_var="SN_WRONG_CLIENT_SECRET", **kw))
    # A timestamp field the records do not have: the page looks out of order, an unexpected error with a traceback.
    odd = _config(emu.url, kafka_bootstrap, tmp_path / "odd", **kw)
    odd["source"]["tables"][0]["timestamp_field"] = "u_missing"
    traceback_path = write_config(tmp_path / "odd.yaml", odd)

    results: dict[str, CliResult] = {}

    def run(name: str, config: Path, *args: str, expect: set[int], json_output: bool = True,
            log_format: str = "json") -> None:
        result = run_sncli(config, *args, json_output=json_output, log_format=log_format, env=CANARY, timeout=120)
        assert result.code in expect, (name, result.code, result.stderr[-3000:])
        results[name] = result

    run("config validate", good, "config", "validate", expect={0})
    run("config show", good, "config", "show", expect={0}, json_output=False)
    run("config show --json", good, "config", "show", expect={0})
    run("doctor", good, "doctor", expect={0, 3})
    run("source poll", good, "source", "poll", expect={0})
    run("source poll (text logs)", good, "source", "poll", expect={0}, json_output=False, log_format="text")
    run("backfill", good, "backfill", "--table", "incident", "--parallel", "2", "--until",
        NOW.strftime("%Y-%m-%d %H:%M:%S"), expect={0})
    run("offsets show", good, "offsets", "show", expect={0})
    run("source poll, wrong password", wrong_pw, "source", "poll", expect={1})
    run("source poll, wrong client secret", wrong_cs, "source", "poll", expect={1}, json_output=False,
        log_format="text")
    run("doctor, wrong password", wrong_pw, "doctor", expect={1})
    run("source poll, traceback", traceback_path, "source", "poll", expect={1}, json_output=False, log_format="text")
    run("sink drain, wrong password", wrong_pw, "sink", "drain", expect={1})
    run("sink drain", good, "sink", "drain", expect={3})
    run("dlq inspect", good, "dlq", "inspect", expect={0})
    run("dlq inspect (table)", good, "dlq", "inspect", expect={0}, json_output=False, log_format="text")

    # The runs really used the secrets: tokens were issued, records written, the DLQ filled, metrics pushed.
    tokens = list(emu.state.tokens._access) + list(emu.state.tokens._refresh)
    assert emu.state.tokens.issued >= 3 and tokens
    dead = read_all(kafka_bootstrap, dlq, timeout=30, expected=2)
    # k2 may be there twice: the failed drain (wrong password) dead-lettered it before it stopped below k1.
    assert {(r.key, r.header("sncli.error.class")) for r in dead} == {(b"k2", b"decode"), (b"k3", b"permission")}
    with urllib.request.urlopen(f"{pushgateway_url}/metrics", timeout=10) as resp:
        pushed = resp.read().decode()
    assert job in pushed and "bridge_source_records" in pushed

    canaries = [*CANARY.values(), CANARY["SR_USER_INFO"].split(":", 1)[1], *tokens]
    places: dict[str, str] = {}
    for name, result in results.items():
        places[f"{name}: stdout"] = result.stdout
        places[f"{name}: stderr"] = result.stderr
    for record in dead:
        places[f"DLQ record @{record.offset}"] = repr((record.key, record.value, record.headers))
    places["pushgateway /metrics"] = pushed
    for where, text in places.items():
        for canary in canaries:
            assert canary not in text, f"a secret leaked into {where}"
    shown = json.loads(results["config show --json"].stdout)
    assert shown["servicenow"]["auth"]["password"] == "***"
    assert shown["servicenow"]["auth"]["client_secret"] == "***"
    print("traceback path exercised:", "Traceback" in results["source poll, traceback"].stderr)
    # The failures said what failed, without the secret.
    assert "401" in results["source poll, wrong password"].stdout + results["source poll, wrong password"].stderr


PLACES_WITH_URL_CREDENTIALS = {
    "servicenow.proxy": ("http://proxy-user:cAnary-PROXY-3f@127.0.0.1:3128", ("servicenow", "proxy")),
    "metrics.pushgateway": ("http://pg-user:cAnary-PGW-8a@127.0.0.1:9091", ("metrics", "pushgateway")),
    "kafka.schema_registry.url": ("http://sr-user:cAnary-SRURL-2c@127.0.0.1:8081",
                                  ("kafka", "schema_registry", "url")),
}


@pytest.mark.parametrize("place", sorted(PLACES_WITH_URL_CREDENTIALS))
def test_config_show_hides_a_password_inside_a_url(place: str, tmp_path: Path) -> None:
    url, path = PLACES_WITH_URL_CREDENTIALS[place]
    data: dict[str, Any] = {"servicenow": {"instance_url": "https://dev1.service-now.com",
                                           "auth": {"type": "basic", "username": "u", "password": "${SN_PASSWORD}"}}}
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = url
    config = write_config(tmp_path / "c.yaml", data)
    for json_output in (False, True):
        result = run_sncli(config, "config", "show", json_output=json_output, env=CANARY)
        assert result.code == 0, result.stderr
        assert url.split(":")[2].split("@")[0] not in result.stdout


# --------------------------------------------------------------------------- ${...} references and their values

BASIC_CONFIG: dict[str, Any] = {"servicenow": {"instance_url": "https://dev1.service-now.com",
                                               "auth": {"type": "basic", "username": "u",
                                                        "password": "${SN_PASSWORD}"}}}


def test_a_reference_in_a_field_that_is_no_secret_or_address_exits_2_naming_the_key(tmp_path: Path) -> None:
    """metrics.job becomes the Pushgateway's job label: a config author must not pull a secret into it."""
    config = write_config(tmp_path / "c.yaml", {**BASIC_CONFIG, "metrics": {"job": "${SN_PASSWORD}"}})
    result = run_sncli(config, "config", "validate", env=CANARY)
    assert_one_line_error(result, 2, "metrics.job: ${...} is not expanded here")
    assert CANARY["SN_PASSWORD"] not in result.output


def test_a_config_error_line_never_shows_an_expanded_value(tmp_path: Path) -> None:
    data = copy.deepcopy(BASIC_CONFIG)
    data["servicenow"]["instance_url"] = "${SN_URL}"
    config = write_config(tmp_path / "c.yaml", data)
    result = run_sncli(config, "config", "validate", env={**CANARY, "SN_URL": "cAnary-URL-no-scheme.example"})
    assert_one_line_error(result, 2, "servicenow.instance_url:", "'***'")
    assert "cAnary" not in result.output


def test_config_show_hides_oauthbearer_config_and_every_expanded_value(tmp_path: Path) -> None:
    data = copy.deepcopy(BASIC_CONFIG)
    data["servicenow"]["auth"]["username"] = "${SN_USER}"
    data["kafka"] = {"client": {"sasl.mechanism": "OAUTHBEARER",
                                "sasl.oauthbearer.config": "clientId=sncli clientSecret=cAnary-OAUTHBEARER-3d"}}
    config = write_config(tmp_path / "c.yaml", data)
    env = {**CANARY, "SN_USER": "cAnary-USER-6a0f"}
    for json_output in (False, True):
        result = run_sncli(config, "config", "show", json_output=json_output, env=env)
        assert result.code == 0, result.stderr
        assert "OAUTHBEARER" in result.stdout and "cAnary" not in result.output

