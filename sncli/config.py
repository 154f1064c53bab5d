"""YAML configuration -> validated, immutable settings.

Why this module is strict: a scheduled job that silently ignores a misspelled
key (``page_sise: 5000``) runs for weeks with the wrong behaviour. Every model
forbids unknown keys, and every error is reported as one line naming the key
path, so ``sncli config validate`` in CI catches it before production does.

Secrets come only from the environment or from files: a scalar that is exactly
``${VAR}`` is replaced by the variable, ``${file:/path}`` by the file's
content. Anything else, including a ``$`` inside a password, is kept as is.
Only secrets, addresses and user names may be such references (:class:`Role`):
whoever writes the config must not be able to pull a variable or a file into a
field sncli prints, logs or pushes as a metric label. Every value a reference
expands to is masked in all output, like every secret.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin
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
from pydantic.fields import FieldInfo

from sncli.errors import ConfigError
from sncli.kafka.retention import RetentionPolicy
from sncli.logs import MIN_MASKED_LENGTH, REDACTED, mask_url_passwords, redact, register_secrets
from sncli.servicenow.fields import is_system_field
from sncli.transport_security import plain_http_off_host

DEFAULT_CONFIG_PATH = Path("sncli.yaml")
CONFIG_ENV_VAR = "SNCLI_CONFIG"
SN_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"

_WHOLE_TOKEN = re.compile(r"^\$\{(?:(?P<file>file:)(?P<path>[^}]+)|(?P<var>[A-Za-z_][A-Za-z0-9_]*))\}$")
_FILE_TOKEN = re.compile(r"\$\{file:(?P<path>[^}]+)\}")
_TABLE_NAME = re.compile(r"[a-z0-9_]+")
MIN_SIGNING_KEY_CHARS = 16
_DISCRIMINATORS = ("type", "store")  # the keys that select a variant (auth, key, offsets)


class _Model(BaseModel):
    # allow_inf_nan=False: `timeout_seconds: .inf` must fail validation, not the run that uses it.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- secrets and ${...} references


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


def _check_http_url(value: str, *, what: str = "URL") -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http(s) URL with a host, got {mask_url_passwords(value)!r}")
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
    username: Annotated[str, EXPANDS]
    password: SecretStr


class OAuthAuth(_Model):
    type: Literal["oauth"]
    grant_type: Literal["password", "client_credentials", "refresh_token"] = "password"
    client_id: Annotated[str, EXPANDS]
    client_secret: SecretStr
    username: Annotated[str | None, EXPANDS] = None
    password: SecretStr | None = None
    refresh_token: SecretStr | None = None
    token_url: Annotated[str | None, EXPANDS] = None  # default: <instance_url>/oauth_token.do
    allow_plain_http: bool = False  # token requests carry the client secret (and password): https only

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
    instance_url: Annotated[str, EXPANDS]
    auth: Annotated[BasicAuth | OAuthAuth, Field(discriminator="type")]
    timeout_seconds: float = Field(default=30.0, gt=0)
    rate_limit: RateLimit | None = RateLimit()
    retry: Retry = Retry()
    tls: Tls = Tls()
    proxy: Annotated[str | None, EXPANDS] = None

    @field_validator("instance_url")
    @classmethod
    def _instance_url(cls, value: str) -> str:
        return _check_http_url(value, what="instance_url")

    @model_validator(mode="after")
    def _token_requests_encrypted(self) -> ServiceNowSettings:
        auth = self.auth
        if isinstance(auth, OAuthAuth) and not auth.allow_plain_http:
            url = auth.token_url or self.instance_url
            if plain_http_off_host(url):
                key = "auth.token_url" if auth.token_url else "instance_url"
                raise ValueError(f"{key} is plain http://: OAuth token requests would send the client secret "
                                 f"unencrypted; use https, or set auth.allow_plain_http: true")
        return self

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value, what="proxy")


# --------------------------------------------------------------------------- Kafka


class SchemaRegistry(_Model):
    url: Annotated[str | None, EXPANDS] = None
    basic_auth_user_info: SecretStr | None = None  # "user:password"
    tls: Tls = Tls()  # CA bundle and client certificate (mTLS), as for ServiceNow

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value, what="schema_registry.url")


class TopicDefaults(_Model):
    """How sncli creates a topic that does not exist yet (``create: false`` refuses instead)."""

    create: bool = True
    partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=-1)  # -1: the broker's default
    # Never time retention by default: records carry sys_updated_on as their timestamp (sncli.kafka.retention).
    retention: RetentionPolicy = "mirror"
    config: dict[str, str | int | bool] = {}  # topic configs for every topic sncli creates, over the policy's

    def extra_config(self) -> dict[str, str]:
        """``config`` as Kafka's strings (booleans lower-case)."""
        return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in self.config.items()}


class KafkaSettings(_Model):
    bootstrap_servers: Annotated[str, EXPANDS] = "127.0.0.1:9092"
    client: Annotated[dict[str, str | int | float | bool], EntryRoles(client_key_role)] = {}
    schema_registry: SchemaRegistry = SchemaRegistry()
    topics: TopicDefaults = TopicDefaults()

    @field_validator("client", mode="before")
    @classmethod
    def _finite_client_numbers(cls, value: object) -> object:
        # Said here so the error names the setting, not the union member pydantic tried last.
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, float) and not math.isfinite(item):
                    raise ValueError(f"{key} must be a finite number, got {item}")
        return value


# --------------------------------------------------------------------------- offsets, metrics


class FileOffsets(_Model):
    store: Literal["file"]
    path: Path = Path("sncli-offsets.json")


class S3Offsets(_Model):
    store: Literal["s3"]
    url: Annotated[str, EXPANDS]
    endpoint_url: Annotated[str | None, EXPANDS] = None
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
            raise ValueError(f"must be s3://bucket/key, got {mask_url_passwords(value)!r}")
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
    pushgateway: Annotated[str | None, EXPANDS] = None
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
    safety_lag_seconds: int = 2
    format: Literal["json", "avro"] = "json"
    display_value: Literal["false", "true", "all"] = "false"
    # Where records Kafka refuses or that cannot be encoded go; None: sink.dlq_topic (Settings.source_dlq_topic).
    dlq_topic: str | None = None
    tables: list[SourceTable] = []

    @field_validator("safety_lag_seconds")
    @classmethod
    def _lag_of_a_second_at_least(cls, value: int) -> int:
        # HI is inclusive and ServiceNow's timestamps have one-second resolution: with 0, HI is the
        # current second, and a record written later in that second falls behind the stored cursor.
        if value < 1:
            raise ValueError(
                "must be at least 1: the cycle's upper bound includes its whole second, so with "
                f"{value} a record written later in that second would be skipped"
            )
        return value

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

    # The sink never writes a sys_* field (sncli.servicenow.fields): a mapping that asks for one
    # could only be silently dropped, so it is refused here, naming the entry.
    @field_validator("rename")
    @classmethod
    def _rename(cls, value: dict[str, str]) -> dict[str, str]:
        system = [f"{source} -> {target}" for source, target in value.items() if is_system_field(target)]
        if system:
            raise ValueError(f"{', '.join(system)}: sys_* fields are never written")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SinkTopic:
        if self.ambiguous == "lookup" and not self.correlation_field:
            raise ValueError("ambiguous 'lookup' needs correlation_field")
        if self.route_header and not self.allowed_tables:
            raise ValueError("route_header needs allowed_tables (header-routed tables must be allowlisted)")
        system = [name for name in self.include_fields or () if is_system_field(name) and name not in self.rename]
        if system:
            raise ValueError(f"include_fields {', '.join(system)}: sys_* fields are never written "
                             "(rename them to a field of your own to keep their values)")
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

    @property
    def source_dlq_topic(self) -> str:
        """The source's DLQ: ``source.dlq_topic``, else the sink's (one DLQ to watch and inspect)."""
        return self.source.dlq_topic or self.sink.dlq_topic

    def secret_values(self) -> list[str]:
        """Every configured secret (by :class:`Role`) and URL password, so output can mask them."""
        found: list[str] = []
        for role, value in _walk_roles(self):
            if role is Role.SECRET and value:
                found.append(value)
            elif password := _url_password(value):
                found.append(password)  # proxy / registry / pushgateway URLs may carry credentials
        return found

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data with every secret replaced by ``***`` and URL passwords masked."""
        return _redacted_dump(self, self.model_dump(mode="json"))


def _field_role(info: FieldInfo) -> Role:
    if SecretStr in _types_in(info.annotation):
        return Role.SECRET
    return max((m for m in info.metadata if isinstance(m, Role)), default=Role.PLAIN)


def _entry_roles(info: FieldInfo) -> EntryRoles | None:
    return next((m for m in info.metadata if isinstance(m, EntryRoles)), None)


def _types_in(annotation: object) -> list[object]:
    """The types a field's annotation holds: union members and list items unwrapped."""
    if get_origin(annotation) in (Union, UnionType, list):
        return [t for arg in get_args(annotation) for t in _types_in(arg)]
    return [annotation]


def _models_in(info: FieldInfo) -> tuple[type[BaseModel], ...]:
    return tuple(t for t in _types_in(info.annotation) if isinstance(t, type) and issubclass(t, BaseModel))


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
        entries = next((e for e in map(_entry_roles, infos) if e is not None), None)
        if entries is not None and depth + 1 < len(keys):
            entry = keys[depth + 1]
            return entries.of(entry) if isinstance(entry, str) else Role.PLAIN
        role = max(map(_field_role, infos))  # the variants of a union may differ; the widest wins
        models = tuple(m for info in infos for m in _models_in(info))
    return role


def _walk_roles(model: BaseModel) -> Iterator[tuple[Role, str]]:
    """Every text value of the settings with its role; secrets revealed, for masking."""
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        entries = _entry_roles(info)
        if isinstance(value, dict) and entries is not None:
            yield from ((entries.of(str(k)), v) for k, v in value.items() if isinstance(v, str))
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, BaseModel):
                yield from _walk_roles(item)
            elif isinstance(item, SecretStr):
                yield Role.SECRET, item.get_secret_value()
            elif isinstance(item, str):
                yield _field_role(info), item


def _redacted_dump(model: BaseModel, dump: dict[str, Any]) -> dict[str, Any]:
    """``dump`` (the model's JSON dump) with its secrets as ``***``, walked along the model that knows them."""
    shown: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        value, data = getattr(model, name), dump[name]
        entries = _entry_roles(info)
        if isinstance(value, SecretStr):
            shown[name] = REDACTED if value.get_secret_value() else ""
        elif isinstance(value, BaseModel):
            shown[name] = _redacted_dump(value, data)
        elif isinstance(value, list):
            shown[name] = [_redacted_dump(v, d) if isinstance(v, BaseModel) else _shown_plain(d)
                           for v, d in zip(value, data, strict=True)]
        elif isinstance(value, dict) and entries is not None:
            shown[name] = {k: REDACTED if entries.of(str(k)) is Role.SECRET else _shown_plain(d)
                           for k, d in data.items()}
        else:
            shown[name] = _shown_plain(data)
    return shown


def _shown_plain(data: Any) -> Any:
    if isinstance(data, str):
        return mask_url_passwords(data)
    if isinstance(data, list):
        return [_shown_plain(d) for d in data]
    if isinstance(data, dict):
        return {k: _shown_plain(d) for k, d in data.items()}
    return data


def _url_password(value: str) -> str | None:
    """The password of a URL's userinfo (``http://user:pw@host``), if the value is such a URL."""
    if "@" not in value or "://" not in value:
        return None
    try:
        return urlsplit(value).password or None
    except ValueError:
        return None


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
                return {k: expand(v, _join(path, _key_text(k)), (*keys, k), inner) for k, v in node.items()}
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


def _key_text(key: object) -> str:
    """A key as it can be shown on one line: odd keys (newlines, control characters) in repr form."""
    text = str(key)
    return text if text.isprintable() and text.strip() == text and text else repr(text)


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


# --------------------------------------------------------------------------- bounded YAML

MAX_CONFIG_BYTES = 1024 * 1024
MAX_YAML_DEPTH = 64  # a real config nests 5 deep; PyYAML's composer recurses per level
MAX_YAML_NODES = 100_000  # after aliases are expanded; a real config has a few hundred


class YamlLimitError(yaml.YAMLError):
    """A YAML document that would take unbounded time or memory to load (too deep, or aliases that explode)."""

    def __init__(self, problem: str, mark: object) -> None:  # a yaml Mark (pure-Python or libyaml)
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


def load_yaml_bounded(text: str) -> Any:
    """``yaml.safe_load`` for untrusted text: refuses deep nesting and alias bombs before building anything.

    SafeLoader builds no objects from tags, but it still expands aliases: a few
    hundred bytes of nested aliases ("billion laughs") stand for 10^9 nodes that
    every later walk of the config visits, and a thousand nested ``[`` overflow
    the composer's recursion. So the event stream is checked first (the parser
    is not recursive): nesting depth, and the node count as if every alias were
    copied, computed per anchor without copying anything.
    """
    sizes: dict[str, int] = {}  # anchor -> expanded node count of its node
    stack: list[tuple[str | None, int]] = []  # open collections: (anchor, nodes so far)
    total = 0

    def close(anchor: str | None, count: int, mark: object) -> None:
        nonlocal total
        if anchor is not None:
            sizes[anchor] = count
        if stack:
            parent_anchor, parent_count = stack[-1]
            stack[-1] = (parent_anchor, parent_count + count)
        else:
            total += count
        if total + sum(c for _a, c in stack) > MAX_YAML_NODES:
            raise YamlLimitError(f"more than {MAX_YAML_NODES} values once aliases are expanded "
                                 f"(an alias bomb?)", mark)

    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        mark = event.start_mark
        if isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= MAX_YAML_DEPTH:
                raise YamlLimitError(f"nested more than {MAX_YAML_DEPTH} levels deep", mark)
            stack.append((event.anchor, 1))
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, count = stack.pop()
            close(anchor, count, mark)
        elif isinstance(event, yaml.ScalarEvent):
            close(event.anchor, 1, mark)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in sizes:
                problem = ("an alias refers to its own parent (a cycle)"
                           if any(a == event.anchor for a, _c in stack) else f"unknown alias *{event.anchor}")
                raise YamlLimitError(problem, mark)
            close(None, sizes[event.anchor], mark)
    return yaml.safe_load(text)


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
