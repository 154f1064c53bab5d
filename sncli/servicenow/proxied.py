"""The proxied transport: an attempt through ``servicenow.proxy`` (or to a token URL on another host).

Every other attempt goes out on urllib3 connections of our own
(:mod:`sncli.servicenow.transport`). Through a proxy the exchange differs
(absolute-form targets, CONNECT tunnels, proxy credentials), and requests
already does it right, so this path keeps requests. It answers with the same
:class:`~sncli.servicenow.transport.Answer` as the direct transport; its
failures are requests' exceptions, which
:func:`sncli.servicenow.failures.classify_exception` classifies.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from sncli.config import ServiceNowSettings
from sncli.servicenow.transport import Answer

if TYPE_CHECKING:
    import requests


class ProxiedTransport:
    """A ``requests.Session`` made on first use (thread-safe), sized to the worker count."""

    def __init__(self, settings: ServiceNowSettings, *, pool_size: int, user_agent: str) -> None:
        tls = settings.tls
        self._verify: bool | str = str(tls.ca_bundle) if tls.verify and tls.ca_bundle else tls.verify
        self._cert: str | tuple[str, str] | None = None
        if tls.client_cert is not None:
            self._cert = (str(tls.client_cert), str(tls.client_key)) if tls.client_key else str(tls.client_cert)
        self._proxies = {"http": settings.proxy, "https": settings.proxy} if settings.proxy else {}
        self._timeout = (settings.timeout_seconds, settings.timeout_seconds)
        self._pool_size = max(1, pool_size)
        self._user_agent = user_agent
        self._lock = threading.Lock()
        self._session: requests.Session | None = None

    def send(
        self, method: str, url: str, params: Mapping[str, str] | None, body: bytes | None, headers: Mapping[str, str]
    ) -> Answer:
        """One attempt; its whole body read at once. Raises requests' exceptions."""
        resp = self._get_session().request(
            method, url, params=params, data=body, headers=headers, timeout=self._timeout,
            verify=self._verify, cert=self._cert, proxies=self._proxies, allow_redirects=False, stream=True,
        )
        # One read of the whole body: Response.content reads in 10 KiB chunks with several Python calls
        # each, more CPU than decoding the JSON. A complete answer's connection goes back to the pool.
        content = b"".join(resp.iter_content(None))
        return Answer(resp.status_code, resp.reason or "", resp.headers, content)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()

    def _get_session(self) -> requests.Session:
        with self._lock:
            if self._session is None:
                self._session = _make_session(self._pool_size, self._user_agent)
            return self._session


def _make_session(pool_size: int, user_agent: str) -> requests.Session:
    # Imported here, not at the top: importing requests is a measured start-up cost
    # (`python -X importtime`), and only a run with a proxy needs it.
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
    session.headers.update({"User-Agent": user_agent})
    return session
