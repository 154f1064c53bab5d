"""No silent cap: no default client rate limit; a configured one is described, and reported when it bounds a run."""

from __future__ import annotations

from typing import Any

from sncli.config import parse_settings
from sncli.doctor import limits_check
from sncli.servicenow.client import ServiceNowClient
from sncli.sink.calls import calls_report, describe_limits, pool_threads


def settings(rate_limit: Any = "absent", **sink: Any) -> Any:
    servicenow: dict[str, Any] = {"instance_url": "https://example.service-now.com",
                                  "auth": {"type": "basic", "username": "u", "password": "p"}}
    if rate_limit != "absent":
        servicenow["rate_limit"] = rate_limit
    return parse_settings({"servicenow": servicenow,
                           "sink": {"topics": [{"topic": "t", "table": "incident"}], **sink}}, {})


def test_there_is_no_default_client_rate_limit() -> None:
    assert settings().servicenow.rate_limit is None
    check = limits_check(settings())
    assert check.status == "ok" and "no client rate limit" in check.detail


def test_doctor_says_what_a_configured_rate_limit_allows() -> None:
    s = settings({"requests_per_second": 20, "burst": 40}, write_mode="batch", batch_size=50)
    check = limits_check(s)
    assert check.status == "warn"
    assert "20 calls/s" in check.detail and "1000 writes/s" in check.detail  # 20 calls x 50 writes
    assert "about 20 writes/s" in " ".join(describe_limits(settings({"requests_per_second": 20}), 16))


def test_a_rate_limit_that_bounds_the_run_is_reported() -> None:
    now = [0.0]
    client = ServiceNowClient(settings({"requests_per_second": 10, "burst": 1}).servicenow,
                              clock=lambda: now[0], sleep=lambda s: None)
    bucket = client.rate_bucket
    assert bucket is not None
    for _ in range(20):
        bucket.reserve()
    report = calls_report(client, 2.0)  # 20 calls in 2 s at a 10/s limit: it was the bound
    assert report is not None and report["rate_limit"]["bound_the_run"] is True
    assert report["rate_limit"]["waits"] > 0
    idle = calls_report(client, 100.0)  # the same calls over 100 s: the limit did not bound it
    assert idle is not None and idle["rate_limit"]["bound_the_run"] is False


def test_batch_mode_runs_enough_writes_to_fill_the_batches() -> None:
    assert pool_threads(settings(), 8) == 8
    assert pool_threads(settings(write_mode="batch", batch_size=100), 8) == 800
    assert pool_threads(settings(write_mode="batch", batch_size=100), 64) == 1024  # bounded
