"""The configuration: YAML -> validated, immutable settings. One module per concern:

- ``models``: the settings models (the config file's schema, strict: unknown keys are errors);
- ``roles``: what each field holds (plain, address/user name, secret), for references and masking;
- ``references``: ``${VAR}`` / ``${file:...}`` expansion, only where the field's role allows it;
- ``bounded_yaml``: YAML loading bounded in size, depth and aliases;
- ``loading``: file -> settings, every error one line naming its key path;
- ``fingerprints``: what a stored cursor is valid for.

Every name is re-exported here: ``from sncli.config import X`` is how the rest of sncli reads it.
"""

from sncli.config.bounded_yaml import (
    MAX_CONFIG_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    YamlLimitError,
    load_yaml_bounded,
)
from sncli.config.fingerprints import deletes_fingerprint, source_fingerprint, table_fingerprint
from sncli.config.loading import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    format_validation_error,
    load_settings,
    parse_settings,
    resolve_config_path,
)
from sncli.config.models import (
    MIN_SIGNING_KEY_CHARS,
    SN_DATETIME_FORMAT,
    BasicAuth,
    FieldsKey,
    FileOffsets,
    KafkaSettings,
    MetricsSettings,
    OAuthAuth,
    RateLimit,
    Retry,
    S3Offsets,
    SchemaRegistry,
    ServiceNowSettings,
    Settings,
    SinkSettings,
    SinkTopic,
    SourceSettings,
    SourceTable,
    SysIdKey,
    Tls,
    TopicDefaults,
)
from sncli.config.references import Expanded, expand_references, field_role, key_text, referenced_files
from sncli.config.roles import EXPANDS, EntryRoles, Role, client_key_role

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_PATH",
    "EXPANDS",
    "MAX_CONFIG_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "MIN_SIGNING_KEY_CHARS",
    "SN_DATETIME_FORMAT",
    "BasicAuth",
    "EntryRoles",
    "Expanded",
    "FieldsKey",
    "FileOffsets",
    "KafkaSettings",
    "MetricsSettings",
    "OAuthAuth",
    "RateLimit",
    "Retry",
    "Role",
    "S3Offsets",
    "SchemaRegistry",
    "ServiceNowSettings",
    "Settings",
    "SinkSettings",
    "SinkTopic",
    "SourceSettings",
    "SourceTable",
    "SysIdKey",
    "Tls",
    "TopicDefaults",
    "YamlLimitError",
    "client_key_role",
    "deletes_fingerprint",
    "expand_references",
    "field_role",
    "format_validation_error",
    "key_text",
    "load_settings",
    "load_yaml_bounded",
    "parse_settings",
    "referenced_files",
    "resolve_config_path",
    "source_fingerprint",
    "table_fingerprint",
]
