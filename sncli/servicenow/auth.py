"""Credentials for ServiceNow: Basic, or OAuth 2.0 tokens from ``oauth_token.do``.

The OAuth token is refreshed *before* the request that would use it once 90%
of its lifetime has passed, so a run does not pay a 401 round trip per expiry.
A bounded run needs no background refresher: every request asks for the
header, and the first one past the threshold refreshes under a lock while the
others wait and then reuse the new token (double-checked), so N threads cause
one token request, not N.

A 401 despite a fresh-looking token (revoked, instance restarted) is handled by
the client: it calls :meth:`OAuthAuthenticator.refresh_after_401` with the
header it used, once per request; a second 401 is an :class:`AuthError`.

Secrets (password, client secret, tokens) are never put into exception
messages or log lines; server text quoted in errors is scrubbed of them too.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from sncli.config import BasicAuth, OAuthAuth
from sncli.servicenow.errors import AuthError, MalformedResponseError, parse_error_body

log = logging.getLogger(__name__)

REFRESH_FRACTION = 0.9
DEFAULT_TTL_SECONDS = 1800.0  # ServiceNow's default access-token lifespan
OAUTH_ENDPOINT = "oauth"

# (url, form fields) -> (HTTP status, body). The client supplies it, with its
# TLS settings, retries for 5xx/network errors, rate limit and metrics.
TokenTransport = Callable[[str, dict[str, str]], tuple[int, bytes]]


class Authenticator(Protocol):
    def authorization(self) -> str:
        """The ``Authorization`` header value for the next request."""
        ...

    def refresh_after_401(self, used: str) -> bool:
        """Called after a 401 answered ``used``; True when a new credential is ready to retry with."""
        ...


class BasicAuthenticator:
    """A fixed ``Basic`` header; a 401 cannot be cured by retrying, so no refresh."""

    def __init__(self, settings: BasicAuth) -> None:
        raw = f"{settings.username}:{settings.password.get_secret_value()}".encode()
        self._header = "Basic " + base64.b64encode(raw).decode("ascii")

    def authorization(self) -> str:
        return self._header

    def refresh_after_401(self, used: str) -> bool:
        return False

    def __repr__(self) -> str:
        return "BasicAuthenticator(***)"


@dataclass(frozen=True, slots=True)
class _Token:
    header: str
    refresh_at: float  # monotonic clock
    expires_at: float

    def __repr__(self) -> str:
        return f"_Token(***, refresh_at={self.refresh_at:.1f})"


class OAuthAuthenticator:
    """Holds one access token (and refresh token, when ServiceNow gives one) for all threads."""

    def __init__(
        self,
        settings: OAuthAuth,
        instance_url: str,
        transport: TokenTransport,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token_url = settings.token_url or f"{instance_url.rstrip('/')}/oauth_token.do"
        self._settings = settings
        self._transport = transport
        self._clock = clock
        self._lock = threading.Lock()
        self._token: _Token | None = None
        self._refresh_token: str | None = (
            settings.refresh_token.get_secret_value() if settings.refresh_token is not None else None
        )
        self.token_requests = 0  # how many grants were attempted (for tests and doctor)

    # ---------------------------------------------------------------- Authenticator

    def authorization(self) -> str:
        token = self._token
        if token is None or self._clock() >= token.refresh_at:
            with self._lock:
                token = self._token  # another thread may have refreshed while we waited
                if token is None or self._clock() >= token.refresh_at:
                    token = self._fetch()
                    self._token = token
        return token.header

    def refresh_after_401(self, used: str) -> bool:
        with self._lock:
            current = self._token
            if current is not None and current.header != used:
                return True  # someone already replaced the token that was refused
            log.info("ServiceNow answered 401; requesting a new OAuth token")
            self._token = self._fetch()
            return True

    def __repr__(self) -> str:
        return f"OAuthAuthenticator(token_url={self.token_url!r}, grant_type={self._settings.grant_type!r})"

    # ---------------------------------------------------------------- grants

    def _fetch(self) -> _Token:
        if self._refresh_token is not None:
            try:
                return self._grant(self._refresh_form(self._refresh_token), "refresh_token")
            except AuthError:
                if self._settings.grant_type == "refresh_token":
                    raise
                # Expired or revoked refresh token: the main grant still works.
                log.info("OAuth refresh_token grant refused; falling back to grant_type=%s",
                         self._settings.grant_type)
                self._refresh_token = None
        return self._grant(self._main_form(), self._settings.grant_type)

    def _main_form(self) -> dict[str, str]:
        s = self._settings
        form = {
            "grant_type": s.grant_type,
            "client_id": s.client_id,
            "client_secret": s.client_secret.get_secret_value(),
        }
        if s.grant_type == "password":
            assert s.username is not None and s.password is not None  # checked by config
            form["username"] = s.username
            form["password"] = s.password.get_secret_value()
        elif s.grant_type == "refresh_token":
            assert s.refresh_token is not None  # checked by config
            form["refresh_token"] = s.refresh_token.get_secret_value()
        return form

    def _refresh_form(self, refresh_token: str) -> dict[str, str]:
        return {
            "grant_type": "refresh_token",
            "client_id": self._settings.client_id,
            "client_secret": self._settings.client_secret.get_secret_value(),
            "refresh_token": refresh_token,
        }

    def _grant(self, form: dict[str, str], grant: str) -> _Token:
        self.token_requests += 1
        started = self._clock()  # the lifetime counts from before the request, to be safe
        status, content = self._transport(self.token_url, form)
        if status != 200:
            message, detail = parse_error_body(content)
            text = message or "the token endpoint refused the credentials"
            raise AuthError(
                status,
                self._scrub(f"OAuth {grant} grant failed: {text}"),
                self._scrub(detail) if detail else None,
                method="POST",
                endpoint=OAUTH_ENDPOINT,
            )
        data = _json_object(content)
        access = data.get("access_token") if data is not None else None
        if data is None or not isinstance(access, str) or not access:
            raise MalformedResponseError(
                status, f"OAuth {grant} grant: the answer has no access_token", method="POST",
                endpoint=OAUTH_ENDPOINT,
            )
        ttl = _ttl(data.get("expires_in"))
        new_refresh = data.get("refresh_token")
        if isinstance(new_refresh, str) and new_refresh:
            self._refresh_token = new_refresh
        token_type = data.get("token_type")
        scheme = "Bearer" if not isinstance(token_type, str) or token_type.lower() == "bearer" else token_type
        log.debug("obtained an OAuth token by grant %s, valid %.0f s", grant, ttl)
        return _Token(
            header=f"{scheme} {access}",
            refresh_at=started + REFRESH_FRACTION * ttl,
            expires_at=started + ttl,
        )

    def _scrub(self, text: str) -> str:
        for secret in self._secrets():
            if secret and len(secret) >= 3:
                text = text.replace(secret, "***")
        return text

    def _secrets(self) -> list[str]:
        s = self._settings
        values = [s.client_secret.get_secret_value()]
        if s.password is not None:
            values.append(s.password.get_secret_value())
        if s.refresh_token is not None:
            values.append(s.refresh_token.get_secret_value())
        if self._refresh_token:
            values.append(self._refresh_token)
        if self._token is not None:
            values.append(self._token.header.split(" ", 1)[-1])
        return values


def _json_object(content: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _ttl(value: object) -> float:
    try:
        ttl = float(value)  # type: ignore[arg-type]  # ServiceNow sends a number; some proxies a string
    except (TypeError, ValueError):
        return DEFAULT_TTL_SECONDS
    return ttl if ttl > 0 else DEFAULT_TTL_SECONDS
