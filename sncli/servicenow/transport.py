"""The client's one transport: keep-alive urllib3 connections to the instance, and one request on one of them.

Every attempt of every call goes out here (with ``servicenow.proxy`` set, through
:mod:`sncli.servicenow.proxied` instead) and ends as one :class:`Answer` or one
exception for :func:`sncli.servicenow.failures.classify_exception`. urllib3 is
requests' own transport; using it directly costs a fraction of requests' CPU per
call, which matters because sink workers share one GIL for it.

Connections: one per request in flight, kept alive between calls; TLS is set up
as requests sets it (verification with certifi's bundle or ``tls.ca_bundle``, a
file or a directory; the client certificate), with the same ``User-Agent`` and
``Accept-Encoding``.

Waits: a request has ``servicenow.timeout_seconds`` from its send for its answer
to start, however long its reader took to come for it (a request may be sent
ahead, :mod:`sncli.servicenow.readahead`); then it is a timeout like any other
attempt's. Reading the rest is bounded by the connection's read timeout.
"""

from __future__ import annotations

import errno
import os
import select
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import certifi
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.util import make_headers

from sncli.config import ServiceNowSettings

#: Idle connections kept for later calls (a run uses one per table, window or sink worker).
MAX_IDLE_CONNECTIONS = 64


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer, whichever transport carried it: what the client's request loop and parsers read."""

    status_code: int
    reason: str
    headers: Mapping[str, str]  # case-insensitive (urllib3's HTTPHeaderDict)
    content: bytes


class Connections:
    """Keep-alive urllib3 connections to the instance (thread-safe)."""

    def __init__(self, settings: ServiceNowSettings, *, user_agent: str) -> None:
        parts = urlsplit(settings.instance_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self.timeout = settings.timeout_seconds  # for the answer of one request (SentRequest)
        self._tls = settings.tls
        self._idle: deque[HTTPConnection] = deque()
        self.headers = {
            "User-Agent": user_agent,
            **make_headers(accept_encoding=True),  # what urllib3 can decode, as requests sends it
            "Accept": "application/json",
            "Connection": "keep-alive",
        }

    def get(self) -> HTTPConnection:
        """An idle connection that is still open, or a new (not yet connected) one."""
        while True:
            try:
                conn = self._idle.pop()  # deque.pop/append are atomic: no lock for 16 workers to queue on
            except IndexError:
                return self._new()
            if conn.is_connected:  # False once the server closed it (or sent something unasked)
                return conn
            conn.close()

    def put(self, conn: HTTPConnection) -> None:
        """Return a connection whose answer was read in full; a closed one is dropped."""
        if conn.is_closed:
            return
        if len(self._idle) < MAX_IDLE_CONNECTIONS:
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        while True:
            try:
                self._idle.pop().close()
            except IndexError:
                return

    def _new(self) -> HTTPConnection:
        if not self._https:
            return HTTPConnection(self._host, self._port, timeout=self.timeout)
        tls = self._tls
        ca_file = ca_dir = None
        if tls.verify:
            bundle = str(tls.ca_bundle) if tls.ca_bundle else certifi.where()  # the bundle requests uses
            _must_exist(bundle, "TLS CA certificate bundle")
            if os.path.isdir(bundle):
                ca_dir = bundle
            else:
                ca_file = bundle
        for path, what in ((tls.client_cert, "TLS client certificate"), (tls.client_key, "TLS client key")):
            if path is not None:
                _must_exist(str(path), what)
        return HTTPSConnection(
            self._host, self._port, timeout=self.timeout,
            cert_reqs="CERT_REQUIRED" if tls.verify else "CERT_NONE",
            ca_certs=ca_file, ca_cert_dir=ca_dir,
            cert_file=str(tls.client_cert) if tls.client_cert else None,
            key_file=str(tls.client_key) if tls.client_key else None,
        )


def _must_exist(path: str, what: str) -> None:
    """Name a missing TLS file (as requests does) instead of letting the handshake fail vaguely."""
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, f"Could not find a suitable {what}, invalid path: {path}")


class SentRequest:
    """One request on its own connection: sent at construction, its answer read by :meth:`answer`.

    Never raises at construction: a failure to connect or send is kept and
    raised by :meth:`answer`, where the request loop classifies it like any
    attempt's failure (the caller reads answers only where it can handle them).
    A failure to connect is raised as urllib3's ``NewConnectionError`` (nothing
    was sent); anything later means the request may have reached ServiceNow.

    Every wait is bounded by ``servicenow.timeout_seconds`` counted from the
    send: an answer that has not started by then is a ``TimeoutError`` (no
    answer; a read is retried), however long the caller waited before reading.
    """

    def __init__(
        self,
        connections: Connections,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        authorization: str | None = None,
    ) -> None:
        self._connections = connections
        self._conn: HTTPConnection | None = None
        self._error: BaseException | None = None
        self._answer: Answer | None = None
        self._readable_at: float | None = None
        self.seconds = 0.0  # send -> answer seen (set by answer(); an upper bound, see ready())
        self.authorization = authorization  # what a 401 answer refused (the loop refreshes it once)
        sent_headers = {**connections.headers, **(headers or {})}
        if authorization is not None:
            sent_headers["Authorization"] = authorization
        target = f"{path}?{urlencode(params)}" if params else path
        self._sent_at = time.perf_counter()
        self._timeout = connections.timeout
        self._deadline = self._sent_at + connections.timeout
        try:
            self._conn = connections.get()
            self._conn.request(method, target, body=body, headers=sent_headers)
        except Exception as exc:
            self._fail(exc)

    def ready(self, timeout: float) -> bool:
        """True once the answer has started to arrive, the request failed, or its time ran out, waiting up to
        ``timeout``; :meth:`answer` then says which, without waiting for ServiceNow to start answering.

        The moment it is first seen is the end of the call's measured latency, so
        a loop that waits here measures ServiceNow's time, not its own.
        """
        if self._readable_at is not None or self._error is not None or self._answer is not None:
            return True
        conn = self._conn
        sock = getattr(conn, "sock", None)
        if sock is None:
            return True  # nothing to wait for: answer() reports what happened
        pending = getattr(sock, "pending", None)  # TLS: bytes already decrypted count as arrived
        left = self._deadline - time.perf_counter()
        if (pending is not None and pending()) or select.select([sock], [], [], max(0.0, min(timeout, left)))[0]:
            self._readable_at = time.perf_counter()
            return True
        now = time.perf_counter()
        if now >= self._deadline:
            self.seconds = now - self._sent_at  # the latency metric sees the whole wait
            self._fail(TimeoutError(f"no answer within timeout_seconds={self._timeout:g}"))
            return True
        return False

    def succeeded(self, timeout: float) -> bool:
        """True once a 2xx answer is read in full, waiting up to ``timeout`` for it to start.

        False for an answer that is not there yet, and for a failure or a non-2xx
        answer (kept: :meth:`answer` gives it to the request loop, which may retry).
        """
        if not self.ready(timeout):
            return False
        try:
            answer = self.answer()
        except Exception:
            return False
        return 200 <= answer.status_code < 300

    def answer(self) -> Answer:
        """Read the whole answer (the body decoded per Content-Encoding), or raise the transport failure.

        Waits at most until ``timeout_seconds`` after the send for the answer to
        start; reading the rest is bounded by the connection's read timeout.
        """
        if self._answer is not None:
            return self._answer
        self.ready(max(0.0, self._deadline - time.perf_counter()))
        if self._error is not None:
            raise self._error
        conn = self._conn
        assert conn is not None
        try:
            response = conn.getresponse()  # reads the body too (preload_content)
            answer = Answer(response.status, response.reason or "", response.headers, response.data)
        except Exception as exc:
            self._fail(exc)
            raise
        finally:
            self.seconds = (self._readable_at or time.perf_counter()) - self._sent_at
        self._conn = None
        self._answer = answer
        self._connections.put(conn)
        return answer

    def cancel(self) -> None:
        """Give up on the answer (a page read ahead and dropped): its connection cannot be reused."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        self.cancel()
