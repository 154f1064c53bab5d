"""The control API under ``/__emulator/`` (no auth): drive the emulator from another process.

Every answer is JSON ``{"result": ...}``; a bad request is 400 ``{"error": "..."}``.

    GET    health                    {"ok": true}
    POST   reset                     fresh state (data, faults, journal, tokens, clock, settings)
    POST   generate                  {table, count, at?, spread_seconds?, field_count?, record_bytes?, seed?}
    POST   records                   {table, records: [...], at?}   (sys_id / sys_*_on in records honoured)
    POST   update                    {table, sys_id, fields, at?}
    POST   delete                    {table, sys_id}
    POST   columns                   {table, columns: {element: internal_type}}
    GET    clock                     {now, frozen}
    POST   clock                     {set?: ts, freeze?: bool, unfreeze?: bool, advance?: seconds}
    GET    faults / POST faults      one fault object, or {"faults": [...]}
    DELETE faults
    GET    journal                   entries (?path_prefix=, ?table=, ?method=) and token_issues
    DELETE journal
    GET    settings / POST settings  {read_latency_ms, write_latency_ms, token_ttl_seconds, denied_tables,
                                     hidden_rows: {table: encoded query of rows the API user may not read}, ...}
    POST   expire_tokens             every issued access token becomes invalid
    GET    tables                    {table: count}
    GET    tables/{table}            every record, in (sys_updated_on, sys_id) order
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sncli.emulator.clock import format_time
from sncli.emulator.faults import Fault
from sncli.emulator.state import DuplicateRecordError, EmulatorState


class ControlError(ValueError):
    pass


def _require(body: Mapping[str, Any], key: str) -> Any:
    if key not in body:
        raise ControlError(f"missing field {key!r}")
    return body[key]


def _clock_view(state: EmulatorState) -> dict[str, Any]:
    return {"now": format_time(state.clock.now()), "frozen": state.clock.frozen}


def handle(state: EmulatorState, method: str, route: str, query: Mapping[str, str], body: Any) -> tuple[int, Any]:
    """Answer one control request: (status, JSON-able payload)."""
    try:
        if body is not None and not isinstance(body, dict):
            raise ControlError("the body must be a JSON object")
        data: dict[str, Any] = body or {}
        result = _route(state, method, route.strip("/"), query, data)
    except KeyError as exc:
        return 404, {"error": f"not found: {exc.args[0]}"}
    except (ControlError, ValueError, TypeError, DuplicateRecordError) as exc:
        return 400, {"error": str(exc)}
    return 200, {"result": result}


def _route(state: EmulatorState, method: str, route: str, query: Mapping[str, str], data: dict[str, Any]) -> Any:
    if route == "health" and method == "GET":
        return {"ok": True}
    if route == "reset" and method == "POST":
        state.reset()
        return {"ok": True}
    if route == "generate" and method == "POST":
        ids = state.generate(
            str(_require(data, "table")),
            int(_require(data, "count")),
            at=data.get("at"),
            spread_seconds=int(data.get("spread_seconds", 0)),
            field_count=int(data.get("field_count", 30)),
            record_bytes=int(data.get("record_bytes", 1024)),
            seed=int(data.get("seed", 0)),
        )
        return {"count": len(ids), "sys_ids": ids}
    if route == "records" and method == "POST":
        records = _require(data, "records")
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ControlError("records must be a list of objects")
        return state.bulk_insert(str(_require(data, "table")), records, at=data.get("at"))
    if route == "update" and method == "POST":
        fields = _require(data, "fields")
        if not isinstance(fields, dict):
            raise ControlError("fields must be an object")
        updated = state.update(str(_require(data, "table")), str(_require(data, "sys_id")), fields, at=data.get("at"))
        if updated is None:
            raise KeyError(data["sys_id"])
        return updated
    if route == "delete" and method == "POST":
        if not state.delete(str(_require(data, "table")), str(_require(data, "sys_id"))):
            raise KeyError(data["sys_id"])
        return {"ok": True}
    if route == "columns" and method == "POST":
        columns = _require(data, "columns")
        if not isinstance(columns, dict):
            raise ControlError("columns must be an object {element: internal_type}")
        state.define_table(str(_require(data, "table")), {str(k): str(v) for k, v in columns.items()})
        return state.columns(str(data["table"]))
    if route == "clock":
        if method == "POST":
            _drive_clock(state, data)
        return _clock_view(state)
    if route == "faults":
        if method == "POST":
            specs = data.get("faults", [data])
            if not isinstance(specs, list):
                raise ControlError("faults must be a list")
            for spec in specs:
                state.faults.add(Fault.from_dict(spec))
        elif method == "DELETE":
            state.faults.clear()
        return [f.to_dict() for f in state.faults.list()]
    if route == "journal":
        if method == "DELETE":
            state.clear_journal()
            return {"ok": True}
        entries = state.journal()
        if "path_prefix" in query:
            entries = [e for e in entries if e.path.startswith(query["path_prefix"])]
        if "table" in query:
            entries = [e for e in entries if e.table == query["table"]]
        if "method" in query:
            entries = [e for e in entries if e.method == query["method"].upper()]
        return {"token_issues": state.token_issue_count(), "entries": [e.to_dict() for e in entries]}
    if route == "settings":
        if method == "POST":
            state.update_settings(**data)
        return state.settings.to_dict()
    if route == "expire_tokens" and method == "POST":
        state.tokens.expire_all()
        return {"ok": True}
    if route == "tables" and method == "GET":
        return state.tables()
    if route.startswith("tables/") and method == "GET":
        table = route[len("tables/") :]
        if not state.has_table(table):
            raise KeyError(table)
        return state.records(table)
    raise KeyError(f"{method} /__emulator/{route}")


def _drive_clock(state: EmulatorState, data: Mapping[str, Any]) -> None:
    unknown = set(data) - {"set", "freeze", "unfreeze", "advance"}
    if unknown:
        raise ControlError(f"unknown clock field(s): {', '.join(sorted(unknown))}")
    if data.get("unfreeze"):
        state.clock.unfreeze()
    if data.get("freeze"):
        state.clock.freeze(str(data["set"]) if "set" in data else None)
    elif "set" in data:
        state.clock.set(str(data["set"]))
    if "advance" in data:
        state.clock.advance(float(data["advance"]))
