"""Batch API transport: the Table API write attempts of many threads, carried in shared exchanges.

The client's request loop (:mod:`sncli.servicenow.client`) does not change in
batch mode: each write still runs its own call with its own retries and its own
judgement of the answer. Only *where an attempt goes* changes: instead of its
own HTTP exchange, :meth:`Batcher.exchange` puts it in the queue, and a sender
thread carries up to ``size`` queued attempts (waiting at most ``max_wait``
seconds for a batch to fill) in one ``POST /api/now/v1/batch``. Each attempt
gets back exactly what a single call would have produced:

- a serviced item: its own status, headers and body (404, 403, 5xx ... are
  judged by the client per item, so a 5xx retries that item alone);
- an unserviced item (the batch's time budget ran out before it): it goes back
  to the head of the queue at once; ``MAX_UNSERVICED`` times in a row, then it
  fails as "not sent" (:class:`Unserviced`, retried even for a POST under the
  retry budget): never dropped, never taken for written;
- a batch answered with an error status (429, 401, 503, ...): every item gets
  that answer, as if its own call had been refused;
- no usable answer (timeout, reset, a body that is not a batch answer, an item
  missing from it): every item fails the way its own call would have failed
  after sending. For a PATCH that is a retry; for a POST it is ambiguous, and
  the sink's ``ambiguous`` policy decides per item.

One write per key per batch comes from the caller (the sink's keyed pool runs
one write of a key at a time). The gate (:mod:`sncli.servicenow.gate`) bounds
the exchanges in flight: a sender takes a ticket before it collects a batch.
"""

from __future__ import annotations

import base64
import copy
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from urllib3 import HTTPHeaderDict
from urllib3.exceptions import ConnectTimeoutError, ProtocolError

from sncli.servicenow.errors import CallAbandoned
from sncli.servicenow.gate import Gate
from sncli.servicenow.transport import Answer

log = logging.getLogger(__name__)

BATCH_PATH = "/api/now/v1/batch"
#: Batches in a row an item may come back unserviced before it fails as not sent (retry budget then).
MAX_UNSERVICED = 20


class Unserviced(ConnectTimeoutError):
    """The instance did not run the item (batch time budget): nothing happened, any method may retry."""


class BatchAnswerBroken(ProtocolError):
    """The batch was sent but its answer says nothing usable about this item: it may have run."""


@dataclass(eq=False)
class _Item:
    id: str
    method: str
    url: str  # relative to the instance: /api/now/table/...?...
    headers: dict[str, str]
    body: bytes | None
    cancel: threading.Event | None
    done: threading.Event = field(default_factory=threading.Event)
    answer: Answer | None = None
    error: BaseException | None = None
    unserviced: int = 0
    taken: bool = False


#: Sends one batch body (one attempt, no retry) and returns its answer or raises the transport's exception.
Send = Callable[[bytes], Answer]


class Batcher:
    """``senders`` threads carrying queued attempts in Batch API exchanges; ``close()`` when done."""

    def __init__(self, send: Send, gate: Gate, *, size: int, max_wait: float, senders: int) -> None:
        self._send = send
        self._gate = gate
        self.size = max(1, size)
        self.max_wait = max(0.0, max_wait)
        self._cond = threading.Condition()
        self._collect = threading.Lock()  # one sender fills a batch at a time
        self._queue: deque[_Item] = deque()
        self._closed = False
        self.batches = 0
        self.items = 0
        self.unserviced = 0
        self._threads = [threading.Thread(target=self._run, name=f"sn-batch-{i}", daemon=True)
                         for i in range(max(1, senders))]
        for thread in self._threads:
            thread.start()

    def exchange(self, method: str, url: str, body: bytes | None, headers: dict[str, str],
                 cancel: threading.Event | None) -> Answer:
        """One attempt of one call, carried in a batch: its answer, or the exception its own call would raise."""
        item = _Item(uuid.uuid4().hex, method, url, headers, body, cancel)
        with self._cond:
            if self._closed:
                raise CallAbandoned(f"{method} {url}: the batch transport is closed")
            self._queue.append(item)
            self._cond.notify()
        while not item.done.wait(0.5):
            if cancel is not None and cancel.is_set():
                with self._cond:
                    if not item.taken and item in self._queue:
                        self._queue.remove(item)  # not in a batch yet: give it up like an unsent call
                        raise CallAbandoned(f"{method} {url}: given up while queued for a batch")
        if item.error is not None:
            raise item.error
        assert item.answer is not None
        return item.answer

    def close(self) -> None:
        """Stop the senders; attempts still queued fail as given up (their writes stay unfinished)."""
        with self._cond:
            self._closed = True
            left = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for item in left:
            _finish(item, error=CallAbandoned("the batch transport closed before sending it"))
        for thread in self._threads:
            thread.join(5.0)

    # ---------------------------------------------------------------- sender threads

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait(0.5)
                if self._closed:
                    return
            try:
                ticket = self._gate.acquire()
            except CallAbandoned:  # not given a cancel event: cannot happen, but never die silently
                continue
            batch = self._take()
            if not batch:
                self._gate.release(ticket, status=None, sent=False)
                continue
            status: int | None = None
            answer: Answer | None = None
            try:
                answer = self._send(self._body(batch))
                status = answer.status_code
            except Exception as exc:
                self._fail_all(batch, exc)
            finally:
                self._gate.release(ticket, status=status, headers=answer.headers if answer else None,
                                   size=len(batch))
            if answer is not None:
                try:
                    self._distribute(batch, answer)
                except Exception as exc:  # a bug here must not leave writers waiting forever
                    log.exception("distributing a batch answer failed")
                    self._fail_all([item for item in batch if not item.done.is_set()], exc)

    def _take(self) -> list[_Item]:
        """Up to ``size`` queued items, waiting at most ``max_wait`` after the first for more."""
        with self._collect:
            deadline: float | None = None
            batch: list[_Item] = []
            with self._cond:
                while len(batch) < self.size and not self._closed:
                    while self._queue and len(batch) < self.size:
                        item = self._queue.popleft()
                        if item.cancel is not None and item.cancel.is_set():
                            _finish(item, error=CallAbandoned("given up while queued for a batch"))
                            continue
                        item.taken = True
                        batch.append(item)
                    if len(batch) >= self.size:
                        break
                    now = time.monotonic()
                    if deadline is None:
                        if not batch:
                            return batch
                        deadline = now + self.max_wait
                    if now >= deadline:
                        break
                    self._cond.wait(deadline - now)
            return batch

    def _body(self, batch: list[_Item]) -> bytes:
        requests = []
        for item in batch:
            entry: dict[str, object] = {
                "id": item.id,
                "method": item.method,
                "url": item.url,
                "headers": [{"name": k, "value": v} for k, v in item.headers.items() if k.lower() != "authorization"],
            }
            if item.body is not None:
                entry["body"] = base64.b64encode(item.body).decode("ascii")
            requests.append(entry)
        return orjson.dumps({"batch_request_id": uuid.uuid4().hex, "rest_requests": requests})

    def _distribute(self, batch: list[_Item], answer: Answer) -> None:
        self.batches += 1
        if answer.status_code != 200:
            for item in batch:
                _finish(item, answer=answer)
            return
        try:
            served, unserved = _parse(answer.content)
        except (ValueError, TypeError, KeyError) as exc:
            self._fail_all(batch, BatchAnswerBroken(f"the batch answer is not usable: {exc}"))
            return
        again: list[_Item] = []
        for item in batch:
            if item.id in served:
                self.items += 1
                _finish(item, answer=served[item.id])
            elif item.id in unserved:
                self.unserviced += 1
                item.unserviced += 1
                if item.unserviced >= MAX_UNSERVICED:
                    _finish(item, error=Unserviced(f"not serviced in {item.unserviced} batches in a row"))
                else:
                    item.taken = False
                    again.append(item)
            else:
                _finish(item, error=BatchAnswerBroken("the batch answer does not mention this request"))
        if again:
            with self._cond:
                self._queue.extendleft(reversed(again))  # first in line, in their order
                self._cond.notify_all()

    def _fail_all(self, batch: list[_Item], exc: BaseException) -> None:
        for item in batch:
            try:
                own = copy.copy(exc)  # one exception object per thread that raises it
            except Exception:
                own = exc
            _finish(item, error=own)


def _finish(item: _Item, *, answer: Answer | None = None, error: BaseException | None = None) -> None:
    item.answer, item.error = answer, error
    item.done.set()


def _parse(content: bytes) -> tuple[dict[str, Answer], set[str]]:
    """A batch answer: serviced items as the answers their own calls would have had, and unserviced ids."""
    data = orjson.loads(content)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    served: dict[str, Answer] = {}
    for entry in data.get("serviced_requests") or []:
        headers = HTTPHeaderDict()
        for header in entry.get("headers") or []:
            headers.add(str(header["name"]), str(header["value"]))
        raw = entry.get("body")
        body = base64.b64decode(raw) if raw else b""
        served[str(entry["id"])] = Answer(int(entry["status_code"]), str(entry.get("status_text") or ""), headers,
                                          body)
    unserved = {str(entry["id"]) for entry in data.get("unserviced_requests") or []}
    return served, unserved
