"""Kafka message keys: which records share a partition, and so keep their order.

- ``sys_id`` (default): every version of one record goes to one partition, in order.
- ``fields``: the SHA-256 (hex) of the chosen fields' values, so related records
  (e.g. same company and location) are co-located and ordered together.

The values are joined unambiguously: each value is length-prefixed, and a
missing field is distinct from an empty one, so ``("a|b", "c")`` and
``("a", "b|c")`` never share a key by accident.

Pure and batched: a page's keys are computed in one call, with no per-record
dispatch on the strategy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sncli.config import FieldsKey, SysIdKey
from sncli.source.rawpage import column

KeyStrategy = SysIdKey | FieldsKey


def _plain(value: Any) -> str | None:
    # display_value=all gives {"value": ..., "display_value": ...}; the key uses the raw value.
    if isinstance(value, dict):
        value = value.get("value")
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def fields_digest(values: Sequence[str | None]) -> str:
    """SHA-256 hex of values joined unambiguously (``<len>:<utf-8 bytes>`` each; ``-`` for missing)."""
    digest = hashlib.sha256()
    for value in values:
        if value is None:
            digest.update(b"-;")
        else:
            raw = value.encode("utf-8")
            digest.update(b"%d:" % len(raw))
            digest.update(raw)
            digest.update(b";")
    return digest.hexdigest()


def key_of(record: dict[str, Any], strategy: KeyStrategy) -> bytes:
    """The key of one record (see :func:`keys_of` for a page)."""
    return keys_of([record], strategy)[0]


def keys_of(records: Sequence[dict[str, Any]], strategy: KeyStrategy) -> list[bytes]:
    """The keys of a page of records (dicts, or a RawPage's decoded columns), in order."""
    if isinstance(strategy, SysIdKey):
        return [(_plain(v) or "").encode("utf-8") for v in column(records, "sys_id")]
    if not records:
        return []
    columns = [list(map(_plain, column(records, n))) for n in strategy.fields]
    return [fields_digest(values).encode("ascii") for values in zip(*columns, strict=True)]
