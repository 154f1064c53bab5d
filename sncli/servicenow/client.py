"""HTTP client for the ServiceNow Table API: one transport, with retries, auth and rate limit as policy around it.

One client is shared by all threads of a run. Every attempt goes out on
keep-alive urllib3 connections of the client's own
(:class:`~sncli.servicenow.transport.Connections`, one per request in flight);
with ``servicenow.proxy`` set, through :mod:`sncli.servicenow.proxied` instead.
Either way the attempt ends as one :class:`~sncli.servicenow.transport.Answer`
or one exception that :func:`sncli.servicenow.failures.classify_exception`
classifies. Around each attempt the request loop:

1. waits for a rate-limit token (:mod:`sncli.servicenow.ratelimit`);
2. asks the authenticator for a header (which may refresh the OAuth token);
3. sends the pre-serialized body (the same bytes on every retry);
4. observes it in ``bridge_sn_api_latency_seconds{endpoint,method}``;
5. judges it by :mod:`sncli.servicenow.policy` (retry, ambiguous, fail) and,
   for an answer, parses it with :mod:`sncli.servicenow.table`.

Retries wait with full-jitter exponential backoff; a 429 waits for its
``Retry-After`` in full. Both are bounded by ``retry.max_attempts`` and
``retry.max_elapsed_seconds``; a wait that would overrun the elapsed budget is
not started: the call fails at once with :class:`RetriesExhaustedError`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

from sncli.config import BasicAuth, ServiceNowSettings
from sncli.metrics import RunMetrics
from sncli.servicenow import stats as agg
from sncli.servicenow import table as tbl
from sncli.servicenow.auth import OAUTH_ENDPOINT, Authenticator, BasicAuthenticator, OAuthAuthenticator
from sncli.servicenow.backoff import BackoffPolicy, parse_http_date, parse_retry_after
from sncli.servicenow.batching import BATCH_PATH, Batcher
from sncli.servicenow.concurrency import AimdController
from sncli.servicenow.errors import (
    AmbiguousWriteError,
    AuthError,
    CallAbandoned,
    MalformedResponseError,
    NotFoundError,
    RetriesExhaustedError,
    TransportError,
    error_from_response,
    parse_error_body,
)
from sncli.servicenow.failures import FAILURE_TEXT, classify_exception, describe_exception, is_transport_failure
from sncli.servicenow.gate import Gate
from sncli.servicenow.policy import AttemptFailure, Decision, decide_failure, decide_status
from sncli.servicenow.proxied import ProxiedTransport
from sncli.servicenow.ratelimit import TokenBucket
from sncli.servicenow.readahead import PendingPage
from sncli.servicenow.table import DecodedPage, DisplayValue, Page
from sncli.servicenow.transport import Answer, Connections, SentRequest
from sncli.transport_security import plain_http_off_host

__all__ = ["USER_AGENT", "DecodedPage", "DisplayValue", "Page", "ServiceNowClient"]  # Page: its home is table.py

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
USER_AGENT = "sncli"
_BATCHED_METHODS = frozenset({"POST", "PATCH", "DELETE"})


@dataclass(slots=True)
class _Call:
    """One logical call: what every attempt sends, and where its retries stand."""

    method: str
    url: str
    endpoint: str
    policy_method: str  # the method policy.py judges by ("GET" for an idempotent POST)
    params: dict[str, str] | None
    data: bytes | None
    headers: dict[str, str]
    authenticate: bool
    answer_statuses: frozenset[int]
    cancel: threading.Event | None
    started: float
    attempts: int = 0
    reauthenticated: bool = False
    used_auth: str | None = None  # the Authorization header of the latest attempt


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
        gate: Gate | None = None,
    ) -> None:
        """``gate``: bounds the calls in flight (adaptive concurrency, :mod:`sncli.servicenow.gate`)."""
        self.settings = settings
        self.gate = gate
        self._batcher: Batcher | None = None
        self.base_url = settings.instance_url.rstrip("/")
        self._metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._backoff = BackoffPolicy.from_ms(settings.retry.initial_backoff_ms, settings.retry.max_backoff_ms)
        self._bucket = (
            TokenBucket(settings.rate_limit.requests_per_second, settings.rate_limit.burst, clock=clock, sleep=sleep)
            if settings.rate_limit is not None
            else None
        )
        # The one transport: urllib3 connections straight to the instance. The proxied one (requests)
        # is made on first use only: with a proxy, or for a token URL on another host.
        self._connections = None if settings.proxy else Connections(settings, user_agent=USER_AGENT)
        self._proxied = ProxiedTransport(settings, pool_size=pool_size, user_agent=USER_AGENT)
        self.base_url_path = urlsplit(self.base_url).path  # an instance URL may carry a path prefix
        if not settings.tls.verify:
            log.warning("TLS certificate verification is disabled (servicenow.tls.verify: false)")
        if plain_http_off_host(self.base_url):
            log.warning("servicenow.instance_url is plain http://: credentials and records cross the network "
                        "unencrypted; use https")
        self.auth: Authenticator
        if isinstance(settings.auth, BasicAuth):
            self.auth = BasicAuthenticator(settings.auth)
        else:
            self.auth = OAuthAuthenticator(settings.auth, self.base_url, self._token_transport, clock=clock)

    # ---------------------------------------------------------------- lifecycle

    def use_batches(self, *, size: int, max_wait: float, senders: int) -> Batcher:
        """Carry Table API writes (POST / PATCH / DELETE) in Batch API exchanges from now on.

        Each write is still its own call here (retries, judgement, errors unchanged);
        only its attempts travel in shared exchanges (:mod:`sncli.servicenow.batching`).
        """
        if self.gate is None:
            self.gate = Gate(AimdController(senders), adaptive=False)
        self._batcher = Batcher(self.send_batch, self.gate, size=size, max_wait=max_wait, senders=senders)
        return self._batcher

    def send_batch(self, body: bytes) -> Answer:
        """One ``POST /api/now/v1/batch`` attempt, never retried here: its items are judged one by one."""
        call = _Call(method="POST", url=self.base_url + BATCH_PATH, endpoint="batch", policy_method="POST",
                     params=None, data=body, headers=dict(tbl.JSON_HEADERS), authenticate=True,
                     answer_statuses=frozenset(), cancel=None, started=self._clock())
        return self._attempt(call, None, gated=False)

    def close(self) -> None:
        if self._batcher is not None:
            self._batcher.close()
        self._proxied.close()
        if self._connections is not None:
            self._connections.close()

    def __enter__(self) -> ServiceNowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ServiceNowClient({self.base_url!r})"

    @property
    def batcher(self) -> Batcher | None:
        """The Batch API transport of the writes, once :meth:`use_batches` was called."""
        return self._batcher

    @property
    def rate_bucket(self) -> TokenBucket | None:
        """The client-side rate limit (``servicenow.rate_limit``), None when there is none."""
        return self._bucket

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
        params = tbl.page_params(query, fields, limit, display_value, exclude_reference_link, no_count, offset)
        return self._call("GET", tbl.table_path(table), endpoint=tbl.endpoint(table), params=params,
                          parse=tbl.parse_page, cancel=cancel)

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
        params = tbl.page_params(query, fields, limit, display_value, exclude_reference_link, no_count, None)

        def parse(resp: Answer) -> DecodedPage[R]:
            try:
                records = decode(resp.content)
            except ValueError as exc:
                raise tbl.Malformed(str(exc)) from None
            return DecodedPage(records, tbl.total(resp), tbl.parse_date(resp))

        return self._call("GET", tbl.table_path(table), endpoint=tbl.endpoint(table), params=params, parse=parse,
                          first=_first)

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
        params = tbl.page_params(query, fields, limit, display_value, True, True, None)
        path = tbl.table_path(table)

        def read(sent: SentRequest | None) -> DecodedPage[R]:
            return self.list_page_decoded(table, decode=decode, query=query, fields=fields, limit=limit,
                                          display_value=display_value, _first=sent)

        if self._connections is None:
            return PendingPage(None, read)  # a proxy: fetched through the proxied transport when read
        self._take_token()
        try:
            authorization = self.auth.authorization()
        except Exception as exc:
            failed = exc

            def fail(sent: SentRequest | None) -> DecodedPage[R]:
                raise failed

            return PendingPage(None, fail, waits=False)
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
        params = tbl.record_params(fields, display_value, exclude_reference_link)
        try:
            return self._call(
                "GET", tbl.record_path(table, sys_id), endpoint=tbl.endpoint(table), params=params,
                parse=tbl.parse_record, cancel=cancel,
            )
        except NotFoundError:
            return None

    def count(self, table: str, query: str, *, cancel: threading.Event | None = None) -> int:
        """How many records of ``table`` match ``query``: the Aggregate API (``sysparm_count=true``)."""
        return self._call("GET", agg.stats_path(table), endpoint=agg.stats_endpoint(table),
                          params=agg.count_params(query), parse=agg.parse_count, cancel=cancel)

    def insert(self, table: str, body: dict[str, Any], *, cancel: threading.Event | None = None) -> dict[str, Any]:
        """``POST`` a new record; never retried once it may have reached ServiceNow (see policy.py)."""
        return self._call(
            "POST", tbl.table_path(table), endpoint=tbl.endpoint(table), params=tbl.write_params(),
            body=tbl.dump(body), parse=tbl.parse_record, cancel=cancel,
        )

    def update(
        self, table: str, sys_id: str, body: dict[str, Any], *, cancel: threading.Event | None = None
    ) -> dict[str, Any]:
        """``PATCH`` the given fields of one record (idempotent, so retried)."""
        return self._call(
            "PATCH", tbl.record_path(table, sys_id), endpoint=tbl.endpoint(table), params=tbl.write_params(),
            body=tbl.dump(body), parse=tbl.parse_record, cancel=cancel,
        )

    def delete(
        self, table: str, sys_id: str, *, missing_ok: bool = False, cancel: threading.Event | None = None
    ) -> None:
        """``DELETE`` one record; with ``missing_ok`` a 404 (already gone, e.g. by an earlier try) is success."""
        try:
            self._call("DELETE", tbl.record_path(table, sys_id), endpoint=tbl.endpoint(table), parse=tbl.ignore_body,
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
            "GET", tbl.table_path(table), endpoint=tbl.endpoint(table), params=params, parse=tbl.parse_date,
            answer_statuses=frozenset({403, 404}),
        )
        if when is None:
            raise MalformedResponseError(None, "the answer has no usable Date header", method="GET",
                                         endpoint=tbl.endpoint(table))
        return when

    # ---------------------------------------------------------------- the request loop

    def _token_transport(self, url: str, form: dict[str, str]) -> tuple[int, bytes]:
        # A token request is a POST, but repeating it is harmless (at worst a spare token),
        # so it is retried like a read. 4xx answers go back to the authenticator to judge.
        def parse(resp: Answer) -> tuple[int, bytes]:
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
        parse: Callable[[Answer], T],
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        form: bytes | None = None,
        authenticate: bool = True,
        idempotent: bool | None = None,
        answer_statuses: frozenset[int] = frozenset(),
        first: SentRequest | None = None,
        cancel: threading.Event | None = None,
    ) -> T:
        """One logical call with its retries.

        ``first``: attempt 1, already sent ahead (:mod:`sncli.servicenow.readahead`);
        its answer or failure is judged like any attempt's.
        ``cancel``: once set, no further attempt is sent and a backoff wait ends at once,
        raising :class:`CallAbandoned`; an attempt already sent runs to its answer
        (bounded by ``timeout_seconds``), which is returned or judged as usual.
        """
        call = _Call(
            method=method,
            url=path_or_url if path_or_url.startswith(("http://", "https://")) else self.base_url + path_or_url,
            endpoint=endpoint,
            policy_method=method if idempotent is None else ("GET" if idempotent else "POST"),
            params=params,
            data=body if form is None else form,
            headers=dict(tbl.JSON_HEADERS if form is None else tbl.FORM_HEADERS),
            authenticate=authenticate,
            answer_statuses=answer_statuses,
            cancel=cancel,
            started=self._clock(),
        )
        ahead = first
        while True:
            call.attempts += 1
            sent, ahead = ahead, None
            try:
                answer = self._attempt(call, sent)
            except Exception as exc:
                if not is_transport_failure(exc):
                    raise
                self._judge_failure(call, exc)  # raises, or has waited for the retry
                continue
            status = answer.status_code
            if 200 <= status < 300 or status in answer_statuses:
                try:
                    return parse(answer)
                except tbl.Malformed as exc:
                    self._judge_malformed(call, status, exc)
                    continue
            self._judge_error_answer(call, answer)  # raises, or has waited for the retry

    def _attempt(self, call: _Call, sent: SentRequest | None, *, gated: bool = True) -> Answer:
        """One attempt: its answer, or the transport's exception; observed in the latency metric either way.

        A write with batches on goes to the batcher (which takes the rate-limit token and
        the gate's ticket per exchange); any other attempt passes the gate, if there is one.
        """
        batched = self._batched_url(call)
        if sent is None and batched is not None:
            assert self._batcher is not None
            call.used_auth = self.auth.authorization()
            if call.cancel is not None and call.cancel.is_set():
                raise CallAbandoned(f"{call.method} {call.endpoint}: given up before attempt {call.attempts}")
            return self._batcher.exchange(call.method, batched, call.data, call.headers, call.cancel)
        if self.gate is None or not gated or sent is not None:
            return self._send_attempt(call, sent)
        ticket = self.gate.acquire(call.cancel)
        answer: Answer | None = None
        try:
            answer = self._send_attempt(call, sent)
            return answer
        finally:
            self.gate.release(ticket, status=answer.status_code if answer else None,
                              headers=answer.headers if answer else None)

    def _batched_url(self, call: _Call) -> str | None:
        """The instance-relative URL of a write that travels in a batch, or None (sent on its own)."""
        if self._batcher is None or call.method not in _BATCHED_METHODS or not call.authenticate:
            return None
        prefix = self.base_url + "/api/now/table/"
        if not call.url.startswith(prefix):
            return None
        path = call.url[len(self.base_url):]
        return path + ("?" + urlencode(call.params) if call.params else "")

    def _send_attempt(self, call: _Call, sent: SentRequest | None) -> Answer:
        if sent is None:
            self._take_token()
            call.used_auth = self.auth.authorization() if call.authenticate else None
            if call.used_auth is not None:
                call.headers["Authorization"] = call.used_auth
            if call.cancel is not None and call.cancel.is_set():
                raise CallAbandoned(f"{call.method} {call.endpoint}: given up before attempt {call.attempts}")
            direct = self._direct_path(call.url)
            if direct is not None:
                sent = SentRequest(direct[0], call.method, direct[1], call.params, body=call.data,
                                   headers=call.headers, authorization=call.used_auth)
        else:
            call.used_auth = sent.authorization
        t0 = time.perf_counter()
        try:
            if sent is not None:
                answer = sent.answer()
            else:
                answer = self._proxied.send(call.method, call.url, call.params, call.data, call.headers)
        except Exception as exc:
            if is_transport_failure(exc):
                self._observe(call, sent.seconds if sent is not None else time.perf_counter() - t0)
            raise
        self._observe(call, sent.seconds if sent is not None else time.perf_counter() - t0)
        return answer

    def _judge_failure(self, call: _Call, exc: Exception) -> None:
        """An attempt without an answer: wait for the retry, or raise what the caller sees."""
        failure = classify_exception(exc)
        decision = decide_failure(call.policy_method, failure)
        cause = f"{FAILURE_TEXT[failure]} ({describe_exception(exc)})"
        if decision is Decision.RETRY:
            self._wait_before_retry(call, None, cause, None)
            return
        if decision is Decision.AMBIGUOUS:
            raise AmbiguousWriteError(
                None, f"{cause} after the request was sent; it may have been applied",
                method=call.method, endpoint=call.endpoint, attempts=call.attempts,
            ) from exc
        raise TransportError(None, cause, method=call.method, endpoint=call.endpoint, attempts=call.attempts) from exc

    def _judge_malformed(self, call: _Call, status: int, exc: tbl.Malformed) -> None:
        """A 2xx answer whose body is not what the Table API promises: wait for the retry, or raise."""
        if decide_failure(call.policy_method, AttemptFailure.MALFORMED) is Decision.RETRY:
            self._wait_before_retry(call, status, f"HTTP {status} with a malformed body: {exc}", None)
            return
        raise MalformedResponseError(
            status, f"malformed body in a {status} answer: {exc}", method=call.method, endpoint=call.endpoint,
            attempts=call.attempts,
        ) from None

    def _judge_error_answer(self, call: _Call, answer: Answer) -> None:
        """An error status: refresh the token once after a 401, wait for the retry, or raise."""
        status = answer.status_code
        if status == 401 and call.authenticate:
            assert call.used_auth is not None
            if not call.reauthenticated and self.auth.refresh_after_401(call.used_auth):
                call.reauthenticated = True
                call.attempts -= 1  # the re-authenticated retry is not a backoff attempt
                return
            said = "; ".join(part for part in parse_error_body(answer.content) if part)
            raise AuthError(
                status, "unauthorized" + (" even with a new token" if call.reauthenticated else ""), said or None,
                method=call.method, endpoint=call.endpoint, attempts=call.attempts,
            )
        decision = decide_status(call.policy_method, status)
        if decision is Decision.RETRY:
            retry_after = None
            header = answer.headers.get("Retry-After")
            if header is not None:
                retry_after = parse_retry_after(header, now=parse_http_date(answer.headers.get("Date")))
            cause = f"HTTP {status}" + (f" (Retry-After: {header.strip()})" if header else "")
            self._wait_before_retry(call, status, cause, retry_after)
            return
        if decision is Decision.AMBIGUOUS:
            raise AmbiguousWriteError(
                status, f"HTTP {status} from a gateway; the write may have been applied",
                method=call.method, endpoint=call.endpoint, attempts=call.attempts,
            )
        raise error_from_response(status, answer.content, method=call.method, endpoint=call.endpoint,
                                  attempts=call.attempts, reason=answer.reason or None)

    def _wait_before_retry(self, call: _Call, status: int | None, cause: str, retry_after: float | None) -> None:
        """Sleep before the next attempt, or raise RetriesExhaustedError when the budget is spent.

        With ``call.cancel`` the wait is on the event (the injected ``sleep`` is not used) and
        ends with :class:`CallAbandoned` as soon as it is set.
        """
        retry = self.settings.retry
        method, endpoint, attempts = call.method, call.endpoint, call.attempts
        if attempts >= retry.max_attempts:
            raise RetriesExhaustedError(
                status, f"gave up after {attempts} attempts; last: {cause}", method=method, endpoint=endpoint,
                attempts=attempts,
            )
        with self._rng_lock:
            backoff = self._backoff.delay(attempts, self._rng)
        # Retry-After is the server's minimum: never shortened, never jittered below.
        delay = backoff if retry_after is None else max(retry_after, backoff if status != 429 else 0.0)
        elapsed = self._clock() - call.started
        if elapsed + delay > retry.max_elapsed_seconds:
            raise RetriesExhaustedError(
                status,
                f"gave up after {attempts} attempts: waiting {delay:.1f} s more would exceed "
                f"max_elapsed_seconds={retry.max_elapsed_seconds:g}; last: {cause}",
                method=method, endpoint=endpoint, attempts=attempts,
            )
        log.warning("%s %s: %s; retry %d/%d in %.2f s", method, endpoint, cause, attempts + 1,
                    retry.max_attempts, delay)
        if call.cancel is not None:
            if call.cancel.wait(delay):
                raise CallAbandoned(f"{method} {endpoint}: given up after {attempts} attempts; last: {cause}")
        elif delay > 0:
            self._sleep(delay)

    def _direct_path(self, url: str) -> tuple[Connections, str] | None:
        """Where to send ``url`` on the client's own connections, or None: through the proxied transport
        (a proxy, or a token URL on another host)."""
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

    def _observe(self, call: _Call, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.observe_api_call(call.endpoint, call.method, seconds)
