"""Basic and OAuth 2.0 authentication as ServiceNow's ``/oauth_token.do`` does it.

Access tokens expire on the monotonic clock (as a client's cache measures
them), not on the emulator's settable clock, so freezing or advancing record
time never silently expires or revives a token. ``expire_all`` lets a test
force the 401 path without waiting.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Credentials:
    username: str = "admin"
    password: str = "admin"
    client_id: str = "sncli"
    client_secret: str = "sncli-secret"


def parse_basic(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def parse_bearer(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


@dataclass
class _Grant:
    user: str
    client_id: str
    expires: float


class TokenStore:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._now = monotonic
        self._lock = threading.Lock()
        self._access: dict[str, _Grant] = {}
        self._refresh: dict[str, _Grant] = {}
        self.issued = 0

    def reset(self) -> None:
        with self._lock:
            self._access.clear()
            self._refresh.clear()
            self.issued = 0

    def issue(self, user: str, client_id: str, ttl: int, refresh_ttl: int) -> dict[str, Any]:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        now = self._now()
        with self._lock:
            self._access[access] = _Grant(user, client_id, now + ttl)
            self._refresh[refresh] = _Grant(user, client_id, now + refresh_ttl)
            self.issued += 1
        return {
            "access_token": access,
            "refresh_token": refresh,
            "scope": "useraccount",
            "token_type": "Bearer",
            "expires_in": ttl,
        }

    def user_for(self, access_token: str) -> str | None:
        with self._lock:
            grant = self._access.get(access_token)
            if grant is None or grant.expires <= self._now():
                return None
            return grant.user

    def redeem_refresh(self, refresh_token: str, client_id: str) -> str | None:
        with self._lock:
            grant = self._refresh.get(refresh_token)
            if grant is None or grant.expires <= self._now() or grant.client_id != client_id:
                return None
            return grant.user

    def expire_all(self) -> None:
        with self._lock:
            for grant in self._access.values():
                grant.expires = float("-inf")


def oauth_error(status: int, error: str, description: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": error, "error_description": description}


def token_grant(
    form: Mapping[str, str], creds: Credentials, store: TokenStore, *, ttl: int, refresh_ttl: int
) -> tuple[int, dict[str, Any]]:
    """Answer one ``/oauth_token.do`` form: (status, JSON body)."""
    grant_type = form.get("grant_type", "")
    if grant_type not in ("password", "client_credentials", "refresh_token"):
        return oauth_error(400, "unsupported_grant_type", f"grant_type {grant_type!r} is not supported")
    if form.get("client_id") != creds.client_id or form.get("client_secret") != creds.client_secret:
        return oauth_error(401, "access_denied", "invalid client credentials")
    if grant_type == "password":
        if form.get("username") != creds.username or form.get("password") != creds.password:
            return oauth_error(401, "access_denied", "invalid user credentials")
        user = creds.username
    elif grant_type == "client_credentials":
        user = creds.username  # the OAuth application's run-as user
    else:
        redeemed = store.redeem_refresh(form.get("refresh_token", ""), creds.client_id)
        if redeemed is None:
            return oauth_error(401, "access_denied", "invalid or expired refresh token")
        user = redeemed
    return 200, store.issue(user, creds.client_id, ttl, refresh_ttl)
