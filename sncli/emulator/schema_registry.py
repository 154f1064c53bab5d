"""An in-memory Confluent-compatible Schema Registry for tests and the demo.

No Confluent-compatible registry can be installed on the machines this project
targets, so this one implements the REST calls that
``confluent_kafka.schema_registry.SchemaRegistryClient`` makes for Avro
serialization (register, lookup, schemas by id, subject versions, config,
compatibility checks) with the real registry's status codes, error codes and
media type. Avro compatibility follows the Avro schema-resolution rules, so a
schema evolution the real registry refuses is refused here too.

Run it with ``python -m sncli.emulator.schema_registry --port 18081`` or in
process::

    reg = SchemaRegistryEmulator().start()
    ... reg.url ...
    reg.stop()
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
DEFAULT_PORT = 18081

COMPATIBILITY_LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)
SCHEMA_TYPES = ("AVRO", "JSON", "PROTOBUF")


class RegistryError(Exception):
    """An error answered to the client as ``{"error_code", "message"}`` with an HTTP status."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def subject_not_found(subject: str) -> RegistryError:
    return RegistryError(404, 40401, f"Subject '{subject}' not found.")


def version_not_found(subject: str, version: int) -> RegistryError:
    return RegistryError(404, 40402, f"Version {version} not found for subject '{subject}'.")


def schema_not_found(detail: str = "Schema not found") -> RegistryError:
    return RegistryError(404, 40403, detail)


def invalid_schema(detail: str) -> RegistryError:
    return RegistryError(422, 42201, f"Invalid schema: {detail}")


# --------------------------------------------------------------------------------------------
# Avro compatibility (pure): can a reader schema read data written with a writer schema?
# --------------------------------------------------------------------------------------------

AvroSchema = Any  # a fastavro-parsed schema: str, list (union) or dict
Names = dict[str, Any]

_PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"int", "long", "float", "double"}),
    "long": frozenset({"long", "float", "double"}),
    "float": frozenset({"float", "double"}),
    "double": frozenset({"double"}),
    "string": frozenset({"string", "bytes"}),
    "bytes": frozenset({"bytes", "string"}),
    "null": frozenset({"null"}),
    "boolean": frozenset({"boolean"}),
}


@dataclass(frozen=True)
class ParsedAvro:
    """A validated Avro schema with its named types (full name -> definition)."""

    schema: AvroSchema
    names: Names


_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _strict_avro(node: Any) -> None:
    """What the Java Avro parser refuses and fastavro lets through: records without a ``fields``
    list, repeated or malformed field names."""
    if isinstance(node, list):
        for branch in node:
            _strict_avro(branch)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind in ("record", "error"):
        fields = node.get("fields")
        if not isinstance(fields, list):
            raise invalid_schema(f"record {node.get('name')!r} has no fields list")
        seen: set[str] = set()
        for f in fields:
            name = f.get("name") if isinstance(f, dict) else None
            if not isinstance(name, str) or not _AVRO_NAME.fullmatch(name):
                raise invalid_schema(f"record {node.get('name')!r} has a field with an invalid name: {name!r}")
            if name in seen:
                raise invalid_schema(f"record {node.get('name')!r} has the field {name!r} twice")
            seen.add(name)
            _strict_avro(f.get("type"))
    elif kind == "array":
        _strict_avro(node.get("items"))
    elif kind == "map":
        _strict_avro(node.get("values"))
    elif isinstance(kind, dict | list):
        _strict_avro(kind)


def parse_avro(schema_str: str, references: Iterable[str] = ()) -> ParsedAvro:
    """Parse and validate with fastavro; ``references`` are the schema strings of referenced types."""
    import fastavro

    named: Names = {}
    try:
        for ref in references:
            fastavro.parse_schema(json.loads(ref), named_schemas=named)
        raw = json.loads(schema_str)
        _strict_avro(raw)
        parsed = fastavro.parse_schema(raw, named_schemas=named)
    except RegistryError:
        raise
    except KeyError as exc:  # fastavro's way to say a required attribute is missing
        raise invalid_schema(f"missing attribute {exc}") from exc
    except Exception as exc:  # SchemaParseException, UnknownType, ValueError, JSON errors
        raise invalid_schema(str(exc) or type(exc).__name__) from exc
    return ParsedAvro(parsed, named)


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _names_match(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
    reader_name, writer_name = str(reader.get("name", "")), str(writer.get("name", ""))
    if reader_name == writer_name or _short(reader_name) == _short(writer_name):
        return True
    aliases = [str(a) for a in reader.get("aliases", [])]
    return writer_name in aliases or _short(writer_name) in {_short(a) for a in aliases}


class _Checker:
    """Collects every incompatibility between a reader and a writer, with a path to each."""

    def __init__(self, reader: ParsedAvro, writer: ParsedAvro) -> None:
        self.reader_names = reader.names
        self.writer_names = writer.names
        self.messages: list[str] = []
        # Named pairs being compared; recursion into the same pair is assumed compatible.
        self._in_progress: set[tuple[str, str]] = set()

    def _resolve(self, schema: AvroSchema, names: Names) -> AvroSchema:
        while isinstance(schema, str) and schema in names:
            schema = names[schema]
        if isinstance(schema, dict) and schema.get("type") in _PROMOTIONS:
            return schema["type"]  # a primitive with attributes (e.g. a logical type)
        return schema

    @staticmethod
    def _kind(schema: AvroSchema) -> str:
        if isinstance(schema, list):
            return "union"
        if isinstance(schema, dict):
            return str(schema.get("type"))
        return str(schema)

    def check(self, reader: AvroSchema, writer: AvroSchema, path: str) -> bool:
        reader = self._resolve(reader, self.reader_names)
        writer = self._resolve(writer, self.writer_names)
        rkind, wkind = self._kind(reader), self._kind(writer)

        if wkind == "union":
            ok = True
            for i, branch in enumerate(writer):
                ok = self._readable_branch(reader, branch, f"{path}/{i}") and ok
            return ok
        if rkind == "union":
            if any(self._quiet_check(branch, writer) for branch in reader):
                return True
            return self._fail(path, f"reader union {self._describe(reader)} has no branch for writer type {wkind}")

        if wkind in _PROMOTIONS:
            if rkind in _PROMOTIONS[wkind]:
                return True
            return self._fail(path, f"reader type {rkind} cannot read writer type {wkind}")
        if rkind != wkind:
            return self._fail(path, f"reader type {rkind} cannot read writer type {wkind}")

        if rkind == "array":
            return self.check(reader["items"], writer["items"], f"{path}/items")
        if rkind == "map":
            return self.check(reader["values"], writer["values"], f"{path}/values")
        if rkind == "fixed":
            if not _names_match(reader, writer):
                return self._fail(path, f"fixed name {reader['name']} does not match {writer['name']}")
            if reader.get("size") != writer.get("size"):
                return self._fail(path, f"fixed size {reader.get('size')} != writer size {writer.get('size')}")
            return True
        if rkind == "enum":
            if not _names_match(reader, writer):
                return self._fail(path, f"enum name {reader['name']} does not match {writer['name']}")
            missing = [s for s in writer.get("symbols", []) if s not in reader.get("symbols", [])]
            if missing and "default" not in reader:
                return self._fail(path, f"reader enum {reader['name']} lacks writer symbols {missing}")
            return True
        if rkind == "record":
            return self._check_record(reader, writer, path)
        return self._fail(path, f"unsupported Avro type {rkind}")

    def _readable_branch(self, reader: AvroSchema, writer_branch: AvroSchema, path: str) -> bool:
        resolved = self._resolve(reader, self.reader_names)
        if self._kind(resolved) != "union":
            return self.check(resolved, writer_branch, path)
        if any(self._quiet_check(branch, writer_branch) for branch in resolved):
            return True
        writer_kind = self._kind(self._resolve(writer_branch, self.writer_names))
        return self._fail(path, f"reader union {self._describe(resolved)} has no branch for writer type {writer_kind}")

    def _check_record(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> bool:
        if not _names_match(reader, writer):
            return self._fail(path, f"record name {reader['name']} does not match writer record {writer['name']}")
        key = (str(reader["name"]), str(writer["name"]))
        if key in self._in_progress:
            return True
        self._in_progress.add(key)
        try:
            writer_fields = {f["name"]: f for f in writer.get("fields", [])}
            ok = True
            for i, rfield in enumerate(reader.get("fields", [])):
                wfield = writer_fields.get(rfield["name"])
                if wfield is None:
                    for alias in rfield.get("aliases", []):
                        wfield = writer_fields.get(alias)
                        if wfield is not None:
                            break
                fpath = f"{path}/fields/{i}"
                if wfield is None:
                    if "default" not in rfield:
                        ok = self._fail(
                            fpath,
                            f"reader field '{rfield['name']}' is missing from the writer schema and has no default",
                        )
                    continue
                ok = self.check(rfield["type"], wfield["type"], f"{fpath}/type") and ok
            return ok
        finally:
            self._in_progress.discard(key)

    def _quiet_check(self, reader: AvroSchema, writer: AvroSchema) -> bool:
        saved = len(self.messages)
        ok = self.check(reader, writer, "")
        del self.messages[saved:]
        return ok

    def _describe(self, union: list[Any]) -> str:
        return "[" + ", ".join(self._kind(self._resolve(b, self.reader_names)) for b in union) + "]"

    def _fail(self, path: str, message: str) -> bool:
        self.messages.append(f"{path or '/'}: {message}")
        return False


def avro_read_problems(reader: ParsedAvro, writer: ParsedAvro) -> list[str]:
    """Why ``reader`` cannot read data written with ``writer``; empty when it can."""
    checker = _Checker(reader, writer)
    checker.check(reader.schema, writer.schema, "")
    return checker.messages


def compatibility_problems(level: str, new: ParsedAvro, existing_oldest_first: list[ParsedAvro]) -> list[str]:
    """Problems that stop ``new`` from being registered after ``existing`` under ``level``."""
    if level == "NONE" or not existing_oldest_first:
        return []
    targets = existing_oldest_first if level.endswith("_TRANSITIVE") else existing_oldest_first[-1:]
    base = level.removesuffix("_TRANSITIVE")
    problems: list[str] = []
    for old in targets:
        if base in ("BACKWARD", "FULL"):
            problems += [
                f"new schema cannot read data written by an earlier one: {m}" for m in avro_read_problems(new, old)
            ]
        if base in ("FORWARD", "FULL"):
            problems += [
                f"an earlier schema cannot read data written by the new one: {m}" for m in avro_read_problems(old, new)
            ]
    return problems


# --------------------------------------------------------------------------------------------
# Registry state (thread-safe, in memory)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredSchema:
    schema_id: int
    schema_type: str
    schema: str  # canonical JSON text (whitespace removed) for Avro/JSON; as given otherwise
    references: tuple[tuple[str, str, int], ...]  # (name, subject, version)

    def body(self) -> dict[str, Any]:
        """The fields the real registry returns for a schema."""
        out: dict[str, Any] = {"schema": self.schema}
        if self.schema_type != "AVRO":
            out["schemaType"] = self.schema_type
        if self.references:
            out["references"] = [{"name": n, "subject": s, "version": v} for n, s, v in self.references]
        return out


@dataclass
class SubjectVersion:
    version: int
    schema_id: int
    deleted: bool = False


@dataclass
class _Subject:
    versions: list[SubjectVersion] = field(default_factory=list)

    def live(self) -> list[SubjectVersion]:
        return [v for v in self.versions if not v.deleted]


def canonical_text(schema_type: str, text: str) -> str:
    """Whitespace-insensitive identity of a schema, as the registry compares them."""
    if schema_type in ("AVRO", "JSON"):
        try:
            return json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
        except json.JSONDecodeError as exc:
            raise invalid_schema(f"not valid JSON: {exc}") from exc
    return text


class RegistryState:
    """Subjects, versions, ids and compatibility settings; every method is atomic."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._schemas: dict[int, StoredSchema] = {}
        self._ids: dict[tuple[str, str, tuple[tuple[str, str, int], ...]], int] = {}
        self._subjects: dict[str, _Subject] = {}
        self._global_level = "BACKWARD"
        self._subject_levels: dict[str, str] = {}

    # -- reading -------------------------------------------------------------------------------

    def schema_by_id(self, schema_id: int) -> StoredSchema:
        with self._lock:
            stored = self._schemas.get(schema_id)
            if stored is None:
                raise schema_not_found(f"Schema {schema_id} not found")
            return stored

    def subjects(self, *, deleted: bool = False, deleted_only: bool = False, prefix: str = "") -> list[str]:
        with self._lock:
            out = []
            for name, subj in sorted(self._subjects.items()):
                if not name.startswith(prefix) or not subj.versions:
                    continue
                has_live = bool(subj.live())
                has_deleted = any(v.deleted for v in subj.versions)
                if (deleted_only and has_deleted) or (not deleted_only and (has_live or (deleted and has_deleted))):
                    out.append(name)
            return out

    def versions(self, subject: str, *, deleted: bool = False) -> list[int]:
        with self._lock:
            subj = self._subject(subject, deleted=deleted)
            return [v.version for v in subj.versions if deleted or not v.deleted]

    def version(self, subject: str, version: int | None, *, deleted: bool = False) -> SubjectVersion:
        """``version`` None means latest."""
        with self._lock:
            subj = self._subject(subject, deleted=deleted)
            candidates = [v for v in subj.versions if deleted or not v.deleted]
            if version is None:
                if not candidates:
                    raise subject_not_found(subject)
                return candidates[-1]
            for v in candidates:
                if v.version == version:
                    return v
            raise version_not_found(subject, version)

    def subjects_of(self, schema_id: int, *, deleted: bool = False) -> list[tuple[str, int]]:
        with self._lock:
            self.schema_by_id(schema_id)
            return [
                (name, v.version)
                for name, subj in sorted(self._subjects.items())
                for v in subj.versions
                if v.schema_id == schema_id and (deleted or not v.deleted)
            ]

    def lookup(
        self,
        subject: str,
        schema_type: str,
        text: str,
        refs: tuple[tuple[str, str, int], ...],
        *,
        deleted: bool = False,
    ) -> SubjectVersion:
        with self._lock:
            subj = self._subject(subject, deleted=True)
            key = (schema_type, canonical_text(schema_type, text), refs)
            schema_id = self._ids.get(key)
            for v in reversed(subj.versions):
                if v.schema_id == schema_id and (deleted or not v.deleted):
                    return v
            raise schema_not_found()

    def level(self, subject: str | None = None) -> str:
        with self._lock:
            if subject is None:
                return self._global_level
            return self._subject_levels.get(subject, self._global_level)

    def subject_level(self, subject: str) -> str | None:
        with self._lock:
            return self._subject_levels.get(subject)

    # -- writing -------------------------------------------------------------------------------

    def register(
        self, subject: str, schema_type: str, text: str, refs: tuple[tuple[str, str, int], ...]
    ) -> tuple[int, int]:
        """Register under ``subject``; returns (id, version). Idempotent for a schema already there."""
        if schema_type not in SCHEMA_TYPES:
            raise RegistryError(422, 42201, f"Invalid schema type {schema_type}")
        canonical = canonical_text(schema_type, text)
        with self._lock:
            parsed = self._parse(schema_type, canonical, refs)
            subj = self._subjects.setdefault(subject, _Subject())
            key = (schema_type, canonical, refs)
            known_id = self._ids.get(key)
            for v in subj.live():
                if v.schema_id == known_id:
                    return v.schema_id, v.version
            if parsed is not None:
                problems = self._problems(subject, parsed, self.level(subject))
                if problems:
                    raise RegistryError(
                        409,
                        409,
                        f'Schema being registered is incompatible with an earlier schema for subject "{subject}", '
                        f"details: {problems}",
                    )
            schema_id = known_id if known_id is not None else (max(self._schemas, default=0) + 1)
            self._schemas[schema_id] = StoredSchema(schema_id, schema_type, canonical, refs)
            self._ids[key] = schema_id
            next_version = max((v.version for v in subj.versions), default=0) + 1
            subj.versions.append(SubjectVersion(next_version, schema_id))
            return schema_id, next_version

    def check_compatibility(
        self,
        subject: str,
        schema_type: str,
        text: str,
        refs: tuple[tuple[str, str, int], ...],
        version: int | None,
        *,
        all_versions: bool = False,
    ) -> list[str]:
        """Problems of ``text`` against one version (None = latest) or, with all_versions, per the level."""
        canonical = canonical_text(schema_type, text)
        with self._lock:
            parsed = self._parse(schema_type, canonical, refs)
            if parsed is None:
                return []
            level = self.level(subject)
            if all_versions:
                if subject not in self._subjects:
                    return []
                return self._problems(subject, parsed, level)
            target = self.version(subject, version)
            stored = self._schemas[target.schema_id]
            if stored.schema_type != "AVRO":
                return []
            old = self._parse("AVRO", stored.schema, stored.references)
            assert old is not None
            return compatibility_problems(level.removesuffix("_TRANSITIVE"), parsed, [old])

    def delete_subject(self, subject: str, *, permanent: bool) -> list[int]:
        with self._lock:
            subj = self._subject(subject, deleted=True)
            if permanent:
                live = subj.live()
                if live:
                    raise RegistryError(
                        404,
                        40405,
                        f"Subject '{subject}' was not deleted first before being permanently deleted",
                    )
                gone = [v.version for v in subj.versions]
                del self._subjects[subject]
                self._subject_levels.pop(subject, None)
                return gone
            live = subj.live()
            if not live:
                raise RegistryError(
                    404, 40404, f"Subject '{subject}' was soft deleted. Set permanent=true to delete permanently"
                )
            for v in live:
                v.deleted = True
            return [v.version for v in live]

    def delete_version(self, subject: str, version: int | None, *, permanent: bool) -> int:
        with self._lock:
            subj = self._subject(subject, deleted=True)
            target = self.version(subject, version, deleted=permanent)
            if permanent:
                if not target.deleted:
                    raise RegistryError(
                        404,
                        40407,
                        f"Subject '{subject}' Version {target.version} was not deleted first before being "
                        "permanently deleted",
                    )
                subj.versions.remove(target)
                if not subj.versions:
                    del self._subjects[subject]
            else:
                target.deleted = True
            return target.version

    def set_level(self, level: str, subject: str | None = None) -> str:
        level = level.upper()
        if level not in COMPATIBILITY_LEVELS:
            raise RegistryError(
                422, 42203, f"Invalid compatibility level. Valid values are {list(COMPATIBILITY_LEVELS)}"
            )
        with self._lock:
            if subject is None:
                self._global_level = level
            else:
                self._subject_levels[subject] = level
            return level

    def delete_level(self, subject: str | None) -> str:
        with self._lock:
            if subject is None:
                old = self._global_level
                self._global_level = "BACKWARD"
                return old
            old_level = self._subject_levels.pop(subject, None)
            if old_level is None:
                raise subject_not_found(subject)
            return old_level

    # -- internals -----------------------------------------------------------------------------

    def _subject(self, subject: str, *, deleted: bool) -> _Subject:
        subj = self._subjects.get(subject)
        if subj is None or not subj.versions or (not deleted and not subj.live()):
            raise subject_not_found(subject)
        return subj

    def _reference_texts(self, refs: tuple[tuple[str, str, int], ...]) -> list[str]:
        texts = []
        for name, subject, version in refs:
            try:
                target = self.version(subject, None if version == -1 else version, deleted=True)
            except RegistryError as exc:
                raise invalid_schema(f"reference {name} -> {subject} version {version}: {exc.message}") from exc
            stored = self._schemas[target.schema_id]
            texts += self._reference_texts(stored.references)
            texts.append(stored.schema)
        return texts

    def _parse(self, schema_type: str, canonical: str, refs: tuple[tuple[str, str, int], ...]) -> ParsedAvro | None:
        if schema_type != "AVRO":
            return None
        return parse_avro(canonical, self._reference_texts(refs))

    def _problems(self, subject: str, new: ParsedAvro, level: str) -> list[str]:
        subj = self._subjects.get(subject)
        existing: list[ParsedAvro] = []
        for v in subj.live() if subj else []:
            stored = self._schemas[v.schema_id]
            parsed = self._parse(stored.schema_type, stored.schema, stored.references)
            if parsed is not None:
                existing.append(parsed)
        return compatibility_problems(level, new, existing)


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

Query = dict[str, str]
Handler = Callable[["_Request"], tuple[int, Any]]


@dataclass
class _Request:
    method: str
    parts: list[str]  # decoded path segments
    query: Query
    body: Any


def _flag(query: Query, name: str) -> bool:
    return query.get(name, "false").lower() == "true"


def _version_arg(raw: str) -> int | None:
    """``latest`` / -1 -> None; a positive int -> itself; anything else -> 42202."""
    if raw == "latest" or raw == "-1":
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1 or value > 2**31 - 1:
        raise RegistryError(
            422,
            42202,
            f"The specified version '{raw}' is not a valid version id. Allowed values are between "
            '[1, 2^31-1] and the string "latest"',
        )
    return value


def _schema_request(body: Any) -> tuple[str, str, tuple[tuple[str, str, int], ...]]:
    if not isinstance(body, dict):
        raise RegistryError(422, 42201, "Invalid schema: the request body must be a JSON object")
    text = body.get("schema")
    if not isinstance(text, str) or not text.strip():
        raise RegistryError(422, 42201, "Empty schema")
    schema_type = str(body.get("schemaType") or "AVRO").upper()
    refs: list[tuple[str, str, int]] = []
    for ref in body.get("references") or []:
        try:
            refs.append((str(ref["name"]), str(ref["subject"]), int(ref["version"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise invalid_schema(f"bad reference {ref!r}") from exc
    return schema_type, text, tuple(refs)


class RegistryApp:
    """Routes a request to the registry state; transport-free so it is easy to reason about."""

    def __init__(self, state: RegistryState) -> None:
        self.state = state

    def handle(self, req: _Request) -> tuple[int, Any]:
        p, m = req.parts, req.method
        st = self.state
        if not p:
            return 200, {}
        head = p[0]
        if head == "subjects":
            return self._subjects(req)
        if head == "schemas":
            return self._schemas(req)
        if head == "config" and len(p) <= 2:
            return self._config(req, p[1] if len(p) == 2 else None)
        if head == "compatibility" and m == "POST" and len(p) in (4, 5) and p[1] == "subjects" and p[3] == "versions":
            schema_type, text, refs = _schema_request(req.body)
            if len(p) == 5:
                problems = st.check_compatibility(p[2], schema_type, text, refs, _version_arg(p[4]))
            else:
                problems = st.check_compatibility(p[2], schema_type, text, refs, None, all_versions=True)
            return 200, self._compat_answer(problems, req.query)
        if head == "mode" and len(p) <= 2 and m == "GET":
            return 200, {"mode": "READWRITE"}
        if head == "contexts" and len(p) == 1 and m == "GET":
            return 200, ["."]
        return self._not_found()

    @staticmethod
    def _compat_answer(problems: list[str], query: Query) -> dict[str, Any]:
        answer: dict[str, Any] = {"is_compatible": not problems}
        if _flag(query, "verbose"):
            answer["messages"] = problems
        return answer

    @staticmethod
    def _not_found() -> tuple[int, Any]:
        raise RegistryError(404, 404, "HTTP 404 Not Found")

    def _subjects(self, req: _Request) -> tuple[int, Any]:
        p, m, q, st = req.parts, req.method, req.query, self.state
        deleted = _flag(q, "deleted")
        if len(p) == 1 and m == "GET":
            return 200, st.subjects(
                deleted=deleted, deleted_only=_flag(q, "deleted_only"), prefix=q.get("subjectPrefix", "")
            )
        if len(p) < 2:
            return self._not_found()
        subject = p[1]
        if len(p) == 2:
            if m == "POST":
                schema_type, text, refs = _schema_request(req.body)
                v = st.lookup(subject, schema_type, text, refs, deleted=deleted)
                return 200, self._version_body(subject, v)
            if m == "DELETE":
                return 200, st.delete_subject(subject, permanent=_flag(q, "permanent"))
            return self._not_found()
        if p[2] != "versions":
            return self._not_found()
        if len(p) == 3:
            if m == "GET":
                return 200, st.versions(subject, deleted=deleted)
            if m == "POST":
                schema_type, text, refs = _schema_request(req.body)
                schema_id, _version = st.register(subject, schema_type, text, refs)
                return 200, {"id": schema_id}
            return self._not_found()
        version = _version_arg(p[3])
        if len(p) == 4:
            if m == "GET":
                return 200, self._version_body(subject, st.version(subject, version, deleted=deleted))
            if m == "DELETE":
                return 200, st.delete_version(subject, version, permanent=_flag(q, "permanent"))
            return self._not_found()
        if len(p) == 5 and m == "GET" and p[4] == "schema":
            v = st.version(subject, version, deleted=deleted)
            return 200, json.loads(st.schema_by_id(v.schema_id).schema)
        if len(p) == 5 and m == "GET" and p[4] == "referencedby":
            st.version(subject, version)
            return 200, []
        return self._not_found()

    def _version_body(self, subject: str, v: SubjectVersion) -> dict[str, Any]:
        stored = self.state.schema_by_id(v.schema_id)
        return {"subject": subject, "version": v.version, "id": v.schema_id, **stored.body()}

    def _schemas(self, req: _Request) -> tuple[int, Any]:
        p, m, q, st = req.parts, req.method, req.query, self.state
        if m != "GET":
            return self._not_found()
        if p == ["schemas", "types"]:
            return 200, list(SCHEMA_TYPES)
        if len(p) >= 3 and p[1] == "ids":
            try:
                schema_id = int(p[2])
            except ValueError:
                raise schema_not_found(f"Schema {p[2]} not found") from None
            if len(p) == 3:
                return 200, st.schema_by_id(schema_id).body()
            if len(p) == 4 and p[3] == "subjects":
                pairs = st.subjects_of(schema_id, deleted=_flag(q, "deleted"))
                names = sorted({s for s, _ in pairs if s.startswith(q.get("subject", ""))})
                return 200, names
            if len(p) == 4 and p[3] == "versions":
                pairs = st.subjects_of(schema_id, deleted=_flag(q, "deleted"))
                return 200, [{"subject": s, "version": v} for s, v in pairs if s.startswith(q.get("subject", ""))]
        if len(p) >= 3 and p[1] == "guids":
            raise schema_not_found(f"Schema {p[2]} not found")
        return self._not_found()

    def _config(self, req: _Request, subject: str | None) -> tuple[int, Any]:
        m, st = req.method, self.state
        if m == "GET":
            if subject is None:
                return 200, {"compatibilityLevel": st.level()}
            level = st.subject_level(subject)
            if level is None:
                if _flag(req.query, "defaultToGlobal"):
                    return 200, {"compatibilityLevel": st.level()}
                raise RegistryError(
                    404, 40408, f"Subject '{subject}' does not have subject-level compatibility configured"
                )
            return 200, {"compatibilityLevel": level}
        if m == "PUT":
            body = req.body if isinstance(req.body, dict) else {}
            raw = body.get("compatibility") or body.get("compatibilityLevel")
            if not isinstance(raw, str):
                raise RegistryError(422, 42203, "Invalid compatibility level: missing 'compatibility'")
            return 200, {"compatibility": st.set_level(raw, subject)}
        if m == "DELETE":
            return 200, {"compatibilityLevel": st.delete_level(subject)}
        return self._not_found()


class _HTTPHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sncli-schema-registry-emulator"
    app: RegistryApp  # set on a subclass per server
    verbose = False

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        parts = [unquote(s) for s in split.path.split("/") if s]
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        try:
            body: Any = json.loads(raw) if raw.strip() else None
        except json.JSONDecodeError:
            self._send(400, {"error_code": 400, "message": "Unexpected character: the body is not valid JSON"})
            return
        try:
            status, payload = self.app.handle(_Request(method, parts, query, body))
        except RegistryError as exc:
            status, payload = exc.status, {"error_code": exc.error_code, "message": exc.message}
        except Exception as exc:  # answer like the real registry instead of dropping the connection
            status, payload = 500, {"error_code": 50001, "message": f"Error in the backend data store: {exc}"}
        self._send(status, payload)

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", MEDIA_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        if self.verbose:
            sys.stderr.write("schema-registry: " + (format % args) + "\n")


class SchemaRegistryEmulator:
    """The registry on a background thread; ``port=0`` picks a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False) -> None:
        self.state = RegistryState()
        handler = type("Handler", (_HTTPHandler,), {"app": RegistryApp(self.state), "verbose": verbose})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SchemaRegistryEmulator:
        if self._thread is None:
            # A short poll interval: stop() returns at once instead of after up to half a second.
            self._thread = threading.Thread(
                target=self._server.serve_forever, args=(0.05,), name="schema-registry", daemon=True
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> SchemaRegistryEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="In-memory Confluent-compatible Schema Registry (Avro).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    registry = SchemaRegistryEmulator(args.host, args.port, verbose=args.verbose)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    print(f"schema registry emulator listening on {registry.url}", file=sys.stderr, flush=True)
    try:
        registry.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        registry.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
