"""Deterministic incident-like records of a chosen size, for tests, the demo and benchmarks.

The columns carry the internal types the source maps to Avro (string,
integer, boolean, glide_date_time, reference, decimal) and are described in
``sys_dictionary`` by the state. Values are drawn from small shared pools and
the padding text is shared between records of the same size, so 200 000
records of 1 KiB cost little more memory than their JSON.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import orjson


@dataclass(frozen=True, slots=True)
class Column:
    element: str
    internal_type: str
    max_length: int
    reference: str | None = None


SYS_COLUMNS: tuple[Column, ...] = (
    Column("sys_id", "GUID", 32),
    Column("sys_created_on", "glide_date_time", 40),
    Column("sys_created_by", "string", 40),
    Column("sys_updated_on", "glide_date_time", 40),
    Column("sys_updated_by", "string", 40),
    Column("sys_mod_count", "integer", 40),
)

INCIDENT_COLUMNS: tuple[Column, ...] = (
    Column("number", "string", 40),
    Column("short_description", "string", 160),
    Column("description", "string", 4000),
    Column("priority", "integer", 40),
    Column("state", "integer", 40),
    Column("impact", "integer", 40),
    Column("urgency", "integer", 40),
    Column("active", "boolean", 40),
    Column("opened_at", "glide_date_time", 40),
    Column("resolved_at", "glide_date_time", 40),
    Column("caller_id", "reference", 32, "sys_user"),
    Column("assignment_group", "reference", 32, "sys_user_group"),
    Column("category", "string", 40),
    Column("reassignment_count", "integer", 40),
    Column("u_cost", "decimal", 20),
)

_PHRASES = (
    "Email not syncing on mobile",
    "VPN drops every few minutes",
    "Printer on floor 3 jams",
    "Cannot log in to the portal",
    "Laptop battery does not charge",
    "Shared drive is read only",
    "Password reset link expired",
    "Monitor flickers after update",
    "Slow response from the ERP",
    "New starter needs an account",
)
_CATEGORIES = ("inquiry", "software", "hardware", "network", "database")
_WORD_CHOICES = ("alpha", "bravo", "delta", "echo", "kilo", "lima", "oscar", "tango")
_WORDS_RNG = random.Random(7)
_WORDS = tuple(" ".join(_WORDS_RNG.choice(_WORD_CHOICES) for _ in range(3)) for _ in range(32))
_DIGITS = tuple(str(i) for i in range(10))
_COSTS = tuple(f"{i * 37 % 10000 / 100:.2f}" for i in range(100))
_POOL_RNG = random.Random(20260101)
_CALLERS = tuple(uuid.UUID(int=_POOL_RNG.getrandbits(128), version=4).hex for _ in range(50))
_GROUPS = tuple(uuid.UUID(int=_POOL_RNG.getrandbits(128), version=4).hex for _ in range(12))
_PAD_TEXT = ("Details reported by the caller; steps to reproduce follow. " * 80)[:4000]


def columns_for(field_count: int) -> list[Column]:
    """The non-system columns of a generated table with ``field_count`` fields in all (at least 9)."""
    wanted = max(3, field_count - len(SYS_COLUMNS))
    columns = list(INCIDENT_COLUMNS[:wanted])
    for i in range(wanted - len(columns)):
        columns.append(Column(f"u_field_{i + 1:02d}", "string", 255))
    return columns


@lru_cache(maxsize=4096)
def _pad(length: int) -> str:
    if length <= len(_PAD_TEXT):
        return _PAD_TEXT[:length]
    return (_PAD_TEXT * (length // len(_PAD_TEXT) + 1))[:length]


def new_sys_id(rng: random.Random) -> str:
    return uuid.UUID(int=rng.getrandbits(128), version=4).hex


def generate_rows(
    rng: random.Random,
    *,
    sys_ids: Sequence[str],
    timestamps: Sequence[str],
    first_number: int,
    columns: Sequence[Column],
    record_bytes: int,
    user: str,
) -> list[dict[str, str]]:
    """One field dict per sys_id, padded (via ``description``) to about ``record_bytes`` of JSON."""
    rows: list[dict[str, str]] = []
    names = [c.element for c in columns]
    for i, (sys_id, ts) in enumerate(zip(sys_ids, timestamps, strict=True)):
        row: dict[str, str] = {"sys_id": sys_id}
        for name in names:
            row[name] = _value(rng, name, first_number + i, ts)
        row["sys_created_on"] = ts
        row["sys_created_by"] = user
        row["sys_updated_on"] = ts
        row["sys_updated_by"] = user
        row["sys_mod_count"] = "0"
        if "description" in row:
            missing = record_bytes - len(orjson.dumps(row))
            if missing > 0:
                row["description"] = _pad(missing)
        rows.append(row)
    return rows


def _value(rng: random.Random, name: str, number: int, ts: str) -> str:
    if name == "number":
        return f"INC{number:07d}"
    if name == "short_description":
        return rng.choice(_PHRASES)
    if name == "description":
        return ""
    if name in ("priority", "state", "impact", "urgency"):
        return _DIGITS[rng.randint(1, 5)]
    if name == "reassignment_count":
        return _DIGITS[rng.randint(0, 9)]
    if name == "active":
        return "true" if rng.random() < 0.7 else "false"
    if name == "opened_at":
        return ts
    if name == "resolved_at":
        return ts if rng.random() < 0.3 else ""
    if name == "caller_id":
        return rng.choice(_CALLERS)
    if name == "assignment_group":
        return rng.choice(_GROUPS)
    if name == "category":
        return rng.choice(_CATEGORIES)
    if name == "u_cost":
        return rng.choice(_COSTS)
    return rng.choice(_WORDS)
