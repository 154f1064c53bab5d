"""What each config field holds, and so whether it may be a ``${...}`` reference and how it is masked.

The one model of secrets: a ``SecretStr`` field is a secret, a field annotated
with :data:`EXPANDS` an address or a user name, and a mapping annotated with
:class:`EntryRoles` takes each entry's role from its key. The walks here work
on any settings model: every secret for masking, a redacted dump for output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from types import UnionType
from typing import Any, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from sncli.logs import REDACTED, mask_url_passwords


class Role(IntEnum):
    """What a config field holds, which decides whether it may be a ``${...}`` reference and is masked.

    The one model of secrets: every ``SecretStr`` field is a SECRET (a new secret
    key needs nothing more than that type), a field annotated with :data:`EXPANDS`
    holds an address or a user name, and the entries of ``kafka.client`` take
    their role from their key (:func:`client_key_role`).
    """

    PLAIN = 0  # literal only: a ${...} here is a config error
    EXPANDS = 1  # an address or a user name: may be ${...}; masked in output when it is
    SECRET = 2  # may be ${...}; always masked in output, *** in `config show`


#: Field metadata: an address or a user name, which may come from the environment or a file.
EXPANDS = Role.EXPANDS


@dataclass(frozen=True)
class EntryRoles:
    """Field metadata for a mapping of settings passed through: each entry's role comes from its key."""

    of: Callable[[str], Role]


#: kafka.client keys that say "sasl" but name a mechanism or a service, not a credential (short, common
#: values such as PLAIN or kafka, which masking would garble everywhere).
_CLIENT_PLAIN = frozenset({
    "sasl.mechanism", "sasl.mechanisms", "sasl.oauthbearer.method", "sasl.kerberos.service.name",
    "sasl.kerberos.min.time.before.relogin", "enable.sasl.oauthbearer.unsecure.jwt",
})
#: kafka.client keys that name an identity: may be ${...}, like servicenow.auth.username.
_CLIENT_IDENTITY = frozenset({"sasl.username", "sasl.oauthbearer.client.id", "sasl.kerberos.principal"})
_CLIENT_SECRET_WORDS = ("sasl", "password", "secret", "token", "oauthbearer", "credential", "ssl.key.pem")


def client_key_role(key: str) -> Role:
    """The role of a librdkafka setting under ``kafka.client``, from its key."""
    lowered = key.lower()
    if lowered in _CLIENT_PLAIN:
        return Role.PLAIN
    if lowered in _CLIENT_IDENTITY:
        return Role.EXPANDS
    return Role.SECRET if any(word in lowered for word in _CLIENT_SECRET_WORDS) else Role.PLAIN


def role_of_field(info: FieldInfo) -> Role:
    if SecretStr in types_in(info.annotation):
        return Role.SECRET
    return max((m for m in info.metadata if isinstance(m, Role)), default=Role.PLAIN)


def entry_roles_of(info: FieldInfo) -> EntryRoles | None:
    return next((m for m in info.metadata if isinstance(m, EntryRoles)), None)


def types_in(annotation: object) -> list[object]:
    """The types a field's annotation holds: union members and list items unwrapped."""
    if get_origin(annotation) in (Union, UnionType, list):
        return [t for arg in get_args(annotation) for t in types_in(arg)]
    return [annotation]


def models_in(info: FieldInfo) -> tuple[type[BaseModel], ...]:
    return tuple(t for t in types_in(info.annotation) if isinstance(t, type) and issubclass(t, BaseModel))


def walk_roles(model: BaseModel) -> Iterator[tuple[Role, str]]:
    """Every text value of the settings with its role; secrets revealed, for masking."""
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        entries = entry_roles_of(info)
        if isinstance(value, dict) and entries is not None:
            yield from ((entries.of(str(k)), v) for k, v in value.items() if isinstance(v, str))
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, BaseModel):
                yield from walk_roles(item)
            elif isinstance(item, SecretStr):
                yield Role.SECRET, item.get_secret_value()
            elif isinstance(item, str):
                yield role_of_field(info), item


def redacted_dump(model: BaseModel, dump: dict[str, Any]) -> dict[str, Any]:
    """``dump`` (the model's JSON dump) with its secrets as ``***``, walked along the model that knows them."""
    shown: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        value, data = getattr(model, name), dump[name]
        entries = entry_roles_of(info)
        if isinstance(value, SecretStr):
            shown[name] = REDACTED if value.get_secret_value() else ""
        elif isinstance(value, BaseModel):
            shown[name] = redacted_dump(value, data)
        elif isinstance(value, list):
            shown[name] = [redacted_dump(v, d) if isinstance(v, BaseModel) else shown_plain(d)
                           for v, d in zip(value, data, strict=True)]
        elif isinstance(value, dict) and entries is not None:
            shown[name] = {k: REDACTED if entries.of(str(k)) is Role.SECRET else shown_plain(d)
                           for k, d in data.items()}
        else:
            shown[name] = shown_plain(data)
    return shown


def shown_plain(data: Any) -> Any:
    if isinstance(data, str):
        return mask_url_passwords(data)
    if isinstance(data, list):
        return [shown_plain(d) for d in data]
    if isinstance(data, dict):
        return {k: shown_plain(d) for k, d in data.items()}
    return data


def url_password(value: str) -> str | None:
    """The password of a URL's userinfo (``http://user:pw@host``), if the value is such a URL."""
    if "@" not in value or "://" not in value:
        return None
    try:
        return urlsplit(value).password or None
    except ValueError:
        return None
