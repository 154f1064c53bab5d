"""Offsets in one local JSON file that survives any crash.

Every save is a read-modify-write of its own key only, done under an ``flock`` on
``<path>.lock`` (so another process's keys written in between are kept) and a
thread lock (so a process's table threads take turns; saves that arrive while
another is written go out together in the next write, see ``FileStore.save``). The new document goes
to a temporary file in the same directory, is fsynced, renamed over the old
one, and the directory is fsynced: a reader sees the old or the new document,
never half of one. A file that does not parse is reported and never
overwritten; an operator decides what it should contain.
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sncli.errors import OffsetsError
from sncli.offsets.document import Entries, SeenValues, moved_error, parse_document, render_document, to_offsets
from sncli.offsets.model import StoredOffset
from sncli.private_files import is_own_file, open_lock_file, open_own_file

LOCK_WAIT_SECONDS = 30.0  # the write lock is held for milliseconds; waiting longer means a stuck process


def _read_fully(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _write_fully(fd: int, data: bytes) -> None:
    """os.write until all of ``data`` is written (a module function so tests can inject a failure)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # some filesystems cannot fsync a directory
            raise
    finally:
        os.close(fd)


@dataclass
class _PendingSave:
    key: str
    entry: dict[str, Any]
    done: bool = False
    error: OffsetsError | None = None


class FileStore:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._thread_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[_PendingSave] = []  # saves waiting for the next write (see save)
        self._cache: tuple[tuple[int, int, int], Entries] | None = None  # see _read
        self._seen = SeenValues()

    @property
    def location(self) -> str:
        return f"file {self.path}"

    # ------------------------------------------------------------------ reads

    def load(self, key: str) -> StoredOffset | None:
        with self._thread_lock:
            entry = self._read().get(key)
            self._seen.remember(key, entry)
        return None if entry is None else StoredOffset.from_json(key, entry)

    def load_all(self) -> dict[str, StoredOffset]:
        with self._thread_lock:
            entries = self._read()
            self._seen.remember_all(entries)
        return to_offsets(entries)

    # ------------------------------------------------------------------ writes

    def save(self, offset: StoredOffset) -> None:
        """Store one key; returns once it is durable, raises if it could not be stored.

        Group commit: threads that save while another thread is writing wait for
        that write to finish, and the first of them then writes all of their keys
        in one replacement of the file (one read, one fsync pair). A backfill's
        windows and a poll's tables each save after every page; written one by
        one they queued for the file and its two fsyncs. Each key is still
        checked against what this store last saw of it, and each caller gets its
        own outcome.
        """
        pending = _PendingSave(offset.key, offset.to_json())
        with self._queue_lock:
            self._queue.append(pending)
        with self._thread_lock:
            if not pending.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._save_batch(batch)
        if pending.error is not None:
            raise pending.error

    def _save_batch(self, batch: list[_PendingSave]) -> None:
        try:
            with self._write_lock():
                entries = self._read()
                changed: list[_PendingSave] = []
                for item in batch:
                    current = entries.get(item.key)
                    if current == item.entry:  # already stored (nothing to write)
                        self._seen.remember(item.key, item.entry)
                    elif not self._seen.unchanged(item.key, current):
                        item.error = moved_error(item.key, self.location)
                    else:
                        entries[item.key] = item.entry
                        changed.append(item)
                if changed:

                    def remember() -> None:
                        for item in changed:
                            self._seen.remember(item.key, item.entry)

                    self._write(entries, then=remember)
        except OffsetsError as exc:
            for item in batch:
                if item.error is None:
                    item.error = exc
        finally:
            for item in batch:
                item.done = True

    def delete(self, key: str) -> None:
        with self._thread_lock, self._write_lock():
            entries = self._read()
            current = entries.get(key)
            if not self._seen.unchanged(key, current):
                raise moved_error(key, self.location)
            if current is None:
                return
            del entries[key]
            self._write(entries, then=lambda: self._seen.remember(key, None))

    # ------------------------------------------------------------------ I/O

    def _read(self) -> Entries:
        """The document's entries (a copy the caller may change).

        Parsed again only when the file changed: every write replaces the file,
        so a new inode, size or mtime means new content, and the same ones mean
        the document this store last read or wrote (an edit in place that kept
        all three, within one mtime tick, would not be seen; sncli never edits
        in place). With a backfill's windows
        saving after every page, validating every entry of the file on every
        save was a tenth of the run's Python time.
        """
        try:
            fd = open_own_file(self.path)  # our own regular file only: see sncli.private_files
            if fd is None:
                return {}
            try:
                stat = os.fstat(fd)
                identity = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
                cached = self._cache
                if cached is not None and cached[0] == identity:
                    return dict(cached[1])
                data = _read_fully(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise OffsetsError(f"cannot read offsets file {self.path}: {exc.strerror or exc}") from None
        entries = parse_document(data, f"file {self.path}")
        if len(data) == stat.st_size:  # not changed while read (else: no cache)
            self._cache = (identity, dict(entries))
        return entries

    def _remember_written(self, entries: Entries) -> None:
        try:
            stat = self.path.stat()
        except OSError:
            self._cache = None
            return
        self._cache = ((stat.st_ino, stat.st_mtime_ns, stat.st_size), dict(entries))

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        """Exclusive ``flock`` on ``<path>.lock`` across processes for one read-modify-write."""
        try:
            fd = open_lock_file(self.lock_path)  # 0600, ours: see sncli.private_files
        except OSError as exc:
            raise OffsetsError(f"cannot open offsets lock file {self.lock_path}: {exc.strerror or exc}") from None
        try:
            deadline = time.monotonic() + LOCK_WAIT_SECONDS
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise OffsetsError(
                            f"offsets lock file {self.lock_path} stayed locked for {LOCK_WAIT_SECONDS:.0f}s; "
                            f"is a process stuck while writing offsets?"
                        ) from None
                    time.sleep(0.01)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _write(self, entries: Entries, *, then: Callable[[], None]) -> None:
        """Replace the file atomically; on any failure the previous file is left exactly as it was.

        A new file is 0600 (``mkstemp``'s mode); our own file that exists keeps
        the mode its operator gave it (never another user's: it is replaced 0600).
        """
        data = render_document(entries)
        directory = self.path.parent
        try:
            info = self.path.lstat()
            mode: int | None = info.st_mode & 0o777 if is_own_file(info) else None
        except OSError:
            mode = None
        tmp: str | None = None
        try:
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
            try:
                if mode is not None:
                    os.fchmod(fd, mode)
                _write_fully(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            tmp = None
            self._remember_written(entries)
        except OSError as exc:
            raise OffsetsError(
                f"cannot write offsets file {self.path}: {exc.strerror or exc}; the previous offsets are intact"
            ) from None
        finally:
            if tmp is not None:
                with suppress(OSError):
                    os.unlink(tmp)
        then()  # the new document is what readers see now, durable or not
        try:
            _fsync_directory(directory)
        except OSError as exc:
            raise OffsetsError(
                f"offsets file {self.path} was replaced but its directory could not be synced "
                f"({exc.strerror or exc}); a power loss now could bring back the previous offsets"
            ) from None

