"""Backoff schedule (bounds, full jitter), Retry-After parsing, and the retry decision table."""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from sncli.servicenow.backoff import BackoffPolicy, parse_http_date, parse_retry_after
from sncli.servicenow.failures import classify_exception, describe_exception
from sncli.servicenow.policy import AttemptFailure, Decision, decide_failure, decide_status


def test_ceiling_doubles_from_initial_and_caps_at_maximum() -> None:
    policy = BackoffPolicy.from_ms(100, 30_000)
    assert [policy.ceiling(n) for n in range(1, 11)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0]
    )
    assert policy.ceiling(10_000) == 30.0  # no overflow for absurd retry numbers
    with pytest.raises(ValueError):
        policy.ceiling(0)


def test_delays_stay_within_zero_and_the_ceiling() -> None:
    policy = BackoffPolicy.from_ms(100, 30_000)
    rng = random.Random(7)
    for retry in range(1, 20):
        for _ in range(200):
            delay = policy.delay(retry, rng)
            assert 0.0 <= delay <= policy.ceiling(retry)


def test_full_jitter_is_spread_uniformly() -> None:
    policy = BackoffPolicy.from_ms(1000, 1000)  # ceiling 1 s for every retry
    rng = random.Random(42)
    samples = [policy.delay(3, rng) for _ in range(5000)]
    assert statistics.mean(samples) == pytest.approx(0.5, abs=0.03)
    # Every tenth of the range is hit about equally often: jitter, not a fixed delay.
    deciles = [0] * 10
    for s in samples:
        deciles[min(9, int(s * 10))] += 1
    assert min(deciles) > 400 and max(deciles) < 600
    # Seeded: the same seed gives the same schedule; another seed a different one.
    again = [policy.delay(3, random.Random(42)) for _ in range(1)]
    assert again[0] == samples[0]
    assert policy.delay(3, random.Random(43)) != samples[0]


def test_zero_initial_backoff_never_sleeps() -> None:
    policy = BackoffPolicy.from_ms(0, 0)
    assert policy.delay(5, random.Random(1)) == 0.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [("0", 0.0), ("1", 1.0), (" 120 ", 120.0), ("1.5", 1.5)],
)
def test_retry_after_in_seconds(header: str, expected: float) -> None:
    assert parse_retry_after(header) == expected


def test_retry_after_as_http_date_is_measured_against_the_given_now() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert header.endswith("GMT")
    assert parse_retry_after(header, now=now) == 7.0
    # A date in the past: retry now, never a negative wait.
    past = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0


def test_retry_after_as_http_date_defaults_to_the_wall_clock() -> None:
    header = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    wait = parse_retry_after(header)
    assert wait is not None and 55 <= wait <= 61


@pytest.mark.parametrize("header", [None, "", "  ", "soon", "-5", "1e3", "Mon, 99 Foo 2024", "0x10", "٣"])
def test_garbage_retry_after_is_unusable(header: str | None) -> None:
    assert parse_retry_after(header) is None


def test_parse_http_date() -> None:
    assert parse_http_date("Wed, 01 May 2024 12:00:00 GMT") == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_http_date("Wed, 01 May 2024 14:00:00 +0200") == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_http_date(None) is None
    assert parse_http_date("yesterday") is None


# ------------------------------------------------------------------ retry decisions


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_idempotent_methods_retry_429_and_every_5xx(method: str, status: int) -> None:
    assert decide_status(method, status) is Decision.RETRY


@pytest.mark.parametrize(
    ("status", "decision"),
    [(429, Decision.RETRY), (503, Decision.RETRY), (502, Decision.AMBIGUOUS), (504, Decision.AMBIGUOUS),
     (500, Decision.FAIL), (501, Decision.FAIL), (400, Decision.FAIL), (404, Decision.FAIL)],
)
def test_post_retries_only_what_proves_nothing_was_written(status: int, decision: Decision) -> None:
    assert decide_status("POST", status) is decision


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422])
def test_client_errors_are_never_retried(status: int) -> None:
    assert decide_status("GET", status) is Decision.FAIL


@pytest.mark.parametrize(
    ("failure", "get", "post"),
    [
        (AttemptFailure.CONNECT, Decision.RETRY, Decision.RETRY),
        (AttemptFailure.SENT, Decision.RETRY, Decision.AMBIGUOUS),
        (AttemptFailure.TRUNCATED, Decision.RETRY, Decision.AMBIGUOUS),
        (AttemptFailure.MALFORMED, Decision.RETRY, Decision.FAIL),
        (AttemptFailure.TLS, Decision.FAIL, Decision.FAIL),
        (AttemptFailure.OTHER, Decision.FAIL, Decision.FAIL),
    ],
)
def test_failures_without_an_answer(failure: AttemptFailure, get: Decision, post: Decision) -> None:
    assert decide_failure("GET", failure) is get
    assert decide_failure("POST", failure) is post


def test_requests_exceptions_are_classified_by_how_far_the_request_got() -> None:
    refused = requests.exceptions.ConnectionError(
        MaxRetryError(None, "/x", NewConnectionError(None, "Failed to establish a new connection"))  # type: ignore[arg-type]
    )
    assert classify_exception(refused) is AttemptFailure.CONNECT
    assert classify_exception(requests.exceptions.ConnectTimeout("t")) is AttemptFailure.CONNECT
    reset = requests.exceptions.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError(104)))
    assert classify_exception(reset) is AttemptFailure.SENT
    assert classify_exception(requests.exceptions.ReadTimeout("r")) is AttemptFailure.SENT
    assert classify_exception(requests.exceptions.ChunkedEncodingError("c")) is AttemptFailure.TRUNCATED
    assert classify_exception(requests.exceptions.SSLError("cert")) is AttemptFailure.TLS
    assert classify_exception(requests.exceptions.InvalidURL("u")) is AttemptFailure.OTHER
    assert describe_exception(reset).startswith("ConnectionResetError")
