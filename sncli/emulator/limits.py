"""The headers of ServiceNow's inbound REST rate limiting (pure).

When a request matches a rate limit rule (``sys_rate_limit_rules``), the
service's answer says which rule and its hourly budget: ``X-RateLimit-Limit``
(requests per hour), ``X-RateLimit-Reset`` (UNIX time when the hour's count
starts again) and ``X-RateLimit-Rule`` (the rule's sys_id); a request over the
budget is answered 429 with ``Retry-After`` in seconds. The emulator's 429
fault plays such a rule, so a client sees the same headers it would see there.
"""

from __future__ import annotations

from datetime import datetime, timedelta

#: The sys_id of the emulator's one rule and its hourly budget.
RULE_SYS_ID = "4b1f0d6a1b2c4e5f8a9b0c1d2e3f4a5b"
HOURLY_LIMIT = 3600


def rate_limit_headers(now: datetime) -> list[tuple[str, str]]:
    """The rule's headers as of ``now`` (aware UTC): its window is the current clock hour."""
    reset = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return [
        ("X-RateLimit-Limit", str(HOURLY_LIMIT)),
        ("X-RateLimit-Reset", str(int(reset.timestamp()))),
        ("X-RateLimit-Rule", RULE_SYS_ID),
    ]
