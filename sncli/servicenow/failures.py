"""Transport failures, classified once: how far an attempt got before it failed.

An attempt fails with urllib3's, http.client's or the socket's own exceptions
(the direct transport, :mod:`sncli.servicenow.transport`), or with requests'
wrappers of them (the proxied transport, :mod:`sncli.servicenow.proxied`).
:func:`classify_exception` maps either to one :class:`~sncli.servicenow.policy.AttemptFailure`,
which :func:`~sncli.servicenow.policy.decide_failure` judges; the request loop
calls it in one place.
"""

from __future__ import annotations

import ssl
import sys
from http.client import HTTPException, IncompleteRead
from types import ModuleType

from urllib3.exceptions import ConnectTimeoutError, DecodeError, HTTPError, MaxRetryError, ProtocolError
from urllib3.exceptions import ProxyError as Urllib3ProxyError
from urllib3.exceptions import SSLError as Urllib3SSLError

from sncli.servicenow.policy import AttemptFailure

FAILURE_TEXT = {
    AttemptFailure.CONNECT: "could not connect",
    AttemptFailure.SENT: "no answer",
    AttemptFailure.TRUNCATED: "answer cut short",
    AttemptFailure.MALFORMED: "malformed answer",
    AttemptFailure.TLS: "TLS failure",
    AttemptFailure.OTHER: "request failed",
}


def is_transport_failure(exc: BaseException) -> bool:
    """Whether the request loop judges ``exc`` (else it is a bug and propagates).

    OSError covers requests' exceptions (they derive from it) and local problems
    such as a ca_bundle path that does not exist.
    """
    return isinstance(exc, (OSError, HTTPError, HTTPException))


def classify_exception(exc: BaseException) -> AttemptFailure:
    """Where in the exchange an attempt failed, which decides if a POST may be retried."""
    requests = sys.modules.get("requests")  # its exceptions exist only once the proxied transport imported it
    if requests is not None and isinstance(exc, requests.RequestException):
        return _classify_wrapped(exc, requests.exceptions)
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
        return AttemptFailure.OTHER  # a local problem, e.g. a ca_bundle or client certificate that cannot be read
    if isinstance(exc, (ssl.SSLError, ssl.CertificateError, Urllib3SSLError)):
        return AttemptFailure.TLS
    if isinstance(exc, ConnectTimeoutError):  # NewConnectionError and NameResolutionError too
        return AttemptFailure.CONNECT
    if isinstance(exc, (IncompleteRead, ProtocolError, DecodeError)):
        return AttemptFailure.TRUNCATED
    if isinstance(exc, (OSError, HTTPException, HTTPError)):  # timeouts, resets, closed before an answer
        return AttemptFailure.SENT
    return AttemptFailure.OTHER


def _classify_wrapped(exc: BaseException, rex: ModuleType) -> AttemptFailure:
    """A requests exception: requests already says how far the exchange got, by its class."""
    if isinstance(exc, rex.SSLError):
        return AttemptFailure.TLS
    if isinstance(exc, rex.ConnectTimeout):
        return AttemptFailure.CONNECT
    if isinstance(exc, (rex.ChunkedEncodingError, rex.ContentDecodingError)):
        return AttemptFailure.TRUNCATED
    if isinstance(exc, rex.ReadTimeout):
        return AttemptFailure.SENT
    if isinstance(exc, rex.ConnectionError):
        inner = exc.args[0] if exc.args else None
        if isinstance(inner, MaxRetryError):
            reason = inner.reason
            if isinstance(reason, Urllib3ProxyError):
                reason = reason.original_error
            # NewConnectionError (refused, DNS) is a ConnectTimeoutError subclass in urllib3.
            if isinstance(reason, ConnectTimeoutError):
                return AttemptFailure.CONNECT
        return AttemptFailure.SENT
    return AttemptFailure.OTHER


def describe_exception(exc: BaseException) -> str:
    """A short, credential-free account of a transport exception (class of the innermost cause)."""
    inner: BaseException = exc
    seen = 0
    while seen < 5:
        seen += 1
        nxt: BaseException | None = None
        if isinstance(inner, MaxRetryError) and inner.reason is not None:
            nxt = inner.reason
        elif inner.args and isinstance(inner.args[0], BaseException):
            nxt = inner.args[0]
        elif len(inner.args) > 1 and isinstance(inner.args[1], BaseException):
            nxt = inner.args[1]
        if nxt is None:
            break
        inner = nxt
    text = str(inner)
    if len(text) > 160:
        text = text[:159] + "…"
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__
