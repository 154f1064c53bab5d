"""``${VAR}`` and ``${file:/path}`` references: where they may stand and what they expand to.

Secrets come only from the environment or from files: a scalar that is exactly
``${VAR}`` is replaced by the variable, ``${file:/path}`` by the file's
content. Anything else, including a ``$`` inside a password, is kept as is.
Only secrets, addresses and user names may be such references
(:class:`~sncli.config.roles.Role`): whoever writes the config must not be able
to pull a variable or a file into a field sncli prints, logs or pushes as a
metric label. Every value a reference expands to is masked in all output, like
every secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel

from sncli.config.models import Settings
from sncli.config.roles import Role, entry_roles_of, models_in, role_of_field
from sncli.errors import ConfigError
from sncli.logs import MIN_MASKED_LENGTH

_WHOLE_TOKEN = re.compile(r"^\$\{(?:(?P<file>file:)(?P<path>[^}]+)|(?P<var>[A-Za-z_][A-Za-z0-9_]*))\}$")
_FILE_TOKEN = re.compile(r"\$\{file:(?P<path>[^}]+)\}")

def field_role(keys: Sequence[object]) -> Role | None:
    """The role of the field at ``keys`` (the mapping keys of a config document, list positions left out).

    None when the keys name no field (an unknown key, reported as such by validation).
    Below a field that holds plain data (a list, a mapping) everything has that field's role.
    """
    models: tuple[type[BaseModel], ...] = (Settings,)
    role = Role.PLAIN
    for depth, key in enumerate(keys):
        if not models:
            return role
        infos = [m.model_fields[key] for m in models if isinstance(key, str) and key in m.model_fields]
        if not infos:
            return None
        entries = next((e for e in map(entry_roles_of, infos) if e is not None), None)
        if entries is not None and depth + 1 < len(keys):
            entry = keys[depth + 1]
            return entries.of(entry) if isinstance(entry, str) else Role.PLAIN
        role = max(map(role_of_field, infos))  # the variants of a union may differ; the widest wins
        models = tuple(m for info in infos for m in models_in(info))
    return role


def referenced_files(text: str) -> list[Path]:
    """The files a config's text reads ``${file:...}`` secrets from, in order, once each.

    For a watcher of the config: a secret file rotated in place (a Kubernetes
    Secret volume) changes the settings as much as an edit of the config does.
    """
    return [Path(p) for p in dict.fromkeys(m.group("path") for m in _FILE_TOKEN.finditer(text))]


class Expanded(NamedTuple):
    """A config document with its ``${...}`` references replaced, and the values to mask in output."""

    document: Any
    to_mask: list[str]  # every value a reference expanded to, and every secret written inline


def expand_references(raw: Any, environ: Mapping[str, str]) -> Expanded:
    """Replace whole-token ``${VAR}`` / ``${file:PATH}`` scalars in the fields that may hold them.

    A reference in a PLAIN field (:func:`field_role`) is a ConfigError naming the key;
    one under an unknown key is left for validation to report as unknown. A value
    shorter than MIN_MASKED_LENGTH could not be masked without garbling output, so
    a reference expanding to one (but not to nothing) is refused too.
    """
    to_mask: list[str] = []

    def expand(node: Any, path: str, keys: tuple[object, ...], open_: frozenset[int]) -> Any:
        # open_ holds the containers on the current path: a YAML alias that refers to
        # one of its own parents would otherwise recurse forever.
        if isinstance(node, dict | list):
            if id(node) in open_:
                raise ConfigError(f"{path or '<root>'}: a YAML alias refers to its own parent (a cycle)")
            inner = open_ | {id(node)}
            if isinstance(node, dict):
                return {k: expand(v, _join(path, key_text(k)), (*keys, k), inner) for k, v in node.items()}
            return [expand(v, f"{path}[{i}]", keys, inner) for i, v in enumerate(node)]
        if not isinstance(node, str):
            return node
        role = field_role(keys)
        match = _WHOLE_TOKEN.match(node.strip())
        if match is None or role is None:
            if role is Role.SECRET:
                to_mask.append(node)
            return node
        where = path or "<root>"
        if role is Role.PLAIN:
            raise ConfigError(f"{where}: ${{...}} is not expanded here; only secrets, addresses and user names "
                              "may come from the environment or a file")
        value = _read_reference(match, where, environ)
        if 0 < len(value) < MIN_MASKED_LENGTH:
            raise ConfigError(f"{where}: {node.strip()} is shorter than {MIN_MASKED_LENGTH} characters, "
                              "too short to be masked in output")
        to_mask.append(value)
        return value

    return Expanded(expand(raw, "", (), frozenset()), to_mask)


def _read_reference(match: re.Match[str], where: str, environ: Mapping[str, str]) -> str:
    if match.group("file"):
        file_path = Path(match.group("path"))
        try:
            return file_path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read secret file {file_path}: {exc.strerror}") from None
    var = match.group("var")
    if var not in environ:
        raise ConfigError(f"{where}: environment variable {var} is not set")
    return environ[var]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def key_text(key: object) -> str:
    """A key as it can be shown on one line: odd keys (newlines, control characters) in repr form."""
    text = str(key)
    return text if text.isprintable() and text.strip() == text and text else repr(text)
