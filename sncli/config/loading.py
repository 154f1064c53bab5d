"""Reading a config: the file (bounded), its references expanded, validated, errors as one line each."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sncli.config.bounded_yaml import MAX_CONFIG_BYTES, load_yaml_bounded
from sncli.config.models import Settings
from sncli.config.references import expand_references, key_text
from sncli.errors import ConfigError
from sncli.logs import redact, register_secrets

DEFAULT_CONFIG_PATH = Path("sncli.yaml")
CONFIG_ENV_VAR = "SNCLI_CONFIG"
_DISCRIMINATORS = ("type", "store")  # the keys that select a variant (auth, key, offsets)

def resolve_config_path(path: Path | None) -> Path:
    if path is not None:
        return path
    env = os.environ.get(CONFIG_ENV_VAR)
    return Path(env) if env else DEFAULT_CONFIG_PATH


def parse_settings(raw: Any, environ: Mapping[str, str] | None = None) -> Settings:
    """Validate already-parsed YAML; every failure is a ConfigError naming the key path.

    Every config read registers its secrets and expanded values for masking in all
    output (:func:`sncli.logs.register_secrets`) before validating, so neither a
    validation error nor anything logged later can show them: the first config of
    a run, a rejected one, and each one a looping ``--every`` process reloads (a
    rotated password is masked like the one the process started with).
    """
    if raw is None:
        raise ConfigError("<root>: the config is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"<root>: expected a mapping of sections, got {type(raw).__name__}")
    expanded, to_mask = expand_references(raw, os.environ if environ is None else environ)
    register_secrets(to_mask)
    try:
        settings = Settings.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError(redact(format_validation_error(exc, expanded))) from None
    register_secrets(settings.secret_values())
    return settings


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found (use --config or {CONFIG_ENV_VAR})") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} is not readable: {exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KiB; that is not a config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not readable: {exc}") from None
    try:
        raw = load_yaml_bounded(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: {problem}{where}") from None
    return parse_settings(raw, environ)


def format_validation_error(exc: ValidationError, data: Any) -> str:
    """One line: ``key.path: what is wrong`` (+ how many more problems there are)."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    where = _loc_to_path(first["loc"], data)
    # One line, whatever the value held; masked before the folding, which would change a value's spaces.
    message = " ".join(redact(_friendly(first)).split())
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{where}: {message}{more}"


def _friendly(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        ctx = error.get("ctx", {})
        return f"type must be one of {ctx.get('expected_tags', '?')}, got {ctx.get('tag', '?')}"
    if kind == "union_tag_not_found":
        return f"missing the '{error.get('ctx', {}).get('discriminator', 'type')}' key".replace("'''", "'")
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _loc_to_path(loc: tuple[Any, ...], data: Any) -> str:
    """Render a pydantic location as the user's key path, dropping union tag names."""
    parts: list[str] = []
    node = data
    tag_may_follow = False
    for index, element in enumerate(loc):
        last = index == len(loc) - 1
        if (tag_may_follow and not last and isinstance(node, dict)
                and element in {node.get(k) for k in _DISCRIMINATORS}):
            # Pydantic puts a discriminated union's tag ("basic", "fields", "s3") right after
            # the union's own key; it is not a key of the user's document, even when a key
            # has the same name (`key: {type: fields, fields: [...]}`).
            tag_may_follow = False
            continue
        tag_may_follow = False
        if isinstance(node, dict) and element in node:
            parts.append(key_text(element))
            node = node[element]
            tag_may_follow = isinstance(node, dict)
        elif isinstance(node, list) and isinstance(element, int) and 0 <= element < len(node):
            parts.append(f"[{element}]")
            node = node[element]
            tag_may_follow = isinstance(node, dict)
        else:
            parts.append(key_text(element))
            node = None
    text = ""
    for part in parts:
        text += part if part.startswith("[") or not text else f".{part}"
    return text or "<root>"
