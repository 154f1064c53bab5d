"""Page requests sent now and read later: how one thread overlaps ServiceNow's answer time with its own work.

The source's page loop (:mod:`sncli.source.poller`) sends the request for page
N+1, produces page N to Kafka, and reads N+1's answer when it gets to it;
ServiceNow works on N+1 meanwhile and the answer waits in the socket. Why not
a helper thread that fetches: confluent-kafka takes the GIL once per record
while it serves delivery reports, and a second thread running Python at that
moment (requests' own code, JSON decoding) turns every record into a GIL
hand-over. Measured here: serving 1 000 acknowledgements takes 0.3 ms alone,
220 ms beside a busy Python thread, 1.2 s beside a thread decoding JSON. With
the request sent ahead there is no second thread at all.

Only the first attempt of a page is sent ahead. Its answer, or its failure,
goes into the client's ordinary request loop as attempt 1, so retries, the
401 refresh, Retry-After, the malformed-body check and the latency metric work
as for any call; a retry goes out on these connections too. They are the
client's one transport: every other call's attempts are sent and read on them
at once (a third of requests' CPU per call, which sink workers share one GIL for).

Waits: an attempt sent ahead has ``servicenow.timeout_seconds`` from its send
for its answer to start, however long its reader took to come for it; then it
is a timeout like any other attempt's (a read is retried). ``answered`` waits
for the attempt to be over; ``ready`` says whether ``result`` would return
without waiting for ServiceNow (the answer is a 2xx: no backoff, Retry-After
or token refresh behind it).

Connections: urllib3's (requests' own transport), one per request in flight,
kept alive between pages; TLS is set up as requests sets it (verification
with certifi's bundle or ``tls.ca_bundle``, a file or a directory; the client
certificate), with the same ``User-Agent`` and ``Accept-Encoding``. With
``servicenow.proxy`` set, nothing is sent ahead: the page is fetched through
:mod:`sncli.servicenow.proxied` when it is read (the proxy handling stays requests'; against a real
instance the answer time dominates anyway, and overlapping it saves only the
loop's own few milliseconds per page).
"""

from __future__ import annotations

import errno
import os
import select
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar
from urllib.parse import urlencode, urlsplit

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.util import make_headers

if TYPE_CHECKING:
    from sncli.config import ServiceNowSettings

R = TypeVar("R")

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
            from requests.utils import DEFAULT_CA_BUNDLE_PATH  # certifi's bundle, as requests uses it

            bundle = str(tls.ca_bundle) if tls.ca_bundle else DEFAULT_CA_BUNDLE_PATH
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


class PendingPage(Generic[R]):
    """A page being fetched: :meth:`answered` / :meth:`ready` to wait for it without reading it, :meth:`result`
    to get it.

    ``sent`` None: nothing was sent ahead; ``result`` fetches the page when called
    (``waits``: through the proxied transport), or raises what made sending it
    impossible (``waits`` False: an authentication failure).
    """

    def __init__(self, sent: SentRequest | None, read: Callable[[SentRequest | None], R], *,
                 waits: bool = True) -> None:
        self._sent = sent
        self._read = read
        self._waits = sent is None and waits

    def answered(self, timeout: float) -> bool:
        """True once the first attempt is over (answered, failed or out of time), waiting up to ``timeout``.

        :meth:`result` then waits for ServiceNow only if the attempt needs a retry.
        """
        return self._sent is None or self._sent.ready(timeout)

    def ready(self, timeout: float) -> bool:
        """True once :meth:`result` would not wait for ServiceNow: the first attempt answered 2xx.

        False while it is not answered within ``timeout``, and when it failed: its
        retries (backoff, Retry-After, a token refresh) wait inside ``result``.
        """
        if self._sent is None:
            return not self._waits
        return self._sent.succeeded(timeout)

    def result(self) -> R:
        """The page, with the request loop's retries behind it; raises what a direct fetch would raise."""
        return self._read(self._sent)

    def cancel(self) -> None:
        if self._sent is not None:
            self._sent.cancel()
