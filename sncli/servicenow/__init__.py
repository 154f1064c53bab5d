"""ServiceNow Table API access.

- ``client``: :class:`~sncli.servicenow.client.ServiceNowClient` (HTTP, retries, rate limit, metrics)
- ``auth``: Basic and OAuth 2.0 authenticators
- ``errors``: the typed exceptions every caller handles
- ``query``: the encoded-query builder
- ``policy``, ``backoff``, ``ratelimit``: pure retry decisions, timing and throttling

Nothing is imported here, so ``from sncli.servicenow.query import Query`` stays
cheap (it does not pull in ``requests``).
"""
