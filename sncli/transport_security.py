"""Which URLs carry credentials and records unencrypted across a network.

Plain HTTP to a loopback address never leaves the machine (the emulator, a
local TLS-originating sidecar); to any other host it exposes whatever it
carries. sncli warns about such URLs (at run time and in ``doctor``) and refuses
OAuth token requests over them unless the config explicitly allows it.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses; any other name or address may be reachable from outside."""
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def plain_http_off_host(url: str) -> bool:
    """True when ``url`` is ``http://`` to a host other than this machine."""
    parts = urlsplit(url)
    return parts.scheme.lower() == "http" and not is_loopback(parts.hostname or "")
