"""The settings models: YAML configuration -> validated, immutable settings.

Why they are strict: a scheduled job that silently ignores a misspelled key
(``page_sise: 5000``) runs for weeks with the wrong behaviour. Every model
forbids unknown keys (and :mod:`sncli.config.loading` reports every error as
one line naming the key path), so ``sncli config validate`` in CI catches it
before production does.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from sncli.config.roles import EXPANDS, EntryRoles, Role, client_key_role, redacted_dump, url_password, walk_roles
from sncli.errors import ConfigError
from sncli.kafka.retention import RetentionPolicy
from sncli.logs import mask_url_passwords
from sncli.servicenow.fields import is_system_field
from sncli.transport_security import plain_http_off_host

SN_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_TABLE_NAME = re.compile(r"[a-z0-9_]+")
MIN_SIGNING_KEY_CHARS = 16

class _Model(BaseModel):
    # allow_inf_nan=False: `timeout_seconds: .inf` must fail validation, not the run that uses it.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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
    # No fixed default: a sink adapts its calls in flight to what the instance accepts (sink.concurrency).
    # A configured limit is reported by a drain when it is what bounds the run, and by doctor.
    rate_limit: RateLimit | None = None
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
    # audit: deletes recorded in sys_audit_delete become tombstones on the topic (sncli.source.deletes)
    deletes: Literal["audit", "none"] = "none"

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
    # single: one Table API call per write; batch: writes carried in Batch API calls (POST /api/now/v1/batch).
    write_mode: Literal["single", "batch"] = "single"
    batch_size: int = Field(default=50, ge=1, le=1000)  # writes per Batch API call at most
    batch_max_wait_ms: int = Field(default=20, ge=0, le=10_000)  # how long a batch waits to fill
    # adaptive: calls in flight follow what the instance accepts (AIMD, at most workers); fixed: workers.
    concurrency: Literal["adaptive", "fixed"] = "adaptive"
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
        for role, value in walk_roles(self):
            if role is Role.SECRET and value:
                found.append(value)
            elif password := url_password(value):
                found.append(password)  # proxy / registry / pushgateway URLs may carry credentials
        return found

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data with every secret replaced by ``***`` and URL passwords masked."""
        return redacted_dump(self, self.model_dump(mode="json"))
