"""YAML configuration -> validated, immutable settings.

Why this module is strict: a scheduled job that silently ignores a misspelled
key (``page_sise: 5000``) runs for weeks with the wrong behaviour. Every model
forbids unknown keys, and every error is reported as one line naming the key
path, so ``sncli config validate`` in CI catches it before production does.

Secrets come only from the environment or from files: a scalar that is exactly
``${VAR}`` is replaced by the variable, ``${file:/path}`` by the file's
content. Anything else, including a ``$`` inside a password, is kept as is.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from sncli.errors import ConfigError
from sncli.logs import register_secrets

DEFAULT_CONFIG_PATH = Path("sncli.yaml")
CONFIG_ENV_VAR = "SNCLI_CONFIG"
SN_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"

_WHOLE_TOKEN = re.compile(r"^\$\{(?:(?P<file>file:)(?P<path>[^}]+)|(?P<var>[A-Za-z_][A-Za-z0-9_]*))\}$")
_FILE_TOKEN = re.compile(r"\$\{file:(?P<path>[^}]+)\}")
_TABLE_NAME = re.compile(r"[a-z0-9_]+")
MIN_SIGNING_KEY_CHARS = 16
_DISCRIMINATORS = ("type", "store")  # the keys that select a variant (auth, key, offsets)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_http_url(value: str, *, what: str = "URL") -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = _mask_url_password(value) if _url_password(value) else value  # the error is logged
        raise ValueError(f"{what} must be an http(s) URL with a host, got {shown!r}")
    return value.rstrip("/")


def _check_table_name(value: str) -> str:
    # Table names become URL path segments; anything else could address another endpoint.
    if not _TABLE_NAME.fullmatch(value):
        raise ValueError(f"table name must match [a-z0-9_]+, got {value!r}")
    return value


def _check_sn_datetime(value: str) -> str:
    try:
        datetime.strptime(value, SN_DATETIME_FORMAT)
    except ValueError:
        raise ValueError(f"must be 'YYYY-MM-DD HH:MM:SS' (UTC), got {value!r}") from None
    return value


# --------------------------------------------------------------------------- ServiceNow


class BasicAuth(_Model):
    type: Literal["basic"]
    username: str
    password: SecretStr


class OAuthAuth(_Model):
    type: Literal["oauth"]
    grant_type: Literal["password", "client_credentials", "refresh_token"] = "password"
    client_id: str
    client_secret: SecretStr
    username: str | None = None
    password: SecretStr | None = None
    refresh_token: SecretStr | None = None
    token_url: str | None = None  # default: <instance_url>/oauth_token.do

    @model_validator(mode="after")
    def _grant_has_its_credentials(self) -> OAuthAuth:
        if self.grant_type == "password" and (self.username is None or self.password is None):
            raise ValueError("grant_type 'password' needs username and password")
        if self.grant_type == "refresh_token" and self.refresh_token is None:
            raise ValueError("grant_type 'refresh_token' needs refresh_token")
        return self

    @field_validator("token_url")
    @classmethod
    def _token_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value, what="token_url")


class RateLimit(_Model):
    requests_per_second: float = Field(default=20.0, gt=0)
    burst: int = Field(default=40, ge=1)


class Retry(_Model):
    max_attempts: int = Field(default=8, ge=1)
    initial_backoff_ms: int = Field(default=100, ge=0)
    max_backoff_ms: int = Field(default=30_000, ge=0)
    max_elapsed_seconds: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Retry:
        if self.max_backoff_ms < self.initial_backoff_ms:
            raise ValueError("max_backoff_ms must be >= initial_backoff_ms")
        return self


class Tls(_Model):
    verify: bool = True
    ca_bundle: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None


class ServiceNowSettings(_Model):
    instance_url: str
    auth: Annotated[BasicAuth | OAuthAuth, Field(discriminator="type")]
    timeout_seconds: float = Field(default=30.0, gt=0)
    rate_limit: RateLimit | None = RateLimit()
    retry: Retry = Retry()
    tls: Tls = Tls()
    proxy: str | None = None

    @field_validator("instance_url")
    @classmethod
    def _instance_url(cls, value: str) -> str:
        return _check_http_url(value, what="instance_url")

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value, what="proxy")


# --------------------------------------------------------------------------- Kafka


class SchemaRegistry(_Model):
    url: str | None = None
    basic_auth_user_info: SecretStr | None = None  # "user:password"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value, what="schema_registry.url")


class TopicDefaults(_Model):
    """How sncli creates a topic that does not exist yet (``create: false`` refuses instead)."""

    create: bool = True
    partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=-1)  # -1: the broker's default


class KafkaSettings(_Model):
    bootstrap_servers: str = "127.0.0.1:9092"
    client: dict[str, str | int | float | bool] = {}
    schema_registry: SchemaRegistry = SchemaRegistry()
    topics: TopicDefaults = TopicDefaults()


# --------------------------------------------------------------------------- offsets, metrics


class FileOffsets(_Model):
    store: Literal["file"]
    path: Path = Path("sncli-offsets.json")


class S3Offsets(_Model):
    store: Literal["s3"]
    url: str
    endpoint_url: str | None = None
    region: str | None = None
    lease_seconds: int = Field(default=300, ge=10)
    # per_key: one object per table / backfill window under ``<key>.d/`` (writers never contend);
    # single: every key in the one object at ``url`` (sncli before per_key; migrated from on first use).
    layout: Literal["per_key", "single"] = "per_key"

    @field_validator("url")
    @classmethod
    def _s3_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "s3" or not parts.netloc or not parts.path.strip("/"):
            raise ValueError(f"must be s3://bucket/key, got {value!r}")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value, what="endpoint_url")

    @property
    def bucket(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def key(self) -> str:
        return urlsplit(self.url).path.lstrip("/")


class MetricsSettings(_Model):
    pushgateway: str | None = None
    job: str = "sncli"

    @field_validator("pushgateway")
    @classmethod
    def _pushgateway(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value, what="pushgateway")


# --------------------------------------------------------------------------- source


class SysIdKey(_Model):
    type: Literal["sys_id"]


class FieldsKey(_Model):
    type: Literal["fields"]
    fields: list[str] = Field(min_length=1)


class SourceTable(_Model):
    name: str
    topic: str
    query: str | None = None
    fields: list[str] | None = None
    timestamp_field: str = "sys_updated_on"
    key: Annotated[SysIdKey | FieldsKey, Field(discriminator="type")] = SysIdKey(type="sys_id")
    start: str = "1970-01-01 00:00:00"
    partitions: int | None = Field(default=None, ge=1)  # for topic creation; default kafka.topics

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_table_name(value)

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, value: object) -> object:
        # YAML reads an unquoted `start: 2024-01-01 00:00:00` as a timestamp, not text.
        if isinstance(value, datetime):
            if value.tzinfo is not None:
                value = value.astimezone(UTC).replace(tzinfo=None)
            return value.strftime(SN_DATETIME_FORMAT)
        if isinstance(value, str):
            return _check_sn_datetime(value)
        return value

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", value):
            raise ValueError(f"not a valid Kafka topic name: {value!r}")
        return value

    @model_validator(mode="after")
    def _fields_include_cursor(self) -> SourceTable:
        # The cursor needs these two on every record, whatever the field list says.
        if self.fields is not None:
            missing = [f for f in ("sys_id", self.timestamp_field) if f not in self.fields]
            if missing:
                raise ValueError(f"fields must include {', '.join(missing)} (the cursor needs them)")
        return self


class SourceSettings(_Model):
    page_size: int = Field(default=1000, ge=1, le=10_000)
    safety_lag_seconds: int = Field(default=2, ge=0)
    format: Literal["json", "avro"] = "json"
    display_value: Literal["false", "true", "all"] = "false"
    tables: list[SourceTable] = []

    @model_validator(mode="after")
    def _unique_tables(self) -> SourceSettings:
        names = [t.name for t in self.tables]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"table listed twice: {', '.join(dupes)}")
        return self

    def table(self, name: str) -> SourceTable:
        for table in self.tables:
            if table.name == name:
                return table
        raise ConfigError(f"source.tables: no table named {name!r} (known: {', '.join(self.table_names())})")

    def table_names(self) -> list[str]:
        return [t.name for t in self.tables]


# --------------------------------------------------------------------------- sink


class SinkTopic(_Model):
    topic: str
    table: str
    sys_id_from: list[Literal["value", "header", "key"]] = ["value", "header"]
    delete_on_tombstone: bool = False
    not_found: Literal["create", "fail", "ignore"] = "create"
    ambiguous: Literal["fail", "retry", "lookup"] = "fail"
    correlation_field: str | None = None  # for ambiguous: lookup
    include_fields: list[str] | None = None
    exclude_fields: list[str] = []
    rename: dict[str, str] = {}
    nested: Literal["reject", "flatten", "stringify"] = "reject"
    route_header: str | None = None  # e.g. "sn.table": route by header to an allowed table
    allowed_tables: list[str] = []

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        return _check_table_name(value)

    @field_validator("allowed_tables")
    @classmethod
    def _allowed(cls, value: list[str]) -> list[str]:
        return [_check_table_name(v) for v in value]

    @model_validator(mode="after")
    def _consistent(self) -> SinkTopic:
        if self.ambiguous == "lookup" and not self.correlation_field:
            raise ValueError("ambiguous 'lookup' needs correlation_field")
        if self.route_header and not self.allowed_tables:
            raise ValueError("route_header needs allowed_tables (header-routed tables must be allowlisted)")
        return self


class SinkSettings(_Model):
    group_id: str = "sncli-sink"
    workers: int = Field(default=8, ge=1, le=256)
    max_pending: int = Field(default=10_000, ge=1)
    dlq_topic: str = "servicenow.dlq"
    # HMAC key for DLQ records (``${VAR}`` / ``${file:...}``): replay trusts only what it signed.
    dlq_signing_key: SecretStr | None = None
    dlq_previous_signing_key: SecretStr | None = None  # still verifies, never signs (key rotation)
    topics: list[SinkTopic] = []

    @model_validator(mode="after")
    def _signing_keys(self) -> SinkSettings:
        for name in ("dlq_signing_key", "dlq_previous_signing_key"):
            key: SecretStr | None = getattr(self, name)
            if key is not None and len(key.get_secret_value().strip()) < MIN_SIGNING_KEY_CHARS:
                raise ValueError(f"{name} must be at least {MIN_SIGNING_KEY_CHARS} characters "
                                 "(e.g. openssl rand -hex 32)")
        if self.dlq_previous_signing_key is not None and self.dlq_signing_key is None:
            raise ValueError("dlq_previous_signing_key needs dlq_signing_key (the key that signs from now on)")
        return self

    def topic(self, name: str) -> SinkTopic:
        for topic in self.topics:
            if topic.topic == name:
                return topic
        raise ConfigError(f"sink.topics: no topic named {name!r}")


# --------------------------------------------------------------------------- root


class Settings(_Model):
    servicenow: ServiceNowSettings
    kafka: KafkaSettings = KafkaSettings()
    offsets: Annotated[FileOffsets | S3Offsets, Field(discriminator="store")] = FileOffsets(store="file")
    metrics: MetricsSettings = MetricsSettings()
    source: SourceSettings = SourceSettings()
    sink: SinkSettings = SinkSettings()

    def secret_values(self) -> list[str]:
        """Every configured secret, so log filters can redact them wherever they appear."""
        found: list[str] = []
        for value in _walk_values(self):
            if isinstance(value, SecretStr):
                raw = value.get_secret_value()
                if raw:
                    found.append(raw)
            elif isinstance(value, str) and (password := _url_password(value)):
                found.append(password)  # proxy / registry / pushgateway URLs may carry credentials
        for key, val in self.kafka.client.items():
            if _looks_secret(key) and isinstance(val, str) and val:
                found.append(val)
        return found

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data with every secret replaced by ``***``."""
        data = self.model_dump(mode="json")
        secrets = set(self.secret_values())
        redacted: dict[str, Any] = _redact(data, secrets)
        return redacted


def _looks_secret(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in ("password", "secret", "token", "key", "credential"))


def _walk_values(model: BaseModel) -> Iterator[Any]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _walk_values(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, BaseModel):
                    yield from _walk_values(item)
        else:
            yield value


def _redact(node: Any, secrets: set[str]) -> Any:
    if isinstance(node, dict):
        return {k: ("***" if _looks_secret(str(k)) and v else _redact(v, secrets)) for k, v in node.items()}
    if isinstance(node, list):
        return [_redact(v, secrets) for v in node]
    if isinstance(node, str) and (node in secrets or node == "**********"):
        return "***"
    if isinstance(node, str) and _url_password(node):
        return _mask_url_password(node)
    return node


def _url_password(value: str) -> str | None:
    """The password of a URL's userinfo (``http://user:pw@host``), if the value is such a URL."""
    if "@" not in value or "://" not in value:
        return None
    try:
        return urlsplit(value).password or None
    except ValueError:
        return None


def _mask_url_password(value: str) -> str:
    parts = urlsplit(value)
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


# --------------------------------------------------------------------------- loading


def resolve_config_path(path: Path | None) -> Path:
    if path is not None:
        return path
    env = os.environ.get(CONFIG_ENV_VAR)
    return Path(env) if env else DEFAULT_CONFIG_PATH


def referenced_files(text: str) -> list[Path]:
    """The files a config's text reads ``${file:...}`` secrets from, in order, once each.

    For a watcher of the config: a secret file rotated in place (a Kubernetes
    Secret volume) changes the settings as much as an edit of the config does.
    """
    return [Path(p) for p in dict.fromkeys(m.group("path") for m in _FILE_TOKEN.finditer(text))]


def expand_env(node: Any, environ: Mapping[str, str], path: str = "", _open: frozenset[int] = frozenset()) -> Any:
    """Replace whole-token ``${VAR}`` / ``${file:PATH}`` scalars; leave every other string alone.

    ``_open`` holds the containers on the current path: a YAML alias that refers to
    one of its own parents would otherwise recurse forever.
    """
    if isinstance(node, dict | list):
        if id(node) in _open:
            raise ConfigError(f"{path or '<root>'}: a YAML alias refers to its own parent (a cycle)")
        inner = _open | {id(node)}
        if isinstance(node, dict):
            return {k: expand_env(v, environ, _join(path, _key_text(k)), inner) for k, v in node.items()}
        return [expand_env(v, environ, f"{path}[{i}]", inner) for i, v in enumerate(node)]
    if isinstance(node, str):
        match = _WHOLE_TOKEN.match(node.strip())
        if not match:
            return node
        if match.group("file"):
            file_path = Path(match.group("path"))
            try:
                return file_path.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"{path or '<root>'}: cannot read secret file {file_path}: {exc.strerror}") from None
        var = match.group("var")
        if var not in environ:
            raise ConfigError(f"{path or '<root>'}: environment variable {var} is not set")
        return environ[var]
    return node


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _key_text(key: object) -> str:
    """A key as it can be shown on one line: odd keys (newlines, control characters) in repr form."""
    text = str(key)
    return text if text.isprintable() and text.strip() == text and text else repr(text)


def parse_settings(raw: Any, environ: Mapping[str, str] | None = None) -> Settings:
    """Validate already-parsed YAML; every failure is a ConfigError naming the key path.

    Every config read registers its secrets for masking in logs
    (:func:`sncli.logs.register_secrets`) before anyone can log them: the first
    one of a run, and each one a looping ``--every`` process reloads, so a rotated
    password is masked like the one the process started with.
    """
    if raw is None:
        raise ConfigError("<root>: the config is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"<root>: expected a mapping of sections, got {type(raw).__name__}")
    expanded = expand_env(raw, os.environ if environ is None else environ)
    try:
        settings = Settings.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, expanded)) from None
    register_secrets(settings.secret_values())
    return settings


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found (use --config or {CONFIG_ENV_VAR})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not readable: {exc}") from None
    try:
        raw = yaml.safe_load(text)
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
    message = " ".join(_friendly(first).split())  # one line, whatever the value held
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
            parts.append(_key_text(element))
            node = node[element]
            tag_may_follow = isinstance(node, dict)
        elif isinstance(node, list) and isinstance(element, int) and 0 <= element < len(node):
            parts.append(f"[{element}]")
            node = node[element]
            tag_may_follow = isinstance(node, dict)
        else:
            parts.append(_key_text(element))
            node = None
    text = ""
    for part in parts:
        text += part if part.startswith("[") or not text else f".{part}"
    return text or "<root>"


# --------------------------------------------------------------------------- fingerprints


def table_fingerprint(instance_url: str, table: str, base_query: str | None, timestamp_field: str) -> str:
    """Identify what a stored cursor means; a cursor is only valid for the same fingerprint.

    Reusing a cursor after the base query or timestamp field changed would skip or
    repeat records silently, so the offset store refuses a mismatch instead.
    """
    parts = [instance_url.rstrip("/").lower(), table, base_query or "", timestamp_field]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def source_fingerprint(settings: Settings, table: SourceTable) -> str:
    return table_fingerprint(settings.servicenow.instance_url, table.name, table.query, table.timestamp_field)
