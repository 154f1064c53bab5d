"""DLQ records are signed and checked; header numbers are parsed strictly (issue 15, sections 1 and 2)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sncli.config import SinkSettings
from sncli.dlq.record import H_SIGNATURE, DeadLetterReason, Origin, dlq_headers
from sncli.dlq.select import Filters
from sncli.dlq.signing import DlqSigner
from sncli.errors import UsageError
from sncli.sink.replay import check_replay_trust

NOW = datetime(2024, 5, 1, 12, 30, 45, tzinfo=UTC)
KEY = "k" * 32
OLD_KEY = "o" * 32
SID = "0123456789abcdef0123456789abcdef"
Headers = list[tuple[str, bytes | None]]


def signer(*keys: str) -> DlqSigner:
    current = keys[0] if keys else None
    previous = keys[1] if len(keys) > 1 else None
    return DlqSigner.of(SinkSettings.model_validate(
        {"dlq_signing_key": current, "dlq_previous_signing_key": previous}))


def signed_record(by: DlqSigner) -> tuple[bytes | None, bytes | None, Headers]:
    original: Headers = [("sn.table", b"u_x"), ("sn.sys_id", SID.encode())]
    headers = dlq_headers(original, DeadLetterReason("permission", "403", status=403, table="u_x"),
                          Origin("public.incidents", 0, 7), now=NOW)
    return b"k", b'{"a": "1"}', by.sign(b"k", b'{"a": "1"}', headers)


def replace_header(headers: Headers, name: str, value: bytes | None) -> Headers:
    return [(k, value if k == name else v) for k, v in headers]


def test_a_signed_record_verifies_and_its_signature_is_one_header_at_the_end() -> None:
    key, value, headers = signed_record(signer(KEY))
    assert [k for k, _ in headers].count(H_SIGNATURE) == 1 and headers[-1][0] == H_SIGNATURE
    assert signer(KEY).verify(key, value, headers) == "valid"
    assert KEY.encode() not in b"".join(v or b"" for _, v in headers)


@pytest.mark.parametrize("header", [
    "sncli.error.topic", "sncli.error.partition", "sncli.error.offset", "sncli.error.table", "sncli.error.class",
    "sncli.error.attempts", "sncli.error.status", "sncli.error.timestamp", "sn.table", "sn.sys_id",
])
def test_changing_any_header_replay_trusts_breaks_the_signature(header: str) -> None:
    key, value, headers = signed_record(signer(KEY))
    assert signer(KEY).verify(key, value, replace_header(headers, header, b"hr.users")) == "invalid"


def test_changing_the_key_value_order_or_adding_a_header_breaks_the_signature() -> None:
    s = signer(KEY)
    key, value, headers = signed_record(s)
    assert s.verify(b"other", value, headers) == "invalid"
    assert s.verify(key, None, headers) == "invalid"  # a tombstone: a DELETE
    assert s.verify(None, value, headers) == "invalid"
    assert s.verify(b"", value, headers) == "invalid"  # empty is not absent
    assert s.verify(key, value, [headers[1], headers[0], *headers[2:]]) == "invalid"  # the last sn.table wins
    assert s.verify(key, value, [*headers[:-1], ("sn.table", b"sys_user"), headers[-1]]) == "invalid"
    assert s.verify(key, value, [*headers, (H_SIGNATURE, headers[-1][1])]) == "invalid"  # two signatures


def test_bytes_cannot_move_between_parts() -> None:
    s = signer(KEY)
    headers = s.sign(b"ab", b"c", [])
    assert s.verify(b"a", b"bc", headers) == "invalid"
    named = s.sign(None, None, [("ab", b"c")])
    assert s.verify(None, None, [("a", b"bc"), named[-1]]) == "invalid"
    assert s.verify(None, None, named) == "valid"


def test_unsigned_wrong_key_and_no_key() -> None:
    key, value, headers = signed_record(signer(KEY))
    unsigned = [(k, v) for k, v in headers if k != H_SIGNATURE]
    assert signer(KEY).verify(key, value, unsigned) == "unsigned"
    assert signer("x" * 32).verify(key, value, headers) == "invalid"
    assert signer().verify(key, value, headers) == "unchecked"
    assert signer().verify(key, value, unsigned) == "unsigned"
    assert signer().sign(key, value, headers) == unsigned  # no key: nothing signed, no stale signature kept
    for garbage in (b"", b"v1:", b"v2:" + headers[-1][1][3:], headers[-1][1].upper(), None):  # type: ignore[index]
        assert signer(KEY).verify(key, value, replace_header(headers, H_SIGNATURE, garbage)) == "invalid"


def test_a_rotated_key_still_verifies_and_the_new_one_signs() -> None:
    key, value, headers = signed_record(signer(OLD_KEY))
    rotated = signer(KEY, OLD_KEY)
    assert rotated.verify(key, value, headers) == "valid"
    assert signer(KEY).verify(key, value, headers) == "invalid"
    fresh = rotated.sign(key, value, headers)
    assert signer(KEY).verify(key, value, fresh) == "valid"


@settings(max_examples=100, deadline=None)
@given(
    key=st.one_of(st.none(), st.binary(max_size=20)),
    value=st.one_of(st.none(), st.binary(max_size=40)),
    headers=st.lists(st.tuples(st.text(max_size=8), st.one_of(st.none(), st.binary(max_size=8))), max_size=4),
    flip=st.integers(0, 10_000),
)
def test_any_single_byte_flip_is_detected(
    key: bytes | None, value: bytes | None, headers: Headers, flip: int
) -> None:
    s = signer(KEY)
    signed = s.sign(key, value, headers)
    assert s.verify(key, value, signed) == "valid"
    if value:
        i = flip % len(value)
        changed = value[:i] + bytes([value[i] ^ 1]) + value[i + 1:]
        assert s.verify(key, changed, signed) == "invalid"


def test_signing_keys_are_checked_in_the_config() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        SinkSettings.model_validate({"dlq_signing_key": "short"})
    with pytest.raises(ValueError, match="needs dlq_signing_key"):
        SinkSettings.model_validate({"dlq_previous_signing_key": OLD_KEY})
    assert "k" * 32 not in repr(SinkSettings.model_validate({"dlq_signing_key": KEY}))


def test_replay_without_a_key_needs_the_operator_to_vouch_for_one_topic() -> None:
    with pytest.raises(UsageError, match="dlq_signing_key"):
        check_replay_trust(signer(), Filters(), trust_unsigned=False)
    with pytest.raises(UsageError, match="--topic"):
        check_replay_trust(signer(KEY), Filters(), trust_unsigned=True)
    check_replay_trust(signer(), Filters(topic="public.incidents"), trust_unsigned=True)
    check_replay_trust(signer(KEY), Filters(), trust_unsigned=False)


def test_the_signing_keys_are_secrets_in_logs_and_config_show() -> None:
    from sncli.config import parse_settings

    data = {"servicenow": {"instance_url": "https://x.service-now.com",
                           "auth": {"type": "basic", "username": "u", "password": "${PW}"}},
            "sink": {"dlq_signing_key": "${DLQ_KEY}", "dlq_previous_signing_key": "${OLD_KEY}"}}
    settings = parse_settings(data, {"PW": "pw-canary-123", "DLQ_KEY": KEY, "OLD_KEY": OLD_KEY})
    assert {KEY, OLD_KEY} <= set(settings.secret_values())  # registered for log redaction
    shown = str(settings.redacted())
    assert KEY not in shown and OLD_KEY not in shown
    assert DlqSigner.of(settings.sink).keys == (KEY.encode(), OLD_KEY.encode())
