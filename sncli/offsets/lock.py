"""One run per scope at a time: a second run fails at once with exit 75 (safe to retry).

Cron and CronJobs start runs on a schedule whether or not the previous one is
done; two runs over the same table would race on its cursor. The lock lives
where the offsets live:

- file store: ``flock(LOCK_EX|LOCK_NB)`` on ``<offsets path>.run.<scope>.lock``,
  a 0600 file of this user that no other user can open (see sncli.private_files).
  The kernel drops it when the process dies, so a crash never leaves it stuck.
  The file holds the holder's pid/host/start for the message; it is never deleted
  (deleting a lock file lets two processes lock two different inodes).
- S3 store: a lease object ``<key>.locks/<scope>`` created with ``If-None-Match: *``
  holding the owner and an expiry, renewed by a daemon thread every third of the
  lease with ``If-Match``, deleted on exit, and taken over by another run only after
  it expired (``If-Match`` on the expired lease's ETag, so of two takers one wins).
  Expiry is judged by the taker's clock: hosts must agree to well within the lease.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from sncli.errors import LockHeldError, OffsetsError
from sncli.offsets.model import iso_utc
from sncli.offsets.s3_store import (
    PreconditionFailedError,
    error_code,
    get_object,
    is_missing,
    is_precondition_failure,
    make_client,
    put_object,
)
from sncli.private_files import open_lock_file

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from sncli.config import Settings

log = logging.getLogger("sncli.offsets")

Clock = Callable[[], datetime]
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_S3_SCOPE = re.compile(r"[A-Za-z0-9._/:+-]+")


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as recorded by the holder itself."""

    owner: str
    host: str
    pid: int
    acquired_at: str
    expires_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "owner": self.owner, "host": self.host, "pid": self.pid, "acquired_at": self.acquired_at,
        }
        if self.expires_at is not None:
            data["expires_at"] = self.expires_at
        return data

    @classmethod
    def from_json(cls, raw: bytes | str) -> Holder | None:
        try:
            data = json.loads(raw)
            return cls(
                owner=str(data["owner"]),
                host=str(data["host"]),
                pid=int(data["pid"]),
                acquired_at=str(data["acquired_at"]),
                expires_at=None if data.get("expires_at") is None else str(data["expires_at"]),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        text = f"pid {self.pid} on {self.host}, started {self.acquired_at}"
        if self.expires_at:
            text += f", lease until {self.expires_at}"
        return text

    def expired(self, now: datetime) -> bool:
        if self.expires_at is None:
            return False
        try:
            until = datetime.fromisoformat(self.expires_at.replace("Z", "+00:00"))
        except ValueError:
            return True  # an unreadable expiry cannot keep a lock forever
        return now >= until


def _held(scope: str, holder: Holder | None, where: str) -> LockHeldError:
    who = holder.describe() if holder else "holder unknown"
    return LockHeldError(f"another run holds the lock for {scope} ({who}; {where}); exit 75, retry later")


class RunLock:
    """The held lock. ``ensure_held()`` raises LockHeldError if an S3 lease was lost meanwhile."""

    def __init__(self, scope: str, holder: Holder, where: str) -> None:
        self.scope = scope
        self.holder = holder
        self.where = where
        self._lost = threading.Event()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def ensure_held(self) -> None:
        if self._lost.is_set():
            raise LockHeldError(
                f"this run lost its lease on {self.scope} ({self.where}); another run may have taken over. "
                f"Stopping without writing further progress"
            )


def _new_holder(now: datetime, lease_seconds: int | None = None) -> Holder:
    return Holder(
        owner=uuid.uuid4().hex,
        host=socket.gethostname(),
        pid=os.getpid(),
        acquired_at=iso_utc(now),
        expires_at=None if lease_seconds is None else iso_utc(now + timedelta(seconds=lease_seconds)),
    )


@contextmanager
def run_lock(
    settings: Settings,
    scope: str,
    *,
    lease_seconds: int | None = None,
    clock: Clock = _utcnow,
    client: S3Client | None = None,
) -> Iterator[RunLock]:
    """Hold the run lock for ``scope`` (a table name for poll runs) or raise LockHeldError at once."""
    offsets = settings.offsets
    if offsets.store == "s3":
        s3 = client or make_client(offsets.endpoint_url, offsets.region)
        with s3_lease(s3, offsets.bucket, lease_key(offsets.key, scope), scope,
                      lease_seconds=lease_seconds or offsets.lease_seconds, clock=clock) as lock:
            yield lock
    else:
        with local_lock(lock_path(offsets.path, scope), scope, clock=clock) as lock:
            yield lock


# --------------------------------------------------------------------------- local flock


def lock_path(offsets_path: Path, scope: str) -> Path:
    """``<offsets path>.run.<scope>.lock``; a scope with other characters gets a hash suffix."""
    if not scope:
        raise ValueError("lock scope must not be empty")
    safe = _SAFE.sub("_", scope)
    if safe != scope:
        safe += "-" + hashlib.sha256(scope.encode()).hexdigest()[:8]
    return offsets_path.with_name(f"{offsets_path.name}.run.{safe}.lock")


@contextmanager
def local_lock(path: Path, scope: str, *, clock: Clock = _utcnow) -> Iterator[RunLock]:
    try:
        # 0600 and ours (sncli.private_files): anyone who can open it can flock it and stop every run.
        fd = open_lock_file(path)
    except OSError as exc:
        raise OffsetsError(f"cannot open run lock file {path}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _held(scope, Holder.from_json(_read_fd(fd)), f"lock file {path}") from None
        holder = _new_holder(clock())
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder.to_json()).encode() + b"\n", 0)
        except OSError as exc:
            # The flock is the lock; the holder line only lets a second run say who holds it.
            # A full disk must not turn into a traceback here (the offsets write reports it).
            log.warning("could not record the holder in run lock file %s: %s", path, exc.strerror or exc)
        try:
            yield RunLock(scope, holder, f"lock file {path}")
        finally:
            with suppress(OSError):
                os.ftruncate(fd, 0)  # the next holder's readers must not see us
    finally:
        os.close(fd)  # releases the flock


def _read_fd(fd: int) -> bytes:
    with suppress(OSError):
        return os.pread(fd, 4096, 0)
    return b""


# --------------------------------------------------------------------------- S3 lease


def lease_key(offsets_key: str, scope: str) -> str:
    if not scope or not _S3_SCOPE.fullmatch(scope):
        raise ValueError(f"lock scope must match [A-Za-z0-9._/:+-]+, got {scope!r}")
    return f"{offsets_key}.locks/{scope}"


class _Lease:
    def __init__(self, client: S3Client, bucket: str, key: str, scope: str, lease_seconds: int, clock: Clock) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.scope = scope
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.where = f"lease s3://{bucket}/{key}"
        self.holder = _new_holder(clock(), lease_seconds)
        self.etag: str | None = None
        self._etag_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self, holder: Holder) -> bytes:
        data = holder.to_json()
        data["scope"] = self.scope
        return json.dumps(data).encode()

    def _put(self, holder: Holder, etag: str | None) -> str:
        return put_object(self.client, self.bucket, self.key, self._body(holder), etag, f"cannot write {self.where}")

    def acquire(self) -> None:
        last: Holder | None = None
        for _ in range(5):
            try:
                self.etag = self._put(self.holder, None)
                return
            except PreconditionFailedError:
                pass
            found = get_object(self.client, self.bucket, self.key, f"cannot read {self.where}")
            if found is None:
                continue  # released in between: try to create it again
            body, etag = found
            last = Holder.from_json(body)
            if last is not None and not last.expired(self.clock()):
                raise _held(self.scope, last, self.where)
            # Expired (or unreadable): take it over only if nobody else changed it since we read it.
            try:
                self.etag = self._put(self.holder, etag)
            except PreconditionFailedError:
                continue  # another run took it first; the next round reports it
            log.warning(
                "took over the expired run lock for %s from %s", self.scope, last.describe() if last else "unknown"
            )
            return
        raise _held(self.scope, last, self.where)

    def start_renewal(self, lock: RunLock) -> None:
        self._thread = threading.Thread(
            target=self._renew_loop, args=(lock,), name=f"sncli-lease-{self.scope}", daemon=True
        )
        self._thread.start()

    def renew(self) -> None:
        """Push the expiry forward; PreconditionFailedError means someone else holds it now."""
        now = self.clock()
        renewed = Holder(
            owner=self.holder.owner, host=self.holder.host, pid=self.holder.pid,
            acquired_at=self.holder.acquired_at, expires_at=iso_utc(now + timedelta(seconds=self.lease_seconds)),
        )
        with self._etag_lock:
            self.etag = self._put(renewed, self.etag)
            self.holder = renewed

    def _renew_loop(self, lock: RunLock) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                self.renew()
            except PreconditionFailedError:
                log.error("lost the run lock for %s: %s was changed by another run", self.scope, self.where)
                lock._lost.set()
                return
            except Exception as exc:  # transient: keep trying until the lease runs out
                log.warning("could not renew the run lock for %s: %s", self.scope, exc)
                if self.holder.expired(self.clock()):
                    log.error("the run lock for %s expired before it could be renewed", self.scope)
                    lock._lost.set()
                    return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._etag_lock:
            etag = self.etag
        if etag is None:
            return
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=etag)
        except (ClientError, BotoCoreError) as exc:
            if is_precondition_failure(exc) or is_missing(exc):
                log.warning("not releasing %s: another run holds it now", self.where)
            else:
                self._release_unconditionally(etag, error_code(exc))

    def _release_unconditionally(self, etag: str, why: str) -> None:
        """For stores without conditional DELETE: delete only if the lease is still ours (a small race)."""
        try:
            found = get_object(self.client, self.bucket, self.key, f"cannot read {self.where}")
            if found is not None and found[1] == etag:
                self.client.delete_object(Bucket=self.bucket, Key=self.key)
        except Exception as exc:
            log.warning("could not release %s (%s, then %s); it expires by itself", self.where, why, exc)


@contextmanager
def s3_lease(
    client: S3Client, bucket: str, key: str, scope: str, *, lease_seconds: int, clock: Clock = _utcnow
) -> Iterator[RunLock]:
    lease = _Lease(client, bucket, key, scope, lease_seconds, clock)
    lease.acquire()
    lock = RunLock(scope, lease.holder, lease.where)
    lease.start_renewal(lock)
    try:
        yield lock
    finally:
        lease.release()
