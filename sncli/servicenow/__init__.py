"""ServiceNow Table API access.

- ``client``: :class:`~sncli.servicenow.client.ServiceNowClient`, the request loop: rate limit, auth,
  one attempt, judged by policy, retried with backoff, observed in metrics
- ``transport``: the one transport (keep-alive urllib3 connections; one :class:`Answer` per attempt)
- ``proxied``: the same attempt through ``servicenow.proxy`` (requests)
- ``failures``: a failed attempt classified once (how far it got)
- ``readahead``: a page's first attempt sent now and read later
- ``table``: the Table API's paths, parameters and answer parsers (pure)
- ``auth``: Basic and OAuth 2.0 authenticators
- ``errors``: the typed exceptions every caller handles
- ``query``: the encoded-query builder
- ``policy``, ``backoff``, ``ratelimit``: pure retry decisions, timing and throttling

Nothing is imported here, so ``from sncli.servicenow.query import Query`` stays
cheap (it does not pull in the HTTP stack).
"""
