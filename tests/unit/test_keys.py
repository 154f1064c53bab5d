"""Key strategies: sys_id as is; fields = SHA-256 hex of the values joined unambiguously."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from sncli.config import FieldsKey, SysIdKey
from sncli.source.keys import fields_digest, key_of, keys_of

SYS = SysIdKey(type="sys_id")
A = "a" * 32


def test_sys_id_key_is_the_sys_id_bytes() -> None:
    assert keys_of([{"sys_id": A}, {"sys_id": "b" * 32}], SYS) == [A.encode(), b"b" * 32]


def test_sys_id_key_unwraps_display_value_all() -> None:
    assert key_of({"sys_id": {"value": A, "display_value": A}}, SYS) == A.encode()


def test_fields_key_is_sha256_hex_of_the_length_prefixed_values() -> None:
    strategy = FieldsKey(type="fields", fields=["company", "location"])
    key = key_of({"company": "acme", "location": "paris", "sys_id": A}, strategy)
    expected = hashlib.sha256(b"4:acme;5:paris;").hexdigest().encode()
    assert key == expected
    assert len(key) == 64


def test_fields_key_ignores_other_fields_and_is_stable() -> None:
    strategy = FieldsKey(type="fields", fields=["company"])
    one = key_of({"company": "acme", "sys_id": A}, strategy)
    two = key_of({"company": "acme", "sys_id": "b" * 32, "short_description": "x"}, strategy)
    assert one == two


def test_fields_key_order_of_fields_matters() -> None:
    rec = {"company": "acme", "location": "paris"}
    assert key_of(rec, FieldsKey(type="fields", fields=["company", "location"])) != key_of(
        rec, FieldsKey(type="fields", fields=["location", "company"])
    )


def test_missing_field_differs_from_empty_field() -> None:
    strategy = FieldsKey(type="fields", fields=["company"])
    assert key_of({}, strategy) != key_of({"company": ""}, strategy)


def test_fields_key_uses_reference_values_not_display_values() -> None:
    strategy = FieldsKey(type="fields", fields=["company"])
    assert key_of({"company": {"value": "123", "display_value": "ACME"}}, strategy) == key_of(
        {"company": "123"}, strategy
    )


@given(st.lists(st.one_of(st.none(), st.text(max_size=6)), min_size=1, max_size=4),
       st.lists(st.one_of(st.none(), st.text(max_size=6)), min_size=1, max_size=4))
def test_join_is_unambiguous(a: list[str | None], b: list[str | None]) -> None:
    """Different value tuples never produce the same digest input (so only SHA-256 collisions could collide)."""
    if a != b:
        assert fields_digest(a) != fields_digest(b)
    else:
        assert fields_digest(a) == fields_digest(b)


def test_separator_inside_values_cannot_collide() -> None:
    assert fields_digest(["a;1:b", "c"]) != fields_digest(["a", "b;1:c"])
    assert fields_digest(["ab", ""]) != fields_digest(["a", "b"])
