"""Which failed attempts are retried, as a pure decision table.

The rule that matters is for writes that are not idempotent (POST = insert).
Repeating a POST that ServiceNow already processed creates a duplicate record,
so a POST is retried only when the failure proves ServiceNow did not act on it:

- the connection was never established (refused, DNS, connect timeout): retry;
- 429: ServiceNow's rate limiter rejects before the transaction runs: retry;
- 503: ServiceNow (or its load balancer) refuses work it has not started
  (node unavailable, semaphore queue full): retry;
- 502 / 504, a read timeout, a reset after sending, a truncated answer: the
  request reached something that may have passed it on, and the insert may
  have happened: *ambiguous* -> :class:`AmbiguousWriteError`, never retried;
- 500 and other 5xx: ServiceNow answered that the request failed (a business
  rule threw, ...) -> :class:`ServerError`, not retried (the caller sees a
  definite failure with ServiceNow's message).

GET, PUT, PATCH and DELETE are idempotent (a PATCH by sys_id with the same
body leaves the same record) and are retried on all of the above.
"""

from __future__ import annotations

from enum import Enum

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})
POST_RETRYABLE_STATUSES = frozenset({429, 503})
POST_AMBIGUOUS_STATUSES = frozenset({502, 504})


class Decision(Enum):
    RETRY = "retry"  # wait (backoff or Retry-After) and send again
    AMBIGUOUS = "ambiguous"  # a write may have happened; report, do not repeat
    FAIL = "fail"  # a definite failure; report


class AttemptFailure(Enum):
    """What went wrong when there is no (complete) HTTP answer to judge by status."""

    CONNECT = "connect"  # nothing was sent: refused, DNS, connect timeout
    SENT = "sent"  # sent, then read timeout / reset / closed before an answer
    TRUNCATED = "truncated"  # an answer started but its body was cut short
    MALFORMED = "malformed"  # a complete 2xx answer whose body is not the expected JSON
    TLS = "tls"  # certificate or handshake failure: retrying cannot help
    OTHER = "other"  # invalid URL and the like


def is_idempotent(method: str) -> bool:
    return method.upper() in IDEMPOTENT_METHODS


def decide_status(method: str, status: int) -> Decision:
    """For an error status other than 401 (which the client handles by re-authenticating)."""
    if status == 429:
        return Decision.RETRY
    if status >= 500:
        if is_idempotent(method):
            return Decision.RETRY
        if status in POST_RETRYABLE_STATUSES:
            return Decision.RETRY
        if status in POST_AMBIGUOUS_STATUSES:
            return Decision.AMBIGUOUS
        return Decision.FAIL
    return Decision.FAIL


def decide_failure(method: str, failure: AttemptFailure) -> Decision:
    if failure is AttemptFailure.CONNECT:
        return Decision.RETRY
    if failure in (AttemptFailure.TLS, AttemptFailure.OTHER):
        return Decision.FAIL
    if is_idempotent(method):
        return Decision.RETRY
    if failure is AttemptFailure.MALFORMED:
        # The status said the write succeeded; only its echo is unreadable.
        return Decision.FAIL
    return Decision.AMBIGUOUS
