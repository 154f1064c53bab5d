"""The HTTP face of the emulator: ServiceNow's Table API, OAuth endpoint and the control API.

Standard library only (``http.server``), HTTP/1.1 keep-alive with a
Content-Length on every answer, one daemon thread per connection. Responses
are written as one buffer (status line, headers, body) with Nagle off, so a
keep-alive client never waits on delayed ACKs; bodies of list pages are the
records' cached JSON joined together (see :mod:`sncli.emulator.store`).

Usage::

    emu = ServiceNowEmulator(port=0).start()
    emu.state.generate("incident", 1000)
    ... requests against emu.url ...
    emu.stop()
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import struct
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from sncli.emulator import aggregate, control, physics
from sncli.emulator import batch as batch_api
from sncli.emulator.auth import Credentials, parse_basic, parse_bearer, token_grant
from sncli.emulator.faults import Fault
from sncli.emulator.limits import rate_limit_headers
from sncli.emulator.render import (
    error_body,
    http_date,
    link_header,
    list_body,
    render_record,
    single_body,
)
from sncli.emulator.state import DuplicateRecordError, EmulatorSettings, EmulatorState, JournalEntry, Selection

log = logging.getLogger("sncli.emulator")

_TABLE_PATH = re.compile(r"^/api/now/(?:v[12]/)?table/([^/]+)(?:/([^/]+))?/?$")
_JSON = "application/json;charset=UTF-8"
_WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
_DEFAULT_HANG_MS = 30_000
_MALFORMED = b'{"result":[{"sys_id":"6f1c<html><body>Request failed'
Headers = list[tuple[str, str]]


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _Headers(dict[str, str]):
    """Request headers by lower-cased name; ``get`` takes any case, like ``email.message.Message``."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    block_on_close = False

    def __init__(self, address: tuple[str, int], emulator: ServiceNowEmulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # a 400 to a malformed request line still gets a status line
    server_version = "ServiceNowEmulator"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 300
    server: _Server
    raw_requestline: bytes  # set by handle_one_request before parse_request
    _answer_at: float = 0.0  # monotonic time before which no answer of this request leaves

    # ------------------------------------------------------------------ plumbing

    def parse_request(self) -> bool:
        """The request line and headers, read without ``email.parser``.

        The standard handler parses headers with the e-mail package: a third of
        the emulator's CPU per write, which made it, not the client, the limit
        of a 16-worker sink benchmark (about 700 writes/s on 2 cores). Headers
        here are one case-insensitive dict (the last of a repeated header wins;
        the emulator reads only single-valued ones). Anything malformed gets
        the 400 the standard handler would send.
        """
        self._answer_at = time.monotonic()  # the request line is in; moved on by the latency in _before
        self.command = None  # type: ignore[assignment]  # the base class checks these on errors
        self.request_version = version = self.default_request_version
        self.close_connection = True
        # send_error logs the request line: without it a bad request or an unsupported method
        # (HEAD, OPTIONS) crashed the handler and the client saw the connection dropped.
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request line {self.raw_requestline[:80]!r}")
            return False
        self.command, self.path, version = words
        self.request_version = version
        headers = _Headers()
        for _ in range(100):
            line = self.rfile.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
            name, sep, value = str(line, "iso-8859-1").partition(":")
            if not sep or len(line) > 65536:
                self.send_error(HTTPStatus.BAD_REQUEST, "Bad header line")
                return False
            headers[name.strip().lower()] = value.strip()
        else:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
            return False
        self.headers = headers  # type: ignore[assignment]
        connection = headers.get("Connection", "").lower()
        self.close_connection = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
        expects_continue = headers.get("Expect", "").lower() == "100-continue"
        return self.handle_expect_100() if expects_continue else True

    def setup(self) -> None:
        super().setup()
        self.server.emulator._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.emulator._untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    @property
    def state(self) -> EmulatorState:
        return self.server.emulator.state

    def _handle(self, method: str) -> None:
        try:
            split = urlsplit(self.path)
            path = split.path
            params = dict(parse_qsl(split.query, keep_blank_values=True))
            body = self._read_body()
            if path.startswith("/__emulator/"):
                self._control(method, path[len("/__emulator/") :], params, body)
            elif path == "/oauth_token.do":
                self._oauth(method, path, params, body)
            else:
                self._api(method, path, params, body)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:
            log.exception("emulator failed on %s %s", method, self.path)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._respond(500, error_body("Internal emulator error", None))

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _respond(
        self,
        status: int,
        body: bytes = b"",
        headers: Sequence[tuple[str, str]] = (),
        *,
        content_type: str = _JSON,
        announce: int | None = None,
    ) -> None:
        self._hold_answer()
        lines = [
            f"HTTP/1.1 {status} {_reason(status)}",
            f"Date: {http_date(self.state.clock.now())}",
            f"Server: {self.server_version}",
        ]
        if status != 204:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body) if announce is None else announce}")
        lines.extend(f"{name}: {value}" for name, value in headers)
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if len(body) <= 65536:
            self.wfile.write(head + body)
        else:
            self.wfile.write(head)
            self.wfile.write(body)

    def _hold_answer(self) -> None:
        wait = self._answer_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    def _reset_connection(self) -> None:
        """Abort with a TCP RST: no status line, no body."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def _drop_connection(self) -> None:
        """Close without answering (FIN): the client sees the server go away mid-request."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _base_url(self) -> str:
        host = self.headers.get("Host")
        return f"http://{host}" if host else self.server.emulator.url

    def _authenticate(self) -> tuple[str, str | None]:
        header = self.headers.get("Authorization")
        if not header:
            return "none", None
        creds = self.state.credentials
        scheme = header.split(" ", 1)[0].lower()
        if scheme == "basic":
            pair = parse_basic(header)
            return "basic", creds.username if pair == (creds.username, creds.password) else None
        if scheme == "bearer":
            token = parse_bearer(header)
            return "bearer", self.state.tokens.user_for(token) if token else None
        return "invalid", None

    def _journal(
        self, method: str, path: str, params: dict[str, str], status: int, body: bytes | None, auth: str, **extra: Any
    ) -> None:
        self.state.record_request(
            JournalEntry(method, path, params, status, body, auth, self.state.clock.now(), **extra)
        )

    # ------------------------------------------------------------------ faults

    def _before(self, fault: Fault | None, method: str) -> tuple[int, bytes, Headers] | str | None:
        """Apply the pre-request part of a fault: latency, reset, or an injected status answer.

        The configured read or write latency is the time from the request's
        arrival to its answer, the emulator's own work included: the answer is
        held until then in :meth:`_respond`. Sleeping the latency and then doing
        the work made every answer late by the work (about 2-3 ms per write
        with 16 writers on 2 cores), so a benchmark's ``workers / latency``
        ceiling was out of reach for any client. A fault's extra latency still
        comes on top, before the work.
        """
        settings = self.state.settings
        latency = settings.read_latency_ms if method == "GET" else settings.write_latency_ms
        self._answer_at += latency / 1000
        if fault is None:
            return None
        if fault.kind == "latency":
            time.sleep(fault.latency_ms / 1000)
        elif fault.kind == "reset":
            self._hold_answer()  # a reset comes no sooner than an answer would have
            return "reset"  # the caller journals first, then resets
        elif fault.kind == "status":
            return self._fault_answer(fault)
        return None

    def _fault_answer(self, fault: Fault) -> tuple[int, bytes, Headers]:
        headers: Headers = []
        status = fault.status
        if fault.retry_after is not None:
            if isinstance(fault.retry_after, str):
                headers.append(("Retry-After", fault.retry_after))
            elif fault.retry_after_http_date:
                # Relative to the emulator clock, like the Date header of the same answer.
                moment = self.state.clock.now() + timedelta(seconds=float(fault.retry_after))
                headers.append(("Retry-After", http_date(moment)))
            else:
                headers.append(("Retry-After", str(int(fault.retry_after))))
        if status == 429:
            headers.extend(rate_limit_headers(self.state.clock.now()))
        if status == 401:
            headers.append(("WWW-Authenticate", 'BASIC realm="Service-now"'))
            return status, error_body("User Not Authenticated", "Required to provide Auth information"), headers
        return status, error_body(_reason(status), "injected by the emulator's fault rules"), headers

    def _send_with_after(self, fault: Fault | None, status: int, body: bytes, headers: Headers) -> None:
        """Send an answer, applying post-request faults (hang, drop, garble, truncate)."""
        self._hold_answer()  # a hang or drop starts once the configured latency is over
        if fault is not None and fault.kind == "timeout_after_write":
            if fault.close:
                self._drop_connection()
                return
            time.sleep((fault.latency_ms or _DEFAULT_HANG_MS) / 1000)
        if fault is not None and fault.kind == "malformed":
            self._respond(200, _MALFORMED)
            return
        if fault is not None and fault.kind == "truncated":
            self.close_connection = True
            announce = max(len(body), 64)
            self._respond(status, body[: announce // 2], headers, announce=announce)
            self._drop_connection()
            return
        self._respond(status, body, headers)

    # ------------------------------------------------------------------ OAuth

    def _oauth(self, method: str, path: str, params: dict[str, str], body: bytes) -> None:
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        grant_type = form.get("grant_type")
        fault = self.state.faults.pick(method, path, None)
        early = self._before(fault, method)
        fault_name = fault.kind if fault else None
        if early == "reset":
            self._journal(method, path, params, 0, None, "none", fault=fault_name, grant_type=grant_type)
            self._reset_connection()
            return
        if isinstance(early, tuple):
            status, out, headers = early
        elif method != "POST":
            status, out, headers = 405, error_body("Method not Supported", None), []
        else:
            settings = self.state.settings
            status, payload = token_grant(
                form,
                self.state.credentials,
                self.state.tokens,
                ttl=settings.token_ttl_seconds,
                refresh_ttl=settings.refresh_token_ttl_seconds,
            )
            out, headers = orjson.dumps(payload), [("Cache-Control", "no-store")]
        # Journal first: a client that reads the journal right after its answer must find the entry.
        self._journal(
            method, path, params, _seen_status(fault, status), None, "none", fault=fault_name, grant_type=grant_type
        )
        self._send_with_after(fault, status, out, headers)

    # ------------------------------------------------------------------ Table API

    def _api(self, method: str, path: str, params: dict[str, str], body: bytes) -> None:
        """An API exchange: it takes a transaction slot for its whole duration, or is answered 429."""
        settings = self.state.settings
        slots = self.server.emulator.slots
        if not slots.enter(settings.max_concurrent):
            match = _TABLE_PATH.match(path)
            self._answer_at += settings.round_trip_ms / 1000
            status, out, headers = physics.overloaded(settings)
            self._journal(method, path, params, status, body if method in _WRITE_METHODS else None,
                          self._authenticate()[0], table=match.group(1) if match else None,
                          sys_id=match.group(2) if match else None, fault="concurrency")
            self._respond(status, out, headers)
            return
        try:
            if path in physics.BATCH_PATHS:
                self._batch(method, path, params, body)
            else:
                self._table_api(method, path, params, body)
        finally:
            slots.leave()

    def _table_api(self, method: str, path: str, params: dict[str, str], body: bytes) -> None:
        stats = aggregate.STATS_PATH.match(path)  # the Aggregate API: same auth, faults and journal
        match = stats or _TABLE_PATH.match(path)
        table = match.group(1) if match else None
        sys_id = match.group(2) if match and stats is None else None
        auth, user = self._authenticate()
        fault = self.state.faults.pick(method, path, table)
        fault_name = fault.kind if fault else None
        journal_body = body if method in _WRITE_METHODS else None
        extra = {"table": table, "sys_id": sys_id, "fault": fault_name, "user": user}
        early = self._before(fault, method)
        self._answer_at += physics.exchange_seconds(self.state.settings, 1 if method in _WRITE_METHODS else 0)
        if early == "reset":
            self._journal(method, path, params, 0, journal_body, auth, **extra)
            self._reset_connection()
            return
        status, out, headers = self._answer_for(
            method, path, params, body, user, early if isinstance(early, tuple) else None, fault
        )
        # Journal first: a client that reads the journal right after its answer must find the entry.
        self._journal(method, path, params, _seen_status(fault, status), journal_body, auth, **extra)
        self._send_with_after(fault, status, out, headers)

    def _answer_for(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        body: bytes,
        user: str | None,
        early: tuple[int, bytes, Headers] | None,
        fault: Fault | None,
    ) -> tuple[int, bytes, Headers]:
        """What the Table API answers to one request (an injected status answer wins)."""
        stats = aggregate.STATS_PATH.match(path)
        match = stats or _TABLE_PATH.match(path)
        table = match.group(1) if match else None
        if early is not None:
            return early
        if match is None or table is None:
            return 400, error_body("Requested URI does not represent any resource", None), []
        if user is None:
            return (401, error_body("User Not Authenticated", "Required to provide Auth information"),
                    [("WWW-Authenticate", 'BASIC realm="Service-now"')])
        if table in self.state.settings.denied_tables:
            return 403, error_body("User Not Authorized", f"Insufficient rights to access records of table {table}"), []
        if stats is not None:
            status, out = aggregate.answer(self.state, method, table, params)
            return status, out, []
        short = fault.records if fault is not None and fault.kind == "short_page" else None
        short_page = fault is not None and fault.kind == "short_page"
        return self._table_request(method, path, table, match.group(2), params, body, user, short_page, short)

    # ------------------------------------------------------------------ Batch API

    def _batch(self, method: str, path: str, params: dict[str, str], body: bytes) -> None:
        """``POST /api/now/v1/batch``: every item through :meth:`_answer_for`, in order, within the budget."""
        settings = self.state.settings
        auth, user = self._authenticate()
        fault = self.state.faults.pick(method, path, None)
        early = self._before(fault, method)
        self._answer_at += physics.exchange_seconds(settings, 0)
        if early == "reset":
            self._journal(method, path, params, 0, None, auth, fault="reset", user=user)
            self._reset_connection()
            return
        headers: Headers = []
        if isinstance(early, tuple):
            status, out, headers = early
        elif method != "POST":
            status, out = 405, error_body("Method not Supported", "the Batch API takes POST")
        elif user is None:
            status, out = 401, error_body("User Not Authenticated", "Required to provide Auth information")
            headers = [("WWW-Authenticate", 'BASIC realm="Service-now"')]
        else:
            try:
                batch_id, items = batch_api.parse_request(body)
            except batch_api.BadBatch as exc:
                status, out = 400, error_body("Invalid batch request", str(exc))
            else:
                serviced, unserviced = batch_api.run_batch(
                    items, lambda item: self._batch_item(item, auth, user),
                    lambda index: physics.served_within_budget(index, settings),
                )
                writes = sum(1 for item, _ in serviced if item.method in _WRITE_METHODS)
                self._answer_at += writes * settings.write_time_ms / 1000
                status, out = 200, batch_api.answer_body(batch_id, serviced, unserviced)
        self._journal(method, path, params, _seen_status(fault, status), None, auth,
                      fault=fault.kind if fault else None, user=user)
        self._send_with_after(fault, status, out, headers)

    def _batch_item(self, item: batch_api.BatchItem, auth: str, user: str) -> batch_api.ItemAnswer:
        """One item of a batch, as the Table API would answer it alone (a status fault applies to it)."""
        split = urlsplit(item.url)
        path, params = split.path, dict(parse_qsl(split.query, keep_blank_values=True))
        match = _TABLE_PATH.match(path)
        table = match.group(1) if match else None
        fault = self.state.faults.pick(item.method, path, table)
        early = self._fault_answer(fault) if fault is not None and fault.kind == "status" else None
        status, out, headers = self._answer_for(item.method, path, params, item.body, user, early, fault)
        write = item.method in _WRITE_METHODS
        self._journal(item.method, path, params, status, item.body if write else None, auth, table=table,
                      sys_id=match.group(2) if match else None, fault=fault.kind if fault else None, user=user)
        return batch_api.ItemAnswer(status, _reason(status), [("Content-Type", _JSON), *headers], out,
                                    self.state.settings.write_time_ms if write else 0)

    def _table_request(
        self,
        method: str,
        path: str,
        table: str,
        sys_id: str | None,
        params: dict[str, str],
        body: bytes,
        user: str,
        short_page: bool,
        short_records: int | None,
    ) -> tuple[int, bytes, Headers]:
        state = self.state
        if state.settings.strict_tables and not state.has_table(table):
            return 400, error_body(f"Invalid table {table}", None), []
        fields_param = params.get("sysparm_fields", "")
        fields = [f.strip() for f in fields_param.split(",") if f.strip()] or None
        display_value = params.get("sysparm_display_value", "false").lower()
        exclude_links = params.get("sysparm_exclude_reference_link", "false").lower() == "true"
        base = self._base_url()

        def one(selection: Selection) -> bytes:
            return single_body(
                render_record(
                    selection.records[0],
                    selection,
                    fields=fields,
                    display_value=display_value,
                    exclude_links=exclude_links,
                    base_url=base,
                )
            )

        if method == "GET" and sys_id is None:
            return self._list(
                path, table, params, fields, display_value, exclude_links, base, short_page, short_records
            )
        if method == "GET":
            selection = state.fetch(table, sys_id or "")
            if not selection.records:
                return 404, _not_found(), []
            return 200, one(selection), []
        if method == "DELETE":
            if sys_id is None:
                return 405, error_body("Method not Supported", "DELETE needs a sys_id"), []
            if not state.api_delete(table, sys_id, user):
                return 404, _not_found(), []
            return 204, b"", []
        record_body = _json_object(body)
        if record_body is None:
            return 400, error_body("Exception while reading request", "The payload is not a valid JSON object."), []
        if method == "POST":
            if sys_id is not None:
                return 405, error_body("Method not Supported", "POST goes to the table, not to a record"), []
            try:
                selection = state.api_insert(table, record_body, user)
            except DuplicateRecordError as exc:
                return 409, error_body("Operation Failed", str(exc)), []
            location = f"{base}/api/now/table/{table}/{selection.records[0].key[1]}"
            return 201, one(selection), [("Location", location)]
        if sys_id is None:
            return 405, error_body("Method not Supported", f"{method} needs a sys_id"), []
        selection = state.api_update(table, sys_id, record_body, user)
        if not selection.records:
            return 404, _not_found(), []
        return 200, one(selection), []

    def _list(
        self,
        path: str,
        table: str,
        params: dict[str, str],
        fields: list[str] | None,
        display_value: str,
        exclude_links: bool,
        base: str,
        short_page: bool,
        short_records: int | None,
    ) -> tuple[int, bytes, Headers]:
        try:
            limit = int(params.get("sysparm_limit") or self.state.settings.default_limit)
            offset = int(params.get("sysparm_offset") or 0)
            if limit < 0 or offset < 0:
                raise ValueError
        except ValueError:
            return 400, error_body("Invalid sysparm_limit or sysparm_offset", None), []
        no_count = params.get("sysparm_no_count", "false").lower() == "true"
        served = limit
        if short_page:
            served = short_records if short_records is not None else max(1, limit // 2)
            served = min(served, limit)
        selection = self.state.select(
            table, params.get("sysparm_query", ""), limit=served, offset=offset, want_count=not no_count
        )
        if fields is None and display_value in ("false", "") and (exclude_links or not selection.references):
            parts = [r.json for r in selection.records]  # the common case: cached bytes, no per-record call
        else:
            parts = [
                render_record(
                    r,
                    selection,
                    fields=fields,
                    display_value=display_value,
                    exclude_links=exclude_links,
                    base_url=base,
                )
                for r in selection.records
            ]
        headers: Headers = []
        if not no_count and selection.total is not None:
            headers.append(("X-Total-Count", str(selection.total)))
        if params.get("sysparm_suppress_pagination_header", "false").lower() != "true":
            headers.append(
                (
                    "Link",
                    link_header(
                        base,
                        path,
                        params,
                        offset=offset,
                        limit=limit,
                        total=selection.total,
                        returned=len(parts) + selection.hidden if not short_page else limit,
                    ),
                )
            )
        return 200, list_body(parts), headers

    # ------------------------------------------------------------------ control API

    def _control(self, method: str, route: str, params: dict[str, str], body: bytes) -> None:
        payload: Any = None
        if body.strip():
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError:
                self._respond(400, orjson.dumps({"error": "the body is not valid JSON"}))
                return
        status, answer = control.handle(self.state, method, route, params, payload)
        self._respond(status, orjson.dumps(answer))


def _seen_status(fault: Fault | None, status: int) -> int:
    """The status the client will see once post-request faults apply (0 = no answer at all)."""
    if fault is not None and fault.kind == "timeout_after_write" and fault.close:
        return 0
    if fault is not None and fault.kind == "malformed":
        return 200
    return status


def _not_found() -> bytes:
    return error_body("No Record found", "Record doesn't exist or ACL restricts the record retrieval")


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


class ServiceNowEmulator:
    """A ServiceNow Table API on ``host:port`` (port 0 = any free port) backed by :class:`EmulatorState`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        username: str = "admin",
        password: str = "admin",
        client_id: str = "sncli",
        client_secret: str = "sncli-secret",
        token_ttl_seconds: int = 1800,
        user_time_zone: str = "UTC",
        state: EmulatorState | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.state = state or EmulatorState(
            credentials=Credentials(username, password, client_id, client_secret),
            settings=EmulatorSettings(token_ttl_seconds=token_ttl_seconds, user_time_zone=user_time_zone),
        )
        self._server: _Server | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self.slots = physics.Slots()  # the API transactions in progress (settings.max_concurrent)

    @property
    def port(self) -> int:
        """The bound port (still known after stop, so a test can show the server is gone)."""
        if self._port is None:
            raise RuntimeError("the emulator is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServiceNowEmulator:
        if self._server is not None:
            return self
        self._server = _Server((self.host, self._requested_port), self)
        self._port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="sn-emulator", daemon=True
        )
        self._thread.start()
        log.info("ServiceNow emulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop accepting, then cut every open keep-alive connection so clients see the server gone."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._connections_lock:
            open_connections = list(self._connections)
            self._connections.clear()
        for conn in open_connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def serve_until(self, stop: threading.Event) -> None:
        """Block until ``stop`` is set (the CLI's foreground mode)."""
        self.start()
        stop.wait()
        self.stop()

    def _track(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(conn)

    def _untrack(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(conn)

    def __enter__(self) -> ServiceNowEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
