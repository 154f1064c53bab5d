"""Page requests sent now and read later: how one thread overlaps ServiceNow's answer time with its own work.

The source's page loop (:mod:`sncli.source.poller`) sends the request for page
N+1, produces page N to Kafka, and reads N+1's answer when it gets to it;
ServiceNow works on N+1 meanwhile and the answer waits in the socket. Why not
a helper thread that fetches: confluent-kafka takes the GIL once per record
while it serves delivery reports, and a second thread running Python at that
moment (requests' own code, JSON decoding) turns every record into a GIL
hand-over, which slows the acknowledgements by orders of magnitude. With the
request sent ahead there is no second thread at all.

Only the first attempt of a page is sent ahead, on the client's one transport
(:mod:`sncli.servicenow.transport`). Its answer, or its failure, goes into the
client's ordinary request loop as attempt 1, so retries, the 401 refresh,
Retry-After, the malformed-body check and the latency metric work as for any
call.

``answered`` waits for the attempt to be over; ``ready`` says whether
``result`` would return without waiting for ServiceNow (the answer is a 2xx:
no backoff, Retry-After or token refresh behind it). With ``servicenow.proxy``
set, nothing is sent ahead: the page is fetched through
:mod:`sncli.servicenow.proxied` when it is read (against a real instance the
answer time dominates anyway, and overlapping it saves only the loop's own few
milliseconds per page).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from sncli.servicenow.transport import SentRequest

R = TypeVar("R")


class PendingPage(Generic[R]):
    """A page being fetched: :meth:`answered` / :meth:`ready` to wait for it without reading it, :meth:`result`
    to get it.

    ``sent`` None: nothing was sent ahead; ``result`` fetches the page when called
    (``waits``: through the proxied transport), or raises what made sending it
    impossible (``waits`` False: an authentication failure).
    """

    def __init__(self, sent: SentRequest | None, read: Callable[[SentRequest | None], R], *,
                 waits: bool = True) -> None:
        self._sent = sent
        self._read = read
        self._waits = sent is None and waits

    def answered(self, timeout: float) -> bool:
        """True once the first attempt is over (answered, failed or out of time), waiting up to ``timeout``.

        :meth:`result` then waits for ServiceNow only if the attempt needs a retry.
        """
        return self._sent is None or self._sent.ready(timeout)

    def ready(self, timeout: float) -> bool:
        """True once :meth:`result` would not wait for ServiceNow: the first attempt answered 2xx.

        False while it is not answered within ``timeout``, and when it failed: its
        retries (backoff, Retry-After, a token refresh) wait inside ``result``.
        """
        if self._sent is None:
            return not self._waits
        return self._sent.succeeded(timeout)

    def result(self) -> R:
        """The page, with the request loop's retries behind it; raises what a direct fetch would raise."""
        return self._read(self._sent)

    def cancel(self) -> None:
        if self._sent is not None:
            self._sent.cancel()
