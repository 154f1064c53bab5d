"""resolve(): which ServiceNow write a Kafka record asks for, and which records are errors."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sncli.config import SinkTopic
from sncli.servicenow.fields import is_system_field
from sncli.sink.resolve import (
    RESERVED_FIELDS,
    InRecord,
    RecordError,
    Skip,
    Write,
    lane_key,
    resolve,
)

SID = "0123456789abcdef0123456789abcdef"
SID2 = "fedcba9876543210fedcba9876543210"


def topic(**kw: Any) -> SinkTopic:
    return SinkTopic.model_validate({"topic": "changes", "table": "incident", **kw})


def rec(
    value: Any = None,
    *,
    raw: bytes | None = None,
    key: bytes | None = None,
    headers: tuple[tuple[str, bytes | None], ...] = (),
    tombstone: bool = False,
) -> InRecord:
    if tombstone:
        data = None
    elif raw is not None:
        data = raw
    else:
        data = orjson.dumps(value)
    return InRecord(topic="changes", partition=0, offset=5, key=key, value=data, headers=headers)


def error_of(record: InRecord, cfg: SinkTopic | None = None) -> RecordError:
    with pytest.raises(RecordError) as info:
        resolve(record, cfg or topic())
    return info.value


# --------------------------------------------------------------------------- operations


def test_value_without_sys_id_is_a_post_of_its_fields() -> None:
    plan = resolve(rec({"short_description": "disk full", "priority": 2}), topic())
    body = {"short_description": "disk full", "priority": "2"}
    assert plan == Write(op="POST", table="incident", sys_id=None, body=body)


def test_value_with_sys_id_is_a_patch_without_reserved_fields() -> None:
    value = {
        "sys_id": SID,
        "sys_created_on": "2024-01-01 00:00:00",
        "sys_created_by": "admin",
        "sys_updated_on": "2024-01-02 00:00:00",
        "sys_updated_by": "admin",
        "sys_mod_count": "4",
        "state": "2",
    }
    plan = resolve(rec(value), topic())
    assert plan == Write(op="PATCH", table="incident", sys_id=SID, body={"state": "2"})
    assert not set(plan.body) & RESERVED_FIELDS


def test_empty_sys_id_counts_as_absent() -> None:
    plan = resolve(rec({"sys_id": "", "state": "1"}), topic())
    assert isinstance(plan, Write) and plan.op == "POST" and "sys_id" not in plan.body


def test_record_with_only_reserved_fields_is_skipped_not_sent() -> None:
    plan = resolve(rec({"sys_id": SID, "sys_mod_count": "3"}), topic())
    assert plan == Skip(reason="no fields to write", table="incident", sys_id=SID)


def test_tombstone_is_skipped_unless_deletes_are_enabled() -> None:
    record = rec(tombstone=True, headers=(("sn.sys_id", SID.encode()),))
    plan = resolve(record, topic())
    assert isinstance(plan, Skip) and "tombstone" in plan.reason and plan.sys_id == SID
    assert resolve(record, topic(delete_on_tombstone=True)) == Write(op="DELETE", table="incident", sys_id=SID)


def test_tombstone_delete_takes_the_sys_id_from_the_key_when_configured() -> None:
    record = rec(tombstone=True, key=SID.encode())
    plan = resolve(record, topic(delete_on_tombstone=True, sys_id_from=["header", "key"]))
    assert plan == Write(op="DELETE", table="incident", sys_id=SID)


def test_tombstone_delete_without_any_sys_id_is_a_record_error() -> None:
    err = error_of(rec(tombstone=True, key=SID.encode()), topic(delete_on_tombstone=True))
    assert err.error_class == "record" and "tombstone" in err.message


# --------------------------------------------------------------------------- sys_id sources


def test_sys_id_order_value_then_header() -> None:
    record = rec({"sys_id": SID, "a": "1"}, headers=(("sn.sys_id", SID2.encode()),))
    assert resolve(record, topic()).sys_id == SID
    assert resolve(record, topic(sys_id_from=["header", "value"])).sys_id == SID2


def test_sys_id_from_header_when_value_has_none() -> None:
    record = rec({"a": "1"}, headers=(("sn.sys_id", SID.encode()),))
    plan = resolve(record, topic())
    assert isinstance(plan, Write) and plan.op == "PATCH" and plan.sys_id == SID


def test_last_header_wins_when_repeated() -> None:
    record = rec({"a": "1"}, headers=(("sn.sys_id", SID.encode()), ("sn.sys_id", SID2.encode())))
    assert resolve(record, topic()).sys_id == SID2


def test_key_is_only_used_when_listed() -> None:
    record = rec({"a": "1"}, key=SID.encode())
    assert resolve(record, topic()).sys_id is None
    assert resolve(record, topic(sys_id_from=["value", "key"])).sys_id == SID


@pytest.mark.parametrize(
    "bad",
    [SID.upper(), SID[:-1], SID + "0", "g" * 32, " " + SID[1:], "../" + SID[3:], SID[:16] + "^NQ" + SID[19:]],
)
def test_malformed_sys_id_in_value_is_a_record_error(bad: str) -> None:
    err = error_of(rec({"sys_id": bad, "a": "1"}))
    assert err.error_class == "record" and "32 lowercase hex" in err.message


def test_malformed_sys_id_is_not_silently_replaced_by_the_next_source() -> None:
    record = rec({"sys_id": "nope", "a": "1"}, headers=(("sn.sys_id", SID.encode()),))
    assert error_of(record).error_class == "record"


def test_non_string_sys_id_and_non_utf8_header_and_key_are_record_errors() -> None:
    assert error_of(rec({"sys_id": 12, "a": "1"})).error_class == "record"
    assert error_of(rec({"a": "1"}, headers=(("sn.sys_id", b"\xff\xfe"),))).error_class == "record"
    err = error_of(rec({"a": "1"}, key=b"\xff" * 32), topic(sys_id_from=["key"]))
    assert err.error_class == "record" and "key" in err.message


def test_sha256_field_key_is_not_a_sys_id() -> None:
    err = error_of(rec({"a": "1"}, key=b"a" * 64), topic(sys_id_from=["key"]))
    assert "32 lowercase hex" in err.message


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"\xff\xfe\x00", b"", b"{", b"[1, 2]", b'"text"', b"42", b"null", b"true", b"\x00\x00\x00\x00\x01"],
)
def test_anything_but_a_json_object_is_a_decode_error(raw: bytes) -> None:
    err = error_of(rec(raw=raw))
    assert err.error_class == "decode"


def test_custom_decoder_errors_pass_through_and_other_errors_propagate() -> None:
    def avro(value: bytes, topic_name: str) -> Any:
        if value.startswith(b"\x00"):
            return {"state": "7", "sys_id": SID}
        raise RecordError("decode", "unknown schema id")

    assert resolve(rec(raw=b"\x00abcd"), topic(), avro) == Write(op="PATCH", table="incident", sys_id=SID,
                                                                 body={"state": "7"})
    assert error_of_decoder(b"zzz", avro).error_class == "decode"

    def registry_down(value: bytes, topic_name: str) -> Any:
        raise ConnectionError("registry unreachable")

    with pytest.raises(ConnectionError):
        resolve(rec(raw=b"\x00abcd"), topic(), registry_down)


def error_of_decoder(raw: bytes, decoder: Any) -> RecordError:
    with pytest.raises(RecordError) as info:
        resolve(rec(raw=raw), topic(), decoder)
    return info.value


# --------------------------------------------------------------------------- field mapping


def test_scalars_become_servicenow_strings() -> None:
    value = {"i": 3, "f": 1.5, "t": True, "n": False, "z": None, "s": "x"}
    plan = resolve(rec(value), topic())
    assert plan.body == {"i": "3", "f": "1.5", "t": "true", "n": "false", "z": "", "s": "x"}


def test_avro_style_scalars_from_a_decoder() -> None:
    value = {
        "when": datetime(2024, 5, 1, 14, 0, 0, tzinfo=UTC),
        "day": date(2024, 5, 1),
        "amount": Decimal("12.50"),
    }
    plan = resolve(rec(raw=b"x"), topic(), lambda _v, _t: value)
    assert plan.body == {"when": "2024-05-01 14:00:00", "day": "2024-05-01", "amount": "12.50"}
    err = error_of_decoder(b"x", lambda _v, _t: {"blob": b"\x00\x01"})
    assert err.error_class == "record" and "blob" in err.message
    assert error_of_decoder(b"x", lambda _v, _t: {"n": float("nan")}).error_class == "record"


def test_include_exclude_and_rename() -> None:
    value = {"sys_id": SID, "a": "1", "b": "2", "c": "3", "secret": "s"}
    assert resolve(rec(value), topic(include_fields=["a", "b"])).body == {"a": "1", "b": "2"}
    assert resolve(rec(value), topic(exclude_fields=["secret"])).body == {"a": "1", "b": "2", "c": "3"}
    plan = resolve(rec(value), topic(include_fields=["a", "c"], rename={"a": "short_description", "c": "state"}))
    assert plan.body == {"short_description": "1", "state": "3"}


def test_include_or_rename_asking_for_a_sys_field_is_a_config_error_naming_it() -> None:
    with pytest.raises(ValidationError, match="include_fields sys_mod_count"):
        topic(include_fields=["sys_mod_count", "a"])
    with pytest.raises(ValidationError, match="a -> sys_updated_on"):
        topic(rename={"a": "sys_updated_on"})
    with pytest.raises(ValidationError, match="b -> SYS_Domain"):
        topic(rename={"b": "SYS_Domain"})


def test_rename_collisions_are_errors() -> None:
    err = error_of(rec({"a": "1", "b": "2"}), topic(rename={"a": "b"}))
    assert err.error_class == "record" and "'b'" in err.message


def test_every_sys_field_is_dropped_whatever_its_case_or_nesting() -> None:
    value = {
        "sys_id": SID, "sys_class_name": "cmdb_ci", "sys_domain": {"value": "g", "link": "l"},
        "sys_domain_path": "/", "sys_tags": "t", "SYS_SCOPE": "global", "Sys_Package": "p", "state": "2",
        "caller": {"sys_id": "x"},  # flattens to caller_sys_id: an ordinary field of the record
    }
    plan = resolve(rec(value), topic(nested="flatten"))
    assert plan == Write(op="PATCH", table="incident", sys_id=SID, body={"state": "2", "caller_sys_id": "x"})
    assert isinstance(resolve(rec({"sys_class_name": "x", "sys_tags": "y"}), topic()), Skip)


def test_a_sys_field_renamed_to_an_ordinary_one_is_kept_under_the_new_name() -> None:
    value = {"sys_id": SID, "sys_class_name": "cmdb_ci_server", "sys_domain": {"value": "g", "link": "l"}}
    cfg = topic(nested="flatten", include_fields=["sys_class_name", "sys_domain_value"],
                rename={"sys_class_name": "u_source_class", "sys_domain_value": "u_source_domain"})
    plan = resolve(rec(value), cfg)
    assert plan == Write(op="PATCH", table="incident", sys_id=SID,
                         body={"u_source_class": "cmdb_ci_server", "u_source_domain": "g"})


def test_a_write_cannot_be_built_with_a_sys_field() -> None:
    with pytest.raises(ValueError, match="sys_class_name"):
        Write(op="PATCH", table="incident", sys_id=SID, body={"sys_class_name": "x", "state": "1"})


def test_nested_reject_is_the_default() -> None:
    err = error_of(rec({"caller": {"name": "x"}}))
    assert err.error_class == "record" and "caller" in err.message and "flatten" in err.message
    assert error_of(rec({"tags": ["a"]})).error_class == "record"


def test_nested_flatten() -> None:
    value = {"caller": {"name": "ann", "dept": {"code": 7}}, "a": "1"}
    plan = resolve(rec(value), topic(nested="flatten"))
    assert plan.body == {"caller_name": "ann", "caller_dept_code": "7", "a": "1"}
    assert error_of(rec({"tags": ["a"]}), topic(nested="flatten")).error_class == "record"
    err = error_of(rec({"a_b": "1", "a": {"b": "2"}}), topic(nested="flatten"))
    assert "a_b" in err.message


def test_flattened_names_can_be_filtered_and_renamed() -> None:
    value = {"caller": {"name": "ann", "dept": "x"}}
    plan = resolve(rec(value), topic(nested="flatten", include_fields=["caller_name"], rename={"caller_name": "u"}))
    assert plan.body == {"u": "ann"}


def test_nested_stringify() -> None:
    value = {"caller": {"b": 1, "a": "x"}, "tags": ["p", 2]}
    plan = resolve(rec(value), topic(nested="stringify"))
    assert plan.body == {"caller": '{"a":"x","b":1}', "tags": '["p",2]'}


def test_reserved_nested_fields_do_not_trip_reject() -> None:
    value = {"sys_id": SID, "sys_updated_on": {"value": "x", "display_value": "y"}, "a": "1"}
    assert resolve(rec(value), topic()).body == {"a": "1"}


# --------------------------------------------------------------------------- routing


def test_routing_defaults_to_the_topic_table() -> None:
    assert resolve(rec({"a": "1"}), topic(table="problem")).table == "problem"


def test_header_routing_only_to_allowlisted_tables() -> None:
    cfg = topic(route_header="sn.table", allowed_tables=["problem", "change_request"])
    ok = rec({"a": "1"}, headers=(("sn.table", b"problem"),))
    assert resolve(ok, cfg).table == "problem"
    assert resolve(rec({"a": "1"}), cfg).table == "incident"  # no header: the topic's table
    assert resolve(rec({"a": "1"}, headers=(("sn.table", b"incident"),)), cfg).table == "incident"
    for bad in (b"sys_user", b"../sys_user", b"problem/../sys_user", b"PROBLEM", b"problem?x=1"):
        err = error_of(rec({"a": "1"}, headers=(("sn.table", bad),)), cfg)
        assert err.error_class == "record" and "allowed_tables" in err.message


def test_routing_header_is_ignored_when_not_configured() -> None:
    record = rec({"a": "1"}, headers=(("sn.table", b"sys_user"),))
    assert resolve(record, topic()).table == "incident"


def test_routing_error_applies_to_tombstones_too() -> None:
    cfg = topic(route_header="sn.table", allowed_tables=["problem"], delete_on_tombstone=True)
    record = rec(tombstone=True, headers=(("sn.table", b"sys_user"), ("sn.sys_id", SID.encode())))
    assert error_of(record, cfg).error_class == "record"


# --------------------------------------------------------------------------- lanes


def test_lane_key_prefers_the_kafka_key_then_the_sys_id_then_the_position() -> None:
    keyed = rec({"sys_id": SID, "a": "1"}, key=b"k1")
    assert lane_key(keyed, resolve(keyed, topic())) == b"k1"
    unkeyed = rec({"sys_id": SID, "a": "1"})
    assert lane_key(unkeyed, resolve(unkeyed, topic())) == SID.encode()
    anonymous = rec({"a": "1"})
    assert lane_key(anonymous, resolve(anonymous, topic())) == b"changes/0/5"
    assert lane_key(anonymous, None) == b"changes/0/5"


# --------------------------------------------------------------------------- properties

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=10),
                      st.floats(allow_nan=False, allow_infinity=False))
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=10,
)
header_names = st.sampled_from(["sn.sys_id", "sn.table", "other", "sncli.error.class"])
headers = st.lists(st.tuples(header_names, st.one_of(st.none(), st.binary(max_size=40))), max_size=4)
configs = st.builds(
    topic,
    sys_id_from=st.lists(st.sampled_from(["value", "header", "key"]), min_size=1, max_size=3, unique=True),
    delete_on_tombstone=st.booleans(),
    nested=st.sampled_from(["reject", "flatten", "stringify"]),
    route_header=st.just("sn.table"),
    allowed_tables=st.just(["problem"]),
)


@settings(max_examples=400, deadline=None)
@given(
    value=st.one_of(st.none(), st.binary(max_size=50), json_value.map(orjson.dumps),
                    st.dictionaries(st.text(max_size=8), json_value, max_size=6).map(orjson.dumps)),
    key=st.one_of(st.none(), st.binary(max_size=40), st.just(SID.encode())),
    hdrs=headers,
    cfg=configs,
)
def test_resolve_never_raises_anything_but_a_record_error(
    value: bytes | None, key: bytes | None, hdrs: list[tuple[str, bytes | None]], cfg: SinkTopic
) -> None:
    record = InRecord(topic="changes", partition=0, offset=1, key=key, value=value, headers=tuple(hdrs))
    try:
        plan = resolve(record, cfg)
    except RecordError as exc:
        assert exc.error_class in ("record", "decode")
        return
    assert plan.table in ("incident", "problem")
    if isinstance(plan, Write):
        assert not any(is_system_field(name) for name in plan.body)
        assert all(isinstance(v, str) for v in plan.body.values())
        assert plan.sys_id is None or len(plan.sys_id) == 32
        assert (plan.op == "POST") == (plan.sys_id is None)
        if value is None:
            assert plan.op == "DELETE"


@settings(max_examples=200, deadline=None)
@given(fields=st.dictionaries(
    st.sampled_from([*sorted(RESERVED_FIELDS), "sys_class_name", "sys_domain", "SYS_TAGS", "a", "b", "state"]),
    st.text(max_size=5),
))
def test_patch_body_is_exactly_the_non_system_fields(fields: dict[str, str]) -> None:
    value = {**fields, "sys_id": SID}
    plan = resolve(rec(value), topic())
    expected = {k: v for k, v in fields.items() if not k.lower().startswith("sys_")}
    if expected:
        assert plan == Write(op="PATCH", table="incident", sys_id=SID, body=expected)
    else:
        assert isinstance(plan, Skip)


# --------------------------------------------------------------------------- hostile input (issue 15, section 2)


def deeply_nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": "x"}
    for _ in range(depth):
        value = {"a": value}
    return value


def test_a_value_nested_a_thousand_deep_is_a_record_error_not_a_recursion_error() -> None:
    raw = b'{"a":' * 1000 + b'{"leaf":"x"}' + b"}" * 1000  # 6 KB; orjson reads up to 1024 levels
    assert len(raw) < 8 * 1024
    err = error_of(rec(raw=raw), topic(nested="flatten"))
    assert err.error_class == "record" and "deep" in err.message
    assert error_of(rec(raw=raw), topic(nested="stringify")).error_class == "record"


def test_flatten_keeps_working_within_the_depth_limit() -> None:
    plan = resolve(rec(deeply_nested(20)), topic(nested="flatten"))
    assert isinstance(plan, Write) and plan.body == {"_".join(["a"] * 20 + ["leaf"]): "x"}


@pytest.mark.parametrize("source", ["header", "key", "value"])
def test_a_sys_id_with_a_trailing_newline_is_a_record_error(source: str) -> None:
    bad = SID + "\n"
    if source == "header":
        record = rec({"a": "1"}, headers=(("sn.sys_id", bad.encode()),))
    elif source == "key":
        record = rec({"a": "1"}, key=bad.encode())
    else:
        record = rec({"sys_id": bad, "a": "1"})
    err = error_of(record, topic(sys_id_from=["value", "header", "key"]))
    assert err.error_class == "record" and "32 lowercase hex" in err.message


def test_a_routed_table_name_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ValueError):
        topic(route_header="sn.table", allowed_tables=["u_x\n"])
    err = error_of(rec({"a": "1"}, headers=(("sn.table", b"incident\n"),)),
                   topic(route_header="sn.table", allowed_tables=["u_x"]))
    assert err.error_class == "record"
