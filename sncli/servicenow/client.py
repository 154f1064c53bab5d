"""HTTP client for the ServiceNow Table API: auth, retries, rate limit, metrics.

One client is shared by all threads of a run. It owns a ``requests.Session``
whose connection pool is sized to the worker count (so N workers keep N
keep-alive connections instead of reconnecting), a token bucket, and the
authenticator. Every attempt:

1. waits for a rate-limit token;
2. asks the authenticator for a header (which may refresh the OAuth token);
3. sends the pre-serialized body (the same bytes on every retry);
4. is observed in ``bridge_sn_api_latency_seconds{endpoint,method}``;
5. is judged by :mod:`sncli.servicenow.policy` (retry, ambiguous, fail).

Retries wait with full-jitter exponential backoff; a 429 waits for its
``Retry-After`` in full. Both are bounded by ``retry.max_attempts`` and
``retry.max_elapsed_seconds``; a wait that would overrun the elapsed budget is
not started: the call fails at once with :class:`RetriesExhaustedError`.
"""

from __future__ import annotations

import logging
import random
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.client import HTTPException, IncompleteRead
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar
from urllib.parse import urlencode, urlsplit

import orjson
from urllib3.exceptions import ConnectTimeoutError, DecodeError, HTTPError, MaxRetryError, ProtocolError
from urllib3.exceptions import ProxyError as Urllib3ProxyError
from urllib3.exceptions import SSLError as Urllib3SSLError

from sncli.config import BasicAuth, ServiceNowSettings
from sncli.metrics import RunMetrics
from sncli.servicenow.auth import OAUTH_ENDPOINT, Authenticator, BasicAuthenticator, OAuthAuthenticator
from sncli.servicenow.backoff import BackoffPolicy, parse_http_date, parse_retry_after
from sncli.servicenow.errors import (
    AmbiguousWriteError,
    AuthError,
    BadRequestError,
    CallAbandoned,
    MalformedResponseError,
    NotFoundError,
    RetriesExhaustedError,
    TransportError,
    error_from_response,
    parse_error_body,
)
from sncli.servicenow.policy import Decision, Failure, decide_failure, decide_status
from sncli.servicenow.ratelimit import TokenBucket
from sncli.servicenow.readahead import Answer, Connections, PendingPage, SentRequest
from sncli.transport_security import plain_http_off_host

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
DisplayValue = Literal["false", "true", "all"]

_TABLE = re.compile(r"[a-z0-9_]+")
_SYS_ID = re.compile(r"[0-9a-f]{32}")
_FAILURE_TEXT = {
    Failure.CONNECT: "could not connect",
    Failure.SENT: "no answer",
    Failure.TRUNCATED: "answer cut short",
    Failure.MALFORMED: "malformed answer",
    Failure.TLS: "TLS failure",
    Failure.OTHER: "request failed",
}
USER_AGENT = "sncli"
_JSON_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}
_FORM_HEADERS = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}


@dataclass(frozen=True, slots=True)
class Page:
    """One Table API answer: its records untouched (as parsed by orjson) plus what the headers say."""

    records: list[dict[str, Any]]
    total: int | None  # X-Total-Count; None when sysparm_no_count=true
    server_time: datetime | None  # the answer's Date header, UTC
    links: dict[str, str] = field(default_factory=dict)  # Link header: rel -> URL


@dataclass(frozen=True, slots=True)
class DecodedPage(Generic[R]):
    """One Table API answer whose body went through the caller's decoder (see ``list_page_decoded``)."""

    records: R
    total: int | None
    server_time: datetime | None


class _Malformed(Exception):
    """The body of a 2xx answer is not what the Table API promises."""


class ServiceNowClient:
    """Table API client; thread-safe, one per run. Use as a context manager or call ``close()``."""

    def __init__(
        self,
        settings: ServiceNowSettings,
        *,
        metrics: RunMetrics | None = None,
        pool_size: int = 10,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.base_url = settings.instance_url.rstrip("/")
        self._metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._backoff = BackoffPolicy.from_ms(settings.retry.initial_backoff_ms, settings.retry.max_backoff_ms)
        self._timeout = (settings.timeout_seconds, settings.timeout_seconds)
        self._bucket = (
            TokenBucket(settings.rate_limit.requests_per_second, settings.rate_limit.burst, clock=clock, sleep=sleep)
            if settings.rate_limit is not None
            else None
        )
        # requests is imported and its session made only when a call needs it (a retry, a proxy):
        # first attempts go out on urllib3 directly, and importing requests costs 50 ms at start.
        self._pool_size = max(1, pool_size)
        self._session_lock = threading.Lock()
        self._requests_session: requests.Session | None = None
        tls = settings.tls
        self._verify: bool | str = str(tls.ca_bundle) if tls.verify and tls.ca_bundle else tls.verify
        self._cert: str | tuple[str, str] | None = None
        if tls.client_cert is not None:
            self._cert = (str(tls.client_cert), str(tls.client_key)) if tls.client_key else str(tls.client_cert)
        self._proxies = {"http": settings.proxy, "https": settings.proxy} if settings.proxy else {}
        # Requests sent ahead (start_page_decoded) go straight to the instance; with a proxy, through requests.
        self._connections = None if settings.proxy else Connections(settings, user_agent=USER_AGENT)
        self.base_url_path = urlsplit(self.base_url).path  # an instance URL may carry a path prefix
        if not tls.verify:
            log.warning("TLS certificate verification is disabled (servicenow.tls.verify: false)")
        if plain_http_off_host(self.base_url):
            log.warning("servicenow.instance_url is plain http://: credentials and records cross the network "
                        "unencrypted; use https")
        self.auth: Authenticator
        if isinstance(settings.auth, BasicAuth):
            self.auth = BasicAuthenticator(settings.auth)
        else:
            self.auth = OAuthAuthenticator(settings.auth, self.base_url, self._token_transport, clock=clock)

    @property
    def _session(self) -> requests.Session:
        with self._session_lock:
            if self._requests_session is None:
                self._requests_session = self._make_session(self._pool_size)
            return self._requests_session

    @staticmethod
    def _make_session(pool_size: int) -> requests.Session:
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        # Deterministic: no ~/.netrc (it would replace our Authorization header), no
        # *_PROXY / REQUESTS_CA_BUNDLE from the environment; the config says it all.
        session.trust_env = False
        # pool_connections counts hosts (the instance, maybe a separate token host); pool_maxsize
        # counts keep-alive connections per host, one per worker thread.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers.update({"User-Agent": USER_AGENT})
        return session

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        if self._requests_session is not None:
            self._requests_session.close()
        if self._connections is not None:
            self._connections.close()

    def __enter__(self) -> ServiceNowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ServiceNowClient({self.base_url!r})"

    # ---------------------------------------------------------------- Table API

    def list_page(
        self,
        table: str,
        *,
        query: str,
        fields: list[str] | tuple[str, ...] | None = None,
        limit: int,
        display_value: DisplayValue = "false",
        exclude_reference_link: bool = True,
        no_count: bool = True,
        offset: int | None = None,
        cancel: threading.Event | None = None,
    ) -> Page:
        """One page of ``GET /api/now/table/<table>``; records come back exactly as ServiceNow sent them."""
        params = _page_params(query, fields, limit, display_value, exclude_reference_link, no_count, offset)
        return self._call("GET", _table_path(table), endpoint=_endpoint(table), params=params, parse=_parse_page,
                          whole_body=True, cancel=cancel)

    def list_page_decoded(
        self,
        table: str,
        *,
        decode: Callable[[bytes], R],
        query: str,
        fields: list[str] | tuple[str, ...] | None = None,
        limit: int,
        display_value: DisplayValue = "false",
        exclude_reference_link: bool = True,
        no_count: bool = True,
        _first: SentRequest | None = None,
    ) -> DecodedPage[R]:
        """``list_page`` with the body handed to ``decode`` instead of parsed into dicts.

        For a caller that wants the records in another form (the source keeps each
        record's JSON bytes). ``decode`` raising ValueError means a malformed answer:
        retried like one, then MalformedResponseError.
        """
        params = _page_params(query, fields, limit, display_value, exclude_reference_link, no_count, None)

        def parse(resp: Answer | requests.Response) -> DecodedPage[R]:
            try:
                records = decode(resp.content)
            except ValueError as exc:
                raise _Malformed(str(exc)) from None
            return DecodedPage(records, _total(resp), parse_http_date(resp.headers.get("Date")))

        return self._call("GET", _table_path(table), endpoint=_endpoint(table), params=params, parse=parse,
                          whole_body=True, first=_first)

    def start_page_decoded(
        self,
        table: str,
        *,
        decode: Callable[[bytes], R],
        query: str,
        fields: list[str] | tuple[str, ...] | None = None,
        limit: int,
        display_value: DisplayValue = "false",
    ) -> PendingPage[DecodedPage[R]]:
        """``list_page_decoded`` with its first attempt sent now and its answer read by ``result()``.

        See :mod:`sncli.servicenow.readahead`. Nothing here raises: the rate limit
        is waited for now, and an authentication or transport failure surfaces
        from ``result()``, where the caller is ready for it.
        """
        params = _page_params(query, fields, limit, display_value, True, True, None)
        path = _table_path(table)

        def read(sent: SentRequest | None) -> DecodedPage[R]:
            return self.list_page_decoded(table, decode=decode, query=query, fields=fields, limit=limit,
                                          display_value=display_value, _first=sent)

        if self._connections is None:
            return PendingPage(None, read)  # a proxy: fetched through requests when read
        self._take_token()
        try:
            authorization = self.auth.authorization()
        except Exception as exc:
            return PendingPage(None, _raise_later(exc), waits=False)
        sent = SentRequest(self._connections, "GET", self.base_url_path + path, params, authorization=authorization)
        return PendingPage(sent, read)

    def get(
        self,
        table: str,
        sys_id: str,
        *,
        fields: list[str] | tuple[str, ...] | None = None,
        display_value: DisplayValue = "false",
        exclude_reference_link: bool = True,
        cancel: threading.Event | None = None,
    ) -> dict[str, Any] | None:
        """One record by sys_id, or None when ServiceNow says 404."""
        params = {
            "sysparm_display_value": _display_value(display_value),
            "sysparm_exclude_reference_link": _flag(exclude_reference_link),
        }
        if fields:
            params["sysparm_fields"] = ",".join(fields)
        try:
            return self._call(
                "GET", _record_path(table, sys_id), endpoint=_endpoint(table), params=params, parse=_parse_record,
                cancel=cancel,
            )
        except NotFoundError:
            return None

    def insert(self, table: str, body: dict[str, Any], *, cancel: threading.Event | None = None) -> dict[str, Any]:
        """``POST`` a new record; never retried once it may have reached ServiceNow (see policy.py)."""
        return self._call(
            "POST", _table_path(table), endpoint=_endpoint(table), params=_write_params(),
            body=_dump(body), parse=_parse_record, cancel=cancel,
        )

    def update(
        self, table: str, sys_id: str, body: dict[str, Any], *, cancel: threading.Event | None = None
    ) -> dict[str, Any]:
        """``PATCH`` the given fields of one record (idempotent, so retried)."""
        return self._call(
            "PATCH", _record_path(table, sys_id), endpoint=_endpoint(table), params=_write_params(),
            body=_dump(body), parse=_parse_record, cancel=cancel,
        )

    def delete(
        self, table: str, sys_id: str, *, missing_ok: bool = False, cancel: threading.Event | None = None
    ) -> None:
        """``DELETE`` one record; with ``missing_ok`` a 404 (already gone, e.g. by an earlier try) is success."""
        try:
            self._call("DELETE", _record_path(table, sys_id), endpoint=_endpoint(table), parse=_ignore_body,
                       cancel=cancel)
        except NotFoundError:
            if not missing_ok:
                raise

    def server_time(self, table: str = "sys_user") -> datetime:
        """ServiceNow's clock (the ``Date`` header), the upper bound a poll cycle is measured against.

        Any answer carries the header, so an ACL 403 on ``table`` still tells the time.
        """
        params = {"sysparm_limit": "1", "sysparm_fields": "sys_id", "sysparm_no_count": "true"}
        when = self._call(
            "GET", _table_path(table), endpoint=_endpoint(table), params=params, parse=_parse_date,
            answer_statuses=frozenset({403, 404}),
        )
        if when is None:
            raise MalformedResponseError(None, "the answer has no usable Date header", method="GET",
                                         endpoint=_endpoint(table))
        return when

    # ---------------------------------------------------------------- the request loop

    def _token_transport(self, url: str, form: dict[str, str]) -> tuple[int, bytes]:
        # A token request is a POST, but repeating it is harmless (at worst a spare token),
        # so it is retried like a read. 4xx answers go back to the authenticator to judge.
        def parse(resp: Answer | requests.Response) -> tuple[int, bytes]:
            return resp.status_code, resp.content

        return self._call(
            "POST", url, endpoint=OAUTH_ENDPOINT, form=urlencode(form).encode("ascii"), parse=parse,
            authenticate=False, idempotent=True, answer_statuses=frozenset(range(400, 500)) - {429},
        )

    def _call(
        self,
        method: str,
        path_or_url: str,
        *,
        endpoint: str,
        parse: Callable[[Any], T],  # takes a requests.Response or a read-ahead Answer
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        form: bytes | None = None,
        authenticate: bool = True,
        idempotent: bool | None = None,
        answer_statuses: frozenset[int] = frozenset(),
        whole_body: bool = False,
        first: SentRequest | None = None,
        cancel: threading.Event | None = None,
    ) -> T:
        """One logical call with its retries.

        ``whole_body``: read the body in one read instead of requests' 10 KiB chunks
        (see :func:`_read_whole_body`); for the large pages of ``list_page``.
        ``first``: attempt 1, already sent ahead (:mod:`sncli.servicenow.readahead`);
        its answer or failure is judged like any attempt's.
        ``cancel``: once set, no further attempt is sent and a backoff wait ends at once,
        raising :class:`CallAbandoned`; an attempt already sent runs to its answer
        (bounded by ``timeout_seconds``), which is returned or judged as usual.
        """
        url = path_or_url if path_or_url.startswith(("http://", "https://")) else self.base_url + path_or_url
        policy_method = method if idempotent is None else ("GET" if idempotent else "POST")
        data = body if form is None else form
        headers = dict(_JSON_HEADERS if form is None else _FORM_HEADERS)
        started = self._clock()
        attempts = 0
        reauthenticated = False
        ahead = first
        used_auth: str | None = None
        lean = self._lean(url)
        while True:
            attempts += 1
            sent, ahead = ahead, None
            if sent is None:
                self._take_token()
                used_auth = self.auth.authorization() if authenticate else None
                if used_auth is not None:
                    headers["Authorization"] = used_auth
                if cancel is not None and cancel.is_set():
                    raise CallAbandoned(f"{method} {endpoint}: given up before attempt {attempts}")
                if attempts == 1 and lean is not None:
                    # The first attempt on urllib3 directly (a third of requests' CPU per call,
                    # which 16 sink workers share one GIL for); retries through requests.
                    sent = SentRequest(lean[0], method, lean[1], params, body=data, headers=headers,
                                       authorization=used_auth)
            else:
                used_auth = sent.authorization
            t0 = time.perf_counter()
            resp: Answer | requests.Response
            try:
                if sent is not None:
                    resp = sent.answer()
                else:
                    resp = self._session.request(
                        method, url, params=params, data=data, headers=headers, timeout=self._timeout,
                        verify=self._verify, cert=self._cert, proxies=self._proxies, allow_redirects=False,
                        stream=whole_body,
                    )
                    if whole_body:
                        _read_whole_body(resp)
            except Exception as exc:
                if not isinstance(exc, _transport_errors()):
                    raise
                # OSError: a local problem requests does not wrap (e.g. a ca_bundle path that does not exist);
                # urllib3's and http.client's own errors come from an attempt on urllib3 directly.
                self._observe(endpoint, method, t0, sent)
                failure = classify_exception(exc) if sent is None else classify_sent_ahead(exc)
                decision = decide_failure(policy_method, failure)
                cause = f"{_FAILURE_TEXT[failure]} ({describe_exception(exc)})"
                if decision is Decision.RETRY:
                    self._wait_before_retry(method, endpoint, attempts, started, None, cause, None, cancel)
                    continue
                if decision is Decision.AMBIGUOUS:
                    raise AmbiguousWriteError(
                        None, f"{cause} after the request was sent; it may have been applied",
                        method=method, endpoint=endpoint, attempts=attempts,
                    ) from exc
                raise TransportError(None, cause, method=method, endpoint=endpoint, attempts=attempts) from exc
            self._observe(endpoint, method, t0, sent)

            status = resp.status_code
            if 200 <= status < 300 or status in answer_statuses:
                try:
                    return parse(resp)
                except _Malformed as exc:
                    decision = decide_failure(policy_method, Failure.MALFORMED)
                    cause = f"HTTP {status} with a malformed body: {exc}"
                    if decision is Decision.RETRY:
                        self._wait_before_retry(method, endpoint, attempts, started, status, cause, None, cancel)
                        continue
                    raise MalformedResponseError(
                        status, f"malformed body in a {status} answer: {exc}", method=method, endpoint=endpoint,
                        attempts=attempts,
                    ) from None

            if status == 401 and authenticate:
                assert used_auth is not None
                if not reauthenticated and self.auth.refresh_after_401(used_auth):
                    reauthenticated = True
                    attempts -= 1  # the re-authenticated retry is not a backoff attempt
                    continue
                said = "; ".join(part for part in parse_error_body(resp.content) if part)
                raise AuthError(
                    status, "unauthorized" + (" even with a new token" if reauthenticated else ""), said or None,
                    method=method, endpoint=endpoint, attempts=attempts,
                )

            decision = decide_status(policy_method, status)
            if decision is Decision.RETRY:
                retry_after = None
                header = resp.headers.get("Retry-After")
                if header is not None:
                    retry_after = parse_retry_after(header, now=parse_http_date(resp.headers.get("Date")))
                cause = f"HTTP {status}" + (f" (Retry-After: {header.strip()})" if header else "")
                self._wait_before_retry(method, endpoint, attempts, started, status, cause, retry_after, cancel)
                continue
            if decision is Decision.AMBIGUOUS:
                raise AmbiguousWriteError(
                    status, f"HTTP {status} from a gateway; the write may have been applied",
                    method=method, endpoint=endpoint, attempts=attempts,
                )
            raise error_from_response(status, resp.content, method=method, endpoint=endpoint, attempts=attempts,
                                      reason=resp.reason or None)
        # (the loop only ends by return or raise)

    def _wait_before_retry(
        self,
        method: str,
        endpoint: str,
        attempts: int,
        started: float,
        status: int | None,
        cause: str,
        retry_after: float | None,
        cancel: threading.Event | None = None,
    ) -> None:
        """Sleep before the next attempt, or raise RetriesExhaustedError when the budget is spent.

        With ``cancel`` the wait is on the event (the injected ``sleep`` is not used) and
        ends with :class:`CallAbandoned` as soon as it is set.
        """
        retry = self.settings.retry
        if attempts >= retry.max_attempts:
            raise RetriesExhaustedError(
                status, f"gave up after {attempts} attempts; last: {cause}", method=method, endpoint=endpoint,
                attempts=attempts,
            )
        with self._rng_lock:
            backoff = self._backoff.delay(attempts, self._rng)
        # Retry-After is the server's minimum: never shortened, never jittered below.
        delay = backoff if retry_after is None else max(retry_after, backoff if status != 429 else 0.0)
        elapsed = self._clock() - started
        if elapsed + delay > retry.max_elapsed_seconds:
            raise RetriesExhaustedError(
                status,
                f"gave up after {attempts} attempts: waiting {delay:.1f} s more would exceed "
                f"max_elapsed_seconds={retry.max_elapsed_seconds:g}; last: {cause}",
                method=method, endpoint=endpoint, attempts=attempts,
            )
        log.warning("%s %s: %s; retry %d/%d in %.2f s", method, endpoint, cause, attempts + 1,
                    retry.max_attempts, delay)
        if cancel is not None:
            if cancel.wait(delay):
                raise CallAbandoned(f"{method} {endpoint}: given up after {attempts} attempts; last: {cause}")
        elif delay > 0:
            self._sleep(delay)

    def _lean(self, url: str) -> tuple[Connections, str] | None:
        """Where to send ``url`` on a urllib3 connection, or None: through requests (a proxy, another host)."""
        if self._connections is None or not url.startswith(self.base_url + "/"):
            return None
        return self._connections, self.base_url_path + url[len(self.base_url):]

    def _take_token(self) -> None:
        """The rate limit: wait for a token (a sleep outside the bucket's lock, see TokenBucket.reserve)."""
        if self._bucket is None:
            return
        wait = self._bucket.reserve()
        if wait > 0:
            self._sleep(wait)

    def _observe(self, endpoint: str, method: str, t0: float, sent: SentRequest | None = None) -> None:
        if self._metrics is not None:
            seconds = sent.seconds if sent is not None else time.perf_counter() - t0
            self._metrics.observe_api_call(endpoint, method, seconds)


# -------------------------------------------------------------------- helpers (pure)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What an attempt can raise that the request loop judges: requests', urllib3's, http.client's, OSError."""
    import requests

    return (requests.RequestException, OSError, HTTPError, HTTPException)


def classify_exception(exc: BaseException) -> Failure:
    """Where in the exchange a requests exception happened, which decides if a POST may be retried."""
    import requests

    if isinstance(exc, requests.exceptions.SSLError):
        return Failure.TLS
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return Failure.CONNECT
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        return Failure.TRUNCATED
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return Failure.SENT
    if isinstance(exc, requests.exceptions.ConnectionError):
        inner = exc.args[0] if exc.args else None
        if isinstance(inner, MaxRetryError):
            reason = inner.reason
            if isinstance(reason, Urllib3ProxyError):
                reason = reason.original_error
            # NewConnectionError (refused, DNS) is a ConnectTimeoutError subclass in urllib3.
            if isinstance(reason, ConnectTimeoutError):
                return Failure.CONNECT
        return Failure.SENT
    return Failure.OTHER


def classify_sent_ahead(exc: BaseException) -> Failure:
    """:func:`classify_exception` for an attempt on urllib3 directly (:mod:`sncli.servicenow.readahead`).

    Its failures are urllib3's, http.client's and the socket's own, not wrapped by requests.
    """
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
        return Failure.OTHER  # a local problem, e.g. a ca_bundle or client certificate that cannot be read
    if isinstance(exc, (ssl.SSLError, ssl.CertificateError, Urllib3SSLError)):
        return Failure.TLS
    if isinstance(exc, ConnectTimeoutError):  # NewConnectionError and NameResolutionError too
        return Failure.CONNECT
    if isinstance(exc, (IncompleteRead, ProtocolError, DecodeError)):
        return Failure.TRUNCATED
    if isinstance(exc, (OSError, HTTPException, HTTPError)):  # timeouts, resets, closed before an answer
        return Failure.SENT
    return Failure.OTHER


def describe_exception(exc: BaseException) -> str:
    """A short, credential-free account of a transport exception (class of the innermost cause)."""
    inner: BaseException = exc
    seen = 0
    while seen < 5:
        seen += 1
        nxt: BaseException | None = None
        if isinstance(inner, MaxRetryError) and inner.reason is not None:
            nxt = inner.reason
        elif inner.args and isinstance(inner.args[0], BaseException):
            nxt = inner.args[0]
        elif len(inner.args) > 1 and isinstance(inner.args[1], BaseException):
            nxt = inner.args[1]
        if nxt is None:
            break
        inner = nxt
    text = str(inner)
    if len(text) > 160:
        text = text[:159] + "…"
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__


def _endpoint(table: str) -> str:
    return f"table/{_check_table(table)}"


def _check_table(table: str) -> str:
    if not _TABLE.fullmatch(table):
        raise BadRequestError(None, f"invalid table name {table!r}")
    return table


def _table_path(table: str) -> str:
    return f"/api/now/table/{_check_table(table)}"


def _record_path(table: str, sys_id: str) -> str:
    # A sys_id comes from data (Kafka messages); it must not be able to address another path.
    if not isinstance(sys_id, str) or not _SYS_ID.fullmatch(sys_id):
        raise BadRequestError(None, f"invalid sys_id {str(sys_id)[:40]!r} (expected 32 lowercase hex digits)",
                              endpoint=_endpoint(table))
    return f"{_table_path(table)}/{sys_id}"


def _raise_later(exc: Exception) -> Callable[[SentRequest | None], Any]:
    def read(sent: SentRequest | None) -> Any:
        raise exc

    return read


def _write_params() -> dict[str, str]:
    return {"sysparm_exclude_reference_link": "true"}


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _display_value(value: str) -> str:
    if value not in ("false", "true", "all"):
        raise ValueError(f"display_value must be 'false', 'true' or 'all', got {value!r}")
    return value


def _dump(body: dict[str, Any]) -> bytes:
    # Serialized once: every retry sends these exact bytes.
    return orjson.dumps(body)


def _read_whole_body(resp: requests.Response) -> None:
    """Read a streamed response's body at once, leaving ``resp`` as a non-streamed request would.

    ``Response.content`` reads in 10 KiB chunks with several Python calls each:
    about 2.5 ms of CPU per MiB, more than decoding the JSON costs, and in a
    poll it holds the GIL the produce loop needs. One read of the whole body
    costs a third of that. Errors while reading are the requests exceptions
    ``content`` would raise (iter_content maps urllib3's), raised here inside
    the caller's ``try``, so they are classified and retried the same way; a
    broken connection is discarded by urllib3, a complete one goes back to the pool.
    """
    body = b"".join(resp.iter_content(None))
    resp._content = body  # what Response.content caches once it has read the body


def _loads(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise _Malformed(f"not JSON ({exc.msg} at byte {exc.pos})") from None


def _parse_page(resp: Answer | requests.Response) -> Page:
    data = _loads(resp.content)
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(result, list):
        raise _Malformed("no 'result' list")
    links = _links(resp.headers.get("Link"))
    return Page(records=result, total=_total(resp), server_time=parse_http_date(resp.headers.get("Date")), links=links)


def _links(header: str | None) -> dict[str, str]:
    """The Link header as rel -> URL (what ``requests.Response.links`` gives, for either kind of answer)."""
    if not header:
        return {}
    from requests.utils import parse_header_links

    return {str(link.get("rel") or link.get("url", "")): str(link.get("url", "")) for link in
            parse_header_links(header)}


def _total(resp: Answer | requests.Response) -> int | None:
    total_header = resp.headers.get("X-Total-Count")
    if total_header is None:
        return None
    try:
        return int(total_header)
    except ValueError:
        return None


def _page_params(
    query: str,
    fields: list[str] | tuple[str, ...] | None,
    limit: int,
    display_value: str,
    exclude_reference_link: bool,
    no_count: bool,
    offset: int | None,
) -> dict[str, str]:
    params: dict[str, str] = {
        "sysparm_query": query,
        "sysparm_limit": str(int(limit)),
        "sysparm_display_value": _display_value(display_value),
        "sysparm_exclude_reference_link": _flag(exclude_reference_link),
        "sysparm_no_count": _flag(no_count),
    }
    if fields:
        params["sysparm_fields"] = ",".join(fields)
    if offset is not None:
        params["sysparm_offset"] = str(int(offset))
    return params


def _parse_record(resp: Answer | requests.Response) -> dict[str, Any]:
    data = _loads(resp.content)
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(result, dict):
        raise _Malformed("no 'result' object")
    return result


def _ignore_body(resp: Answer | requests.Response) -> None:
    return None


def _parse_date(resp: Answer | requests.Response) -> datetime | None:
    return parse_http_date(resp.headers.get("Date"))

