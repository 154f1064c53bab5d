"""Bad input never crashes sncli: configs, record values, query values, routed table names.

- The config loader: random YAML documents, random mutations of a valid config
  (wrong types, unknown keys, deleted keys, unset ``${VAR}``s) at random key
  paths. Every failure is a ConfigError (exit 2) whose message is one line and
  starts with the key path it is about; nothing else ever escapes.
- The CLI: ``sncli config validate`` on bad files exits 2 with one error line
  on stderr and no traceback.
- The sink's decoder + resolve (the real decoder of a drain, Avro magic byte
  included) raise nothing but RecordError.
- Encoded-query injection, proven on the emulator: a value with ``^``/``^NQ``
  in a correlation lookup cannot widen the lookup, and a base query with
  ``^NQ`` cannot widen a poll beyond its cursor window.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sncli.config import KafkaSettings, SinkTopic, load_settings, parse_settings
from sncli.emulator.faults import Fault
from sncli.emulator.server import ServiceNowEmulator
from sncli.errors import ConfigError, ExitCode
from sncli.servicenow.fields import is_system_field
from sncli.sink.decode import make_decoder
from sncli.sink.resolve import InRecord, RecordError, Write, resolve
from tests.reliability.support import BASIC, assert_one_line_error, run_sncli, source_config

ENV = {"SN_PASSWORD": "pw-from-env", "SN_CLIENT_SECRET": "cs-from-env"}  # shorter values cannot be masked

BASE: dict[str, Any] = {
    "servicenow": {
        "instance_url": "https://dev1.service-now.com",
        "auth": {"type": "basic", "username": "admin", "password": "${SN_PASSWORD}"},
        "timeout_seconds": 30,
        "rate_limit": {"requests_per_second": 20, "burst": 40},
        "retry": {"max_attempts": 8, "initial_backoff_ms": 100, "max_backoff_ms": 30000, "max_elapsed_seconds": 300},
        "tls": {"verify": True, "ca_bundle": None},
        "proxy": None,
    },
    "kafka": {
        "bootstrap_servers": "127.0.0.1:9092",
        "client": {"linger.ms": 5},
        "schema_registry": {"url": None},
        "topics": {"create": True, "partitions": 6},
    },
    "offsets": {"store": "file", "path": "./offsets.json"},
    "metrics": {"pushgateway": None, "job": "sncli"},
    "source": {
        "page_size": 1000,
        "safety_lag_seconds": 2,
        "format": "json",
        "tables": [
            {"name": "incident", "topic": "servicenow.incident", "timestamp_field": "sys_updated_on",
             "key": {"type": "sys_id"}, "start": "1970-01-01 00:00:00"},
            {"name": "problem", "topic": "servicenow.problem", "query": "active=true",
             "fields": ["sys_id", "sys_updated_on", "company"], "key": {"type": "fields", "fields": ["company"]}},
        ],
    },
    "sink": {
        "group_id": "sncli-sink",
        "workers": 8,
        "dlq_topic": "servicenow.dlq",
        "topics": [
            {"topic": "changes", "table": "incident", "ambiguous": "lookup", "correlation_field": "u_ext",
             "route_header": "sn.table", "allowed_tables": ["problem"], "rename": {"a": "b"}},
        ],
    },
}
OAUTH = {"type": "oauth", "grant_type": "password", "client_id": "sncli", "client_secret": "${SN_CLIENT_SECRET}",
         "username": "admin", "password": "${SN_PASSWORD}"}

Path_ = tuple[str | int, ...]


def test_the_base_configs_are_valid() -> None:
    """The fuzz mutates valid documents, so an error is caused by the mutation."""
    assert parse_settings(copy.deepcopy(BASE), ENV).source.table_names() == ["incident", "problem"]
    oauth = copy.deepcopy(BASE)
    oauth["servicenow"]["auth"] = dict(OAUTH)
    assert parse_settings(oauth, ENV).servicenow.auth.type == "oauth"


# --------------------------------------------------------------------------- paths


def render(path: Path_) -> str:
    """A key path the way sncli's messages write it: ``source.tables[0].name``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            # Keys that would be invisible or break the line (spaces at the ends, newlines,
            # control characters) are shown quoted, as repr() does.
            shown = part if part.isprintable() and part.strip() == part and part else repr(part)
            text += f".{shown}" if text else shown
    return text or "<root>"


def all_paths(node: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from all_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield (*prefix, index)
            yield from all_paths(value, (*prefix, index))


def dict_paths(node: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    if isinstance(node, dict):
        yield prefix
        for key, value in node.items():
            yield from dict_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from dict_paths(value, (*prefix, index))


def string_paths(node: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    if isinstance(node, str) and prefix:
        yield prefix
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from string_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from string_paths(value, (*prefix, index))


def get_at(doc: Any, path: Path_) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def set_at(doc: Any, path: Path_, value: Any) -> None:
    get_at(doc, path[:-1])[path[-1]] = value


def delete_at(doc: Any, path: Path_) -> None:
    del get_at(doc, path[:-1])[path[-1]]


def config_error(raw: Any, env: dict[str, str] | None = None) -> str | None:
    """None if ``raw`` is valid; else the ConfigError's message, checked to be one line. Nothing else may escape."""
    try:
        parse_settings(raw, ENV if env is None else env)
    except ConfigError as exc:
        assert exc.exit_code == ExitCode.USAGE
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        assert ": " in message, message
        return message
    return None


def about(message: str, path: Path_) -> bool:
    """The message names the changed place: it, something below it, a sibling (a cross-field rule, a
    changed union tag), or the model that holds it (a model-level rule, reported at the model)."""
    reported = where(message)
    return is_within(reported, render(path[:-1])) or (reported != "<root>" and is_within(render(path), reported))


def where(message: str) -> str:
    """The key path a message starts with (everything before its first ': ')."""
    return message.split(": ", 1)[0]


def is_within(reported: str, region: str) -> bool:
    """``reported`` is ``region`` or below it (``region`` <root> contains everything)."""
    if region == "<root>":
        return True
    return reported == region or reported.startswith((region + ".", region + "["))


# --------------------------------------------------------------------------- strategies

safe_keys = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.sampled_from(["", "basic", "oauth", "file", "s3", "${NOPE}", "http://x", "-1", "1e999"]),
)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.one_of(safe_keys, st.integers()), inner,
                                                                         max_size=3)),
    max_leaves=8,
)
bases = st.sampled_from(["basic", "oauth"])


def base_doc(kind: str) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    if kind == "oauth":
        doc["servicenow"]["auth"] = dict(OAUTH)
    return doc


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- config fuzz


@FUZZ
@given(kind=bases, data=st.data(), value=junk)
def test_a_wrong_value_anywhere_is_a_config_error_about_that_place(kind: str, data: st.DataObject, value: Any) -> None:
    doc = base_doc(kind)
    path = data.draw(st.sampled_from(list(all_paths(doc))))
    set_at(doc, path, value)
    message = config_error(doc)
    if message is None:
        return  # some replacements are valid (another bool, a number in range, null for an optional key)
    assert about(message, path), (render(path), message)


@FUZZ
# Keys starting with "[" (shown like a list index) or holding ": " (the message's own separator) would make
# the path ambiguous to read back here; sncli still names them, so they are left out of this property.
@given(kind=bases, data=st.data(), value=junk,
       key=st.text(min_size=1, max_size=12).filter(lambda k: not k.startswith("[") and ": " not in k))
def test_an_unknown_key_anywhere_is_named_with_its_full_path(
    kind: str, data: st.DataObject, key: str, value: Any
) -> None:
    doc = base_doc(kind)
    parent = data.draw(st.sampled_from([p for p in dict_paths(doc) if p[-1:] not in (("client",), ("rename",))]))
    target = get_at(doc, parent)
    if key in target:
        return
    target[key] = value
    message = config_error(doc)
    assert message is not None, f"unknown key {render((*parent, key))} was accepted"
    path = render((*parent, key))
    assert is_within(where(message), path), message
    assert message.startswith(f"{path}: unknown key") or "environment variable" in message, message


@FUZZ
@given(kind=bases, data=st.data())
def test_a_deleted_key_is_either_optional_or_named_as_missing(kind: str, data: st.DataObject) -> None:
    doc = base_doc(kind)
    path = data.draw(st.sampled_from([p for p in all_paths(doc) if isinstance(p[-1], str)]))
    delete_at(doc, path)
    message = config_error(doc)
    if message is not None:
        assert about(message, path), (render(path), message)


#: The text fields of BASE / OAUTH that may be ${...}: secrets, addresses, user names. Anywhere else a
#: reference is refused, so a config author cannot pull a variable or file into what sncli prints.
EXPANDING_PATHS = {
    ("servicenow", "instance_url"), ("servicenow", "auth", "username"), ("servicenow", "auth", "password"),
    ("servicenow", "auth", "client_id"), ("servicenow", "auth", "client_secret"), ("kafka", "bootstrap_servers"),
}


@FUZZ
@given(kind=bases, data=st.data(), var=st.from_regex(r"[A-Z_][A-Z0-9_]{0,15}", fullmatch=True))
def test_an_unset_env_var_anywhere_names_the_variable_and_the_key(kind: str, data: st.DataObject, var: str) -> None:
    doc = base_doc(kind)
    path = data.draw(st.sampled_from(list(string_paths(doc))))
    set_at(doc, path, "${" + var + "}")
    env = {k: v for k, v in ENV.items() if k != var}
    message = config_error(doc, env)
    if path not in EXPANDING_PATHS:
        assert message is not None and message.startswith(f"{render(path)}: ${{...}} is not expanded here"), message
        return
    if var in ENV:
        return
    assert message == f"{render(path)}: environment variable {var} is not set"


@FUZZ
@given(doc=st.one_of(junk, st.dictionaries(st.sampled_from(list(BASE)) | safe_keys, junk, max_size=6)))
def test_any_yaml_document_is_valid_or_one_config_error(doc: Any) -> None:
    text = yaml.safe_dump(doc)
    config_error(yaml.safe_load(text))


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                      st.builds(lambda a, b: a + b, st.sampled_from(["servicenow:\n  ", "source: {tables: [", "a: ["]),
                                st.text(max_size=60))))
def test_any_file_content_is_valid_or_one_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        try:
            load_settings(path, ENV)
        except ConfigError as exc:
            assert str(exc) and "\n" not in str(exc), repr(str(exc))


# --------------------------------------------------------------------------- config: product bugs found by the fuzz


def test_a_yaml_alias_cycle_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "cycle.yaml"
    path.write_text("servicenow: &x\n  nested: *x\n")
    with pytest.raises(ConfigError):
        load_settings(path, ENV)


def test_an_unknown_key_with_a_newline_still_gives_one_line() -> None:
    doc = base_doc("basic")
    doc["source"]["bad\nkey"] = 1
    assert config_error(doc) is not None


def test_an_unknown_key_next_to_a_fields_key_is_named_rightly() -> None:
    doc = base_doc("basic")
    doc["source"]["tables"][1]["key"]["colour"] = "red"
    assert config_error(doc) == "source.tables[1].key.colour: unknown key"


def test_an_unquoted_start_timestamp_is_accepted_or_explained(tmp_path: Path) -> None:
    doc = base_doc("basic")
    text = yaml.safe_dump(doc).replace("start: '1970-01-01 00:00:00'", "start: 2024-01-01 00:00:00")
    assert "start: 2024-01-01 00:00:00" in text
    path = tmp_path / "c.yaml"
    path.write_text(text)
    try:
        settings_ = load_settings(path, ENV)
    except ConfigError as exc:
        assert "quote" in str(exc).lower(), str(exc)
    else:
        assert settings_.source.tables[0].start == "2024-01-01 00:00:00"


# --------------------------------------------------------------------------- config: the CLI


CLI_CASES: dict[str, tuple[str | bytes, str]] = {
    "unknown key": ("servicenow: {instance_url: 'http://x', auth: {type: basic, username: a, password: b}}\n"
                    "source: {page_sise: 5}\n", "source.page_sise: unknown key"),
    "wrong type": ("servicenow: {instance_url: 'http://x', auth: {type: basic, username: a, password: b},"
                   " retry: {max_attempts: many}}\n", "servicenow.retry.max_attempts"),
    "missing env var": ("servicenow: {instance_url: 'http://x', auth: {type: basic, username: a,"
                        " password: '${SNCLI_H9_UNSET_VAR}'}}\n", "SNCLI_H9_UNSET_VAR"),
    "invalid yaml": ("servicenow: [unclosed\n", "line"),
    "not a mapping": ("- just\n- a list\n", "<root>"),
    "empty": ("", "empty"),
    "binary garbage": (bytes(range(256)) * 4, "c.yaml"),
    "bad auth type": ("servicenow: {instance_url: 'http://x', auth: {type: kerberos}}\n", "servicenow.auth"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_config_validate_exits_2_with_one_line_and_no_traceback(case: str, tmp_path: Path) -> None:
    content, needle = CLI_CASES[case]
    path = tmp_path / "c.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    result = run_sncli(path, "config", "validate")
    assert_one_line_error(result, 2, needle)
    assert result.stdout == ""


@pytest.mark.e2e
def test_a_missing_config_file_and_a_directory_exit_2(tmp_path: Path) -> None:
    assert_one_line_error(run_sncli(tmp_path / "absent.yaml", "config", "validate"), 2, "not found")
    assert_one_line_error(run_sncli(tmp_path, "config", "validate"), 2, str(tmp_path))


@pytest.mark.e2e
def test_config_validate_on_an_alias_cycle_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("servicenow: &x [*x]\n")
    assert_one_line_error(run_sncli(path, "config", "validate"), 2)


# --------------------------------------------------------------------------- sink decoder + resolve


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=8),
                      st.floats(allow_nan=False, allow_infinity=False))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=10)
values = st.one_of(
    st.none(),
    st.binary(max_size=64),
    st.binary(max_size=64).map(lambda b: b"\x00" + b),  # Confluent wire-format magic byte, then anything
    st.builds(lambda sid, rest: b"\x00" + sid.to_bytes(4, "big") + rest, st.integers(0, 2**32 - 1),
              st.binary(max_size=32)),
    json_value.map(orjson.dumps),
    st.dictionaries(st.sampled_from(["sys_id", "a", "u_ext", "sys_updated_on", "nested"]), json_value,
                    max_size=5).map(orjson.dumps),
    st.just(b'{"a": NaN}'), st.just(b'{"a": 1e999}'), st.just(b"\xef\xbb\xbf{}"), st.just(b'{"a":"\xff"}'),
    st.just(b'{"a": 123456789012345678901234567890}'), st.just(b'{"sys_id": 1}'), st.just(b'[]'),
)
headers = st.lists(st.tuples(st.sampled_from(["sn.sys_id", "sn.table", "x"]),
                             st.one_of(st.none(), st.binary(max_size=34),
                                       st.sampled_from([b"problem", b"sys_user", b"incident", b"../sys_user"]))),
                   max_size=4)


@settings(max_examples=400, deadline=None)
@given(value=values, key=st.one_of(st.none(), st.binary(max_size=40)), hdrs=headers,
       nested=st.sampled_from(["reject", "flatten", "stringify"]), tombstones=st.booleans())
def test_the_drains_own_decoder_and_resolve_raise_only_record_errors(
    value: bytes | None, key: bytes | None, hdrs: list[tuple[str, bytes | None]], nested: str, tombstones: bool
) -> None:
    """Beyond tests/unit/test_resolve.py's fuzz (JSON decoder): the decoder a drain really builds."""
    topic = SinkTopic(topic="changes", table="incident", nested=nested, delete_on_tombstone=tombstones,  # type: ignore[arg-type]
                      route_header="sn.table", allowed_tables=["problem"], sys_id_from=["value", "header", "key"])
    decode = make_decoder(KafkaSettings())  # no registry: an Avro-framed value is a record error, not a crash
    record = InRecord("changes", 0, 7, key, value, tuple(hdrs))
    try:
        plan = resolve(record, topic, decode)
    except RecordError as exc:
        assert exc.error_class in ("record", "decode")
        assert "\n" not in exc.message
        return
    assert plan.table in ("incident", "problem")
    if isinstance(plan, Write):
        assert all(isinstance(v, str) for v in plan.body.values())
        assert not any(is_system_field(name) for name in plan.body)


# --------------------------------------------------------------------------- query injection on the emulator


INJECTIONS = ["x^NQactive=true", "x^ORactive=true", "x^NQsys_idISNOTEMPTY", "^NQ", "x^^NQactive=true^EQ",
              "x^ORDERBYsys_id^NQactive=true"]


@pytest.mark.integration
def test_a_correlation_lookup_value_cannot_widen_the_lookup(emulator: ServiceNowEmulator) -> None:
    """ambiguous: lookup searches by the record's correlation value; one with ``^`` in it is never sent.

    An unescaped ``u_ext=x^NQactive=true`` would match every active record: the
    lookup would then see 2+ matches (or, worse, adopt a stranger's sys_id and
    PATCH it). ServiceNow documents no escape for ``^`` (the ``^^`` sncli used to
    send was only ever shown to work on its own emulator), so such a value is not
    looked up at all: the write stays ambiguous and is dead-lettered for an
    operator, and no query carries the value.
    """
    from sncli.config import ServiceNowSettings
    from sncli.servicenow.client import ServiceNowClient
    from sncli.sink.writer import WriteFailed, apply_write

    emulator.state.bulk_insert("incident", [{"u_ext": f"other-{i}", "active": "true"} for i in range(5)])
    cfg = ServiceNowSettings(instance_url=emulator.url, auth=BASIC, rate_limit=None, timeout_seconds=1,  # type: ignore[arg-type]
                             retry={"max_attempts": 2, "initial_backoff_ms": 1, "max_backoff_ms": 5})  # type: ignore[arg-type]
    topic = SinkTopic(topic="changes", table="incident", ambiguous="lookup", correlation_field="u_ext")
    client = ServiceNowClient(cfg)
    try:
        for value in INJECTIONS:
            emulator.state.clear_journal()
            # The first POST is dropped before it is applied (reset): its outcome is unknown to the writer.
            emulator.state.faults.add(Fault(kind="reset", method="POST", table="incident", times=1))
            with pytest.raises(WriteFailed) as failed:
                apply_write(client, Write(op="POST", table="incident", sys_id=None,
                                          body={"u_ext": value, "active": "true"}), topic)
            assert failed.value.failure.error_class == "ambiguous"
            assert "may not contain '^'" in failed.value.failure.message
            assert [e for e in emulator.state.journal() if e.method == "GET"] == []  # no lookup sent
            emulator.state.faults.clear()
        others = [r for r in emulator.state.records("incident") if r.get("u_ext", "").startswith("other-")]
        assert len(others) == 5 and all(r["sys_mod_count"] == "0" for r in others)  # never patched
        assert not [r for r in emulator.state.records("incident") if r.get("u_ext") in INJECTIONS]
    finally:
        client.close()


@pytest.mark.integration
def test_a_base_query_with_nq_cannot_widen_a_poll_beyond_its_cursor_window(
    emulator: ServiceNowEmulator, tmp_path: Path
) -> None:
    """``base = a^NQb`` must mean (a OR b) AND window; ``base^window`` would fetch every ``a`` record again."""
    from sncli.source.cycle import run_poll

    emulator.state.bulk_insert("incident", [{"priority": "1", "active": "true"} for _ in range(20)],
                               at="2020-01-01 00:00:00")
    emulator.state.bulk_insert("incident", [{"priority": "2", "active": "false"} for _ in range(10)],
                               at="2021-01-01 00:00:00")
    offsets = tmp_path / "offsets.json"
    cfg = source_config(emulator.url, "127.0.0.1:1", offsets,
                        [{"name": "incident", "topic": "t-nq", "query": "priority=1^NQactive=false",
                          "start": "2020-06-01 00:00:00"}], page_size=7)
    summary = run_poll(parse_settings(cfg, {}), dry_run=True)  # dry run: fetch and count, no Kafka needed
    assert summary.exit_code == 0, summary.to_json()
    assert summary.tables["incident"].records == 10  # only the 2021 records; the 2020 priority=1 ones are before start
    queries = [e.query["sysparm_query"] for e in emulator.state.journal()
               if e.method == "GET" and e.table == "incident" and "sysparm_query" in e.query]
    assert queries and all("sysparm_offset" not in e.query for e in emulator.state.journal())
    for q in queries:
        clauses = q.split("^NQ")
        assert all("sys_updated_on" in c for c in clauses), q  # the window is in every clause


def test_route_header_to_a_table_outside_the_allowlist_is_refused_before_any_request() -> None:
    """Header routing is pure: a record naming ``sys_user`` is a RecordError (DLQ), never a request to it."""
    topic = SinkTopic(topic="changes", table="incident", route_header="sn.table", allowed_tables=["problem"])
    for name in [b"sys_user", b"../sys_user", b"problem/../sys_user", b"PROBLEM", b"problem\x00", b"sys_user?x=1"]:
        record = InRecord("changes", 0, 1, None, b'{"a": "1"}', (("sn.table", name),))
        with pytest.raises(RecordError) as info:
            resolve(record, topic)
        assert info.value.error_class == "record"
    allowed = resolve(InRecord("changes", 0, 1, None, b'{"a": "1"}', (("sn.table", b"problem"),)), topic)
    assert allowed.table == "problem"
