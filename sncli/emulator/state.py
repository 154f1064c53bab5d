"""Everything the emulator knows: tables, clock, faults, journal, settings, tokens.

One re-entrant lock serializes all table access, so the HTTP threads and a
test driving ``emu.state`` directly see a consistent store. Pages are
gathered under the lock but rendered outside it (records are immutable: a
write replaces the record object), so a big page does not stall writers.

System tables are ordinary tables: ``sys_user`` (the integration user, with
its ``time_zone``), ``sys_dictionary`` (one row per column of every other
table: name, element, internal_type, max_length, reference), ``sys_db_object``
(one row per table: name, label, super_class, always empty here) and
``sys_audit_delete`` (one row per deleted record: tablename, documentkey, payload: :mod:`sncli.emulator.audit`).
"""

from __future__ import annotations

import dataclasses
import random
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from sncli.emulator.audit import AUDIT_DELETE, audit_row
from sncli.emulator.auth import Credentials, TokenStore
from sncli.emulator.catalogue import OUT_OF_BOX_TABLES
from sncli.emulator.clock import EmulatorClock, format_time, parse_time
from sncli.emulator.faults import FaultInjector
from sncli.emulator.generate import SYS_COLUMNS, Column, columns_for, generate_rows, new_sys_id
from sncli.emulator.store import Record, Table

RESERVED = frozenset(c.element for c in SYS_COLUMNS)
DICTIONARY = "sys_dictionary"
USERS = "sys_user"
DB_OBJECT = "sys_db_object"
_DICTIONARY_COLUMNS = (
    Column("name", "string", 80),
    Column("element", "string", 80),
    Column("internal_type", "string", 40),
    Column("max_length", "integer", 40),
    Column("reference", "string", 80),
    Column("active", "boolean", 40),
)
_USER_COLUMNS = (
    Column("user_name", "string", 40),
    Column("name", "string", 80),
    Column("email", "string", 100),
    Column("time_zone", "string", 40),
    Column("active", "boolean", 40),
)
_AUDIT_COLUMNS = (
    Column("tablename", "string", 80),
    Column("documentkey", "GUID", 32),
    Column("display_value", "string", 255),
    Column("payload", "string", 4_000_000),
)
_DB_OBJECT_COLUMNS = (
    Column("name", "string", 80),
    Column("label", "string", 80),
    Column("super_class", "reference", 32, DB_OBJECT),
)
AUTO_COLUMN_TYPE = "string"
AUTO_COLUMN_LENGTH = 255


class DuplicateRecordError(Exception):
    """An insert named a sys_id that already exists."""


@dataclass
class EmulatorSettings:
    read_latency_ms: int = 0
    write_latency_ms: int = 0
    token_ttl_seconds: int = 1800
    refresh_token_ttl_seconds: int = 8_640_000
    denied_tables: set[str] = field(default_factory=set)
    user_time_zone: str = "UTC"
    strict_tables: bool = True  # unknown table -> 400 "Invalid table", as the service (False: an empty result)
    default_limit: int = 10000
    journal_size: int = 100_000
    # Row ACLs: table -> encoded query of the rows the API user may not read. As on ServiceNow, a
    # list applies sysparm_limit/offset first and drops hidden rows after (a page comes back short,
    # or empty while later rows exist); X-Total-Count and Link still count them; a GET of one is 404.
    hidden_rows: dict[str, str] = field(default_factory=dict)
    # The instance's physics (see sncli.emulator.physics): round trip per exchange, server time per
    # write, API transactions at once (0 = no limit; past it 429), a Batch API call's time budget.
    round_trip_ms: int = 0
    write_time_ms: int = 0
    max_concurrent: int = 0
    concurrency_retry_after: float = 1.0
    batch_budget_ms: int = 0

    def __setattr__(self, name: str, value: Any) -> None:
        # Assigning a setting directly (emu.state.settings.user_time_zone = "X") must take effect
        # like update_settings() does, so the owning state is told about every change.
        if name == "denied_tables":
            value = set(value)
        object.__setattr__(self, name, value)
        listener = self.__dict__.get("_listener")
        if listener is not None and not name.startswith("_"):
            listener(name, value)

    def watch(self, listener: Callable[[str, Any], None] | None) -> None:
        object.__setattr__(self, "_listener", listener)

    def copy(self) -> EmulatorSettings:
        return dataclasses.replace(self, denied_tables=set(self.denied_tables), hidden_rows=dict(self.hidden_rows))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["denied_tables"] = sorted(self.denied_tables)
        return data


@dataclass(frozen=True)
class JournalEntry:
    method: str
    path: str
    query: dict[str, str]
    status: int  # 0 = no answer was sent (connection dropped)
    body: bytes | None
    auth: str  # basic | bearer | none | invalid
    at: datetime
    table: str | None = None
    sys_id: str | None = None
    fault: str | None = None
    grant_type: str | None = None
    user: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["at"] = format_time(self.at)
        data["body"] = None if self.body is None else self.body.decode("utf-8", "replace")
        return data


def to_text(value: object) -> str:
    """A JSON value as ServiceNow stores it: everything is a string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict) and "value" in value:
        return to_text(value["value"])
    return orjson.dumps(value).decode()


def _canonical(stamp: str | None) -> str | None:
    return format_time(parse_time(stamp)) if stamp else None


@dataclass(frozen=True)
class Selection:
    records: list[Record]
    total: int | None
    columns: frozenset[str]
    references: dict[str, str]
    exists: bool
    hidden: int = 0  # rows of the page the row ACLs removed (sysparm_limit counted them)


class EmulatorState:
    def __init__(
        self,
        *,
        credentials: Credentials | None = None,
        settings: EmulatorSettings | None = None,
        clock: EmulatorClock | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self.credentials = credentials or Credentials()
        self._initial_settings = (settings or EmulatorSettings()).copy()
        self.settings = self._initial_settings.copy()
        self.clock = clock or EmulatorClock()
        self.faults = FaultInjector()
        self.tokens = TokenStore()
        self._journal: deque[JournalEntry] = deque(maxlen=self.settings.journal_size)
        self._tables: dict[str, Table] = {}
        self._seed_system_tables()

    # ------------------------------------------------------------------ lifecycle

    def reset(self) -> None:
        """Back to a fresh emulator: no data, faults, journal or tokens; real clock; initial settings."""
        with self._lock:
            self._tables = {}
            self.settings = self._initial_settings.copy()
            self.faults.clear()
            self.tokens.reset()
            self.clock.reset()
            self._journal = deque(maxlen=self.settings.journal_size)
            self._seed_system_tables()

    def update_settings(self, **values: Any) -> EmulatorSettings:
        known = {f.name for f in dataclasses.fields(EmulatorSettings)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        with self._lock:
            for name, value in values.items():
                setattr(self.settings, name, value)
            return self.settings.copy()

    @property
    def settings(self) -> EmulatorSettings:
        return self._settings

    @settings.setter
    def settings(self, value: EmulatorSettings) -> None:
        value.watch(self._setting_changed)
        self._settings = value

    def _setting_changed(self, name: str, value: Any) -> None:
        with self._lock:
            if name == "user_time_zone" and USERS in self._tables:
                users = self._tables[USERS]
                for record in list(users.records.values()):
                    if record.fields.get("user_name") == self.credentials.username:
                        self._update(users, record, {"time_zone": str(value)}, None, "system")
            elif name == "journal_size":
                self._journal = deque(self._journal, maxlen=int(value))

    # ------------------------------------------------------------------ journal

    def record_request(self, entry: JournalEntry) -> None:
        with self._lock:
            self._journal.append(entry)

    def journal(self) -> list[JournalEntry]:
        with self._lock:
            return list(self._journal)

    def clear_journal(self) -> None:
        with self._lock:
            self._journal.clear()

    def token_issue_count(self) -> int:
        return self.tokens.issued

    # ------------------------------------------------------------------ public data API

    def define_table(self, table: str, columns: Mapping[str, str] | Sequence[Column]) -> None:
        """Declare columns and their internal types (``{"priority": "integer"}`` or Column objects)."""
        if isinstance(columns, Mapping):
            specs = [Column(name, kind, AUTO_COLUMN_LENGTH) for name, kind in columns.items()]
        else:
            specs = list(columns)
        with self._lock:
            self._define_columns(self._table(table), specs)

    def insert(self, table: str, fields: Mapping[str, object], *, at: datetime | str | None = None) -> dict[str, str]:
        """Insert one record; ``sys_id`` and ``sys_created_on``/``sys_updated_on`` in ``fields`` are honoured."""
        return self.bulk_insert(table, [fields], at=at)[0]

    def bulk_insert(
        self, table: str, rows: Iterable[Mapping[str, object]], *, at: datetime | str | None = None
    ) -> list[dict[str, str]]:
        when = parse_time(at) if at is not None else None
        with self._lock:
            target = self._table(table)
            built = [self._build(target, row, when, self.credentials.username, trusted=True) for row in rows]
            self._check_new_ids(target, [r["sys_id"] for r in built])
            self._ensure_columns(target, built)
            records = [Record(r) for r in built]
            target.add_many(records)
            return [dict(r.fields) for r in records]

    def generate(
        self,
        table: str,
        count: int,
        *,
        at: datetime | str | None = None,
        spread_seconds: int = 0,
        field_count: int = 30,
        record_bytes: int = 1024,
        seed: int = 0,
    ) -> list[str]:
        """Add ``count`` incident-like records; timestamps run from ``at`` over ``spread_seconds``.

        With ``spread_seconds`` 0 every record shares one second. ``at`` defaults to
        now minus ``spread_seconds`` so the newest record is not in the future.
        """
        if count < 0 or spread_seconds < 0:
            raise ValueError("count and spread_seconds must be >= 0")
        columns = columns_for(field_count)
        with self._lock:
            target = self._table(table)
            start = parse_time(at) if at is not None else self.clock.now() - timedelta(seconds=spread_seconds)
            start = start.replace(microsecond=0)
            rng = random.Random(f"{seed}/{table}/{len(target)}")
            stamps: dict[int, str] = {}
            timestamps = []
            for i in range(count):
                offset = (i * spread_seconds) // count if count else 0
                text = stamps.get(offset)
                if text is None:
                    text = stamps[offset] = format_time(start + timedelta(seconds=offset))
                timestamps.append(text)
            sys_ids: list[str] = []
            seen: set[str] = set()
            while len(sys_ids) < count:
                candidate = new_sys_id(rng)
                if candidate not in target.records and candidate not in seen:
                    seen.add(candidate)
                    sys_ids.append(candidate)
            rows = generate_rows(
                rng,
                sys_ids=sys_ids,
                timestamps=timestamps,
                first_number=len(target) + 1,
                columns=columns,
                record_bytes=record_bytes,
                user=self.credentials.username,
            )
            self._define_columns(target, columns)
            target.add_many([Record(row) for row in rows])
            return sys_ids

    def update(
        self, table: str, sys_id: str, fields: Mapping[str, object], *, at: datetime | str | None = None
    ) -> dict[str, str] | None:
        when = parse_time(at) if at is not None else None
        with self._lock:
            target = self._tables.get(table)
            record = target.records.get(sys_id) if target is not None else None
            if target is None or record is None:
                return None
            return dict(self._update(target, record, fields, when, self.credentials.username).fields)

    def delete(self, table: str, sys_id: str) -> bool:
        with self._lock:
            return self._delete(table, sys_id, self.credentials.username)

    def get(self, table: str, sys_id: str) -> dict[str, str] | None:
        with self._lock:
            target = self._tables.get(table)
            record = target.records.get(sys_id) if target is not None else None
            return dict(record.fields) if record else None

    def records(self, table: str) -> list[dict[str, str]]:
        """Every record of ``table`` in (sys_updated_on, sys_id) order."""
        with self._lock:
            target = self._tables.get(table)
            return [dict(r.fields) for r in target.ordered()] if target is not None else []

    def count(self, table: str) -> int:
        with self._lock:
            target = self._tables.get(table)
            return len(target) if target is not None else 0

    def tables(self) -> dict[str, int]:
        with self._lock:
            return {name: len(t) for name, t in sorted(self._tables.items())}

    def columns(self, table: str) -> dict[str, str]:
        with self._lock:
            target = self._tables.get(table)
            return dict(target.columns) if target is not None else {}

    # ------------------------------------------------------------------ Table API (used by the server)

    def has_table(self, table: str) -> bool:
        """Declared here, or one every instance has (see :mod:`sncli.emulator.catalogue`)."""
        with self._lock:
            return table in self._tables or table in OUT_OF_BOX_TABLES

    def select(self, table: str, query: str, *, limit: int, offset: int, want_count: bool) -> Selection:
        with self._lock:
            target = self._tables.get(table)
            if target is None:
                return Selection([], 0, frozenset(), {}, False)
            records, total = target.select(query, limit=limit, offset=offset, want_count=want_count)
            visible = [r for r in records if self._readable(table, target, r)]
            return Selection(visible, total, frozenset(target.columns), dict(target.references), True,
                             hidden=len(records) - len(visible))

    def fetch(self, table: str, sys_id: str) -> Selection:
        with self._lock:
            target = self._tables.get(table)
            record = target.records.get(sys_id) if target is not None else None
            if target is None:
                return Selection([], 0, frozenset(), {}, False)
            if record is not None and not self._readable(table, target, record):
                record = None  # ServiceNow answers 404 for a row its ACLs hide
            return Selection([record] if record else [], None, frozenset(target.columns), dict(target.references), True)

    # ------------------------------------------------------------------ Aggregate API (sncli.emulator.aggregate)

    def any_hidden(self, table: str) -> bool:
        """True when the row ACLs hide at least one record of ``table`` from the API user."""
        with self._lock:
            target = self._tables.get(table)
            rule = self.settings.hidden_rows.get(table)
            if target is None or not rule:
                return False
            return bool(target.select(rule, limit=1, offset=0, want_count=False)[0])

    def count_matching(self, table: str, query: str) -> int:
        """How many records of ``table`` match ``query`` (what ``sysparm_count`` answers)."""
        with self._lock:
            target = self._tables.get(table)
            if target is None:
                return 0
            return target.select(query, limit=0, offset=0, want_count=True)[1] or 0

    def group_counts(self, table: str, query: str, fields: list[str]) -> dict[tuple[str, ...], int]:
        """Records of ``table`` matching ``query``, counted by the values of ``fields``."""
        with self._lock:
            target = self._tables.get(table)
            if target is None:
                return {}
            rows = [r.fields for r in target.select(query, limit=len(target), offset=0, want_count=False)[0]]
        return dict(Counter(tuple(row.get(f, "") for f in fields) for row in rows))

    def _readable(self, table: str, target: Table, record: Record) -> bool:
        rule = self.settings.hidden_rows.get(table)
        return not rule or not target.compile(rule).matches(record.fields)

    def api_insert(self, table: str, body: Mapping[str, object], user: str) -> Selection:
        """POST: system fields are the server's, except a client-chosen sys_id."""
        with self._lock:
            target = self._table(table)
            built = self._build(target, body, None, user, trusted=False)
            self._check_new_ids(target, [built["sys_id"]])
            self._ensure_columns(target, [built])
            for column in target.columns:  # the service stores (and answers) every column, empty if unset
                built.setdefault(column, "")
            record = Record(built)
            target.add(record)
            return Selection([record], None, frozenset(target.columns), dict(target.references), True)

    def api_update(self, table: str, sys_id: str, body: Mapping[str, object], user: str) -> Selection:
        with self._lock:
            target = self._tables.get(table)
            record = target.records.get(sys_id) if target is not None else None
            if target is None or record is None:
                return Selection([], None, frozenset(), {}, target is not None)
            updated = self._update(target, record, body, None, user)
            return Selection([updated], None, frozenset(target.columns), dict(target.references), True)

    def api_delete(self, table: str, sys_id: str, user: str) -> bool:
        with self._lock:
            return self._delete(table, sys_id, user)

    # ------------------------------------------------------------------ internals (lock held)

    def _table(self, name: str) -> Table:
        table = self._tables.get(name)
        if table is None:
            table = self._tables[name] = Table(name)
            self._define_columns(table, SYS_COLUMNS)
            self._register_object(name)
        return table

    def _register_object(self, name: str) -> None:
        """A sys_db_object row per table (no parent: every emulated table is a base table)."""
        stamp = self.clock.stamp()
        row = {"name": name, "label": name.replace("_", " ").title(), "super_class": ""}
        built = self._system_fields(row, uuid.uuid4().hex, stamp, stamp, "system", "0")
        self._tables[DB_OBJECT].add(Record(built))

    def _seed_system_tables(self) -> None:
        dictionary = self._tables[DICTIONARY] = Table(DICTIONARY)
        for column in (*SYS_COLUMNS, *_DICTIONARY_COLUMNS):
            dictionary.add_column(column.element, column.internal_type, column.reference)
        objects = self._tables[DB_OBJECT] = Table(DB_OBJECT)
        self._define_columns(objects, (*SYS_COLUMNS, *_DB_OBJECT_COLUMNS))
        self._register_object(DICTIONARY)
        self._register_object(DB_OBJECT)
        self._define_columns(self._table(USERS), _USER_COLUMNS)
        self._define_columns(self._table(AUDIT_DELETE), _AUDIT_COLUMNS)
        self.bulk_insert(
            USERS,
            [
                {
                    "user_name": self.credentials.username,
                    "name": "System Administrator",
                    "email": f"{self.credentials.username}@example.com",
                    "time_zone": self.settings.user_time_zone,
                    "active": "true",
                }
            ],
        )

    def _define_columns(self, table: Table, columns: Iterable[Column]) -> None:
        rows = []
        for column in columns:
            if column.element in table.columns:
                continue
            table.add_column(column.element, column.internal_type, column.reference)
            if table.name != DICTIONARY:
                rows.append(
                    {
                        "name": table.name,
                        "element": column.element,
                        "internal_type": column.internal_type,
                        "max_length": str(column.max_length),
                        "reference": column.reference or "",
                        "active": "true",
                    }
                )
        if rows:
            dictionary = self._tables[DICTIONARY]
            stamp = self.clock.stamp()
            built = [self._system_fields(row, uuid.uuid4().hex, stamp, stamp, "system", "0") for row in rows]
            dictionary.add_many([Record(r) for r in built])

    def _ensure_columns(self, table: Table, rows: Iterable[Mapping[str, str]]) -> None:
        new: dict[str, None] = {}
        for row in rows:
            for name in row:
                if name not in table.columns:
                    new[name] = None
        if new:
            self._define_columns(table, [Column(n, AUTO_COLUMN_TYPE, AUTO_COLUMN_LENGTH) for n in new])

    @staticmethod
    def _system_fields(
        values: Mapping[str, str], sys_id: str, created: str, updated: str, user: str, mod_count: str
    ) -> dict[str, str]:
        row = {"sys_id": sys_id}
        row.update((k, v) for k, v in values.items() if k not in RESERVED)
        row["sys_created_on"] = created
        row["sys_created_by"] = values.get("sys_created_by") or user
        row["sys_updated_on"] = updated
        row["sys_updated_by"] = user
        row["sys_mod_count"] = mod_count
        return row

    def _build(
        self, table: Table, body: Mapping[str, object], at: datetime | None, user: str, *, trusted: bool
    ) -> dict[str, str]:
        values = {str(k): to_text(v) for k, v in body.items()}
        sys_id = values.get("sys_id") or uuid.uuid4().hex
        stamp = format_time(at) if at is not None else self.clock.stamp()
        created = updated = stamp
        mod_count = "0"
        if trusted and at is None:
            # Seeded timestamps are normalized to ServiceNow's text so they sort and compare like real ones.
            created = _canonical(values.get("sys_created_on")) or stamp
            updated = _canonical(values.get("sys_updated_on")) or created
        if trusted:
            mod_count = values.get("sys_mod_count") or "0"
        else:
            values.pop("sys_created_by", None)
        return self._system_fields(values, sys_id, created, updated, user, mod_count)

    @staticmethod
    def _check_new_ids(table: Table, sys_ids: Sequence[str]) -> None:
        if len(set(sys_ids)) != len(sys_ids):
            raise DuplicateRecordError("the same sys_id appears twice in one insert")
        for sys_id in sys_ids:
            if sys_id in table.records:
                raise DuplicateRecordError(f"a record with sys_id {sys_id} already exists in {table.name}")

    def _update(
        self, table: Table, record: Record, body: Mapping[str, object], at: datetime | None, user: str
    ) -> Record:
        changes = {str(k): to_text(v) for k, v in body.items() if str(k) not in RESERVED}
        if all(record.fields.get(k) == v for k, v in changes.items()):
            return record  # ServiceNow skips an update that changes nothing: no new sys_updated_on
        fields = dict(record.fields)
        fields.update(changes)
        fields["sys_updated_on"] = format_time(at) if at is not None else self.clock.stamp()
        fields["sys_updated_by"] = user
        fields["sys_mod_count"] = str(int(fields.get("sys_mod_count") or "0") + 1)
        self._ensure_columns(table, [changes])
        new = Record(fields)
        table.replace(record, new)
        return new

    def _delete(self, table_name: str, sys_id: str, user: str) -> bool:
        table = self._tables.get(table_name)
        removed = table.remove(sys_id) if table is not None else None
        if removed is None:
            return False
        if table_name != AUDIT_DELETE:
            stamp = self.clock.stamp()
            row = self._system_fields(audit_row(table_name, removed.fields), uuid.uuid4().hex, stamp, stamp, user, "0")
            self._table(AUDIT_DELETE).add(Record(row))
        return True
