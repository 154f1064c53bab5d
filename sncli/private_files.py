"""Files that hold offsets, locks or records belong to the user that runs sncli, and to nobody else.

Why: offsets files, DLQ exports and backfill Parquet hold cursors or whole
records, and a lock file that another local user can open is a lock that user
can hold (``flock`` needs only a read-only descriptor), failing every run with
exit 75. So:

- new files are created ``0600`` and new directories ``0700``; the process umask
  still applies, so a stricter umask makes them stricter, never looser;
- a file is created with ``O_EXCL`` or opened with ``O_NOFOLLOW``: a symlink
  planted under our name does not redirect a write elsewhere;
- a lock file must be a regular file owned by this user; one that another user
  created first (in a shared directory) is refused, and group/other permission
  bits on our own lock file (left by an older sncli) are removed;
- a file we read back (the offsets file) must be a regular file owned by this
  user, opened without following a symlink or waiting on a FIFO: a cursor
  another user planted is never taken for our progress;
- the directory a lock file lives in must be owned by this user or root, and if
  others may write to it, it must be sticky (like ``/tmp``): otherwise another
  user could delete the lock file and make two runs lock two different files.

Existing directories are never changed: their permissions are the operator's.
Errors are ``OSError`` with a readable ``strerror``, so callers that already
report a failed open report these too.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from contextlib import suppress
from pathlib import Path

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700


def make_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents with mode 0700 (minus the umask); existing ones stay as they are."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        with suppress(FileExistsError):  # created by another process in between
            directory.mkdir(mode=DIR_MODE)


def create_private(path: Path) -> int:
    """A new file at ``path`` opened for writing, mode 0600 (minus the umask); an old file there is replaced.

    The old file is removed first and the new one created with ``O_EXCL``: an
    earlier file (or a symlink) at that name, whatever its mode or owner, is
    never written through.
    """
    path.unlink(missing_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)


def check_directory(directory: Path) -> None:
    """Raise OSError(EPERM) unless only this user (or root) can replace files in ``directory``."""
    info = os.stat(directory)
    me = os.geteuid()
    if info.st_uid not in (me, 0):
        raise OSError(errno.EPERM, f"directory {directory} belongs to uid {info.st_uid}, not to this user "
                                   f"(uid {me}) or root; its owner could replace the files in it")
    if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
        raise OSError(errno.EPERM, f"directory {directory} is writable by every user and not sticky (chmod +t "
                                   f"or o-w); anyone could replace the files in it")


def open_own_file(path: Path) -> int | None:
    """``path`` opened read-only, or None when it does not exist; refused unless it is our own regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.EPERM, f"{path} is a symbolic link; sncli reads only its own files") from None
        raise
    try:
        _check_own_regular(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def is_own_file(info: os.stat_result) -> bool:
    """Whether ``info`` (an ``lstat``) is a regular file this user owns."""
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()


def _check_own_regular(path: Path, info: os.stat_result) -> None:
    me = os.geteuid()
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EPERM, f"{path} is not a regular file")
    if info.st_uid != me:
        raise OSError(errno.EPERM, f"{path} belongs to uid {info.st_uid}, not to this user (uid {me}); "
                                   f"sncli does not trust a file another user wrote: check it, then chown or remove it")


def open_lock_file(path: Path) -> int:
    """``path`` opened read-write for ``flock``, created 0600; refused when another user could open it too."""
    make_dirs(path.parent)
    check_directory(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        info = os.fstat(fd)
        me = os.geteuid()
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EPERM, f"{path} is not a regular file")
        if info.st_uid != me:
            raise OSError(errno.EPERM, f"{path} belongs to uid {info.st_uid}, not to this user (uid {me}): "
                                       f"whoever created it can hold the lock; remove it")
        if info.st_mode & 0o077:
            # Created by an older sncli (0644): others must not be able to open it from now on.
            os.fchmod(fd, stat.S_IMODE(info.st_mode) & FILE_MODE)
            log.warning("lock file %s was readable by other users; made it 0600", path)
    except BaseException:
        os.close(fd)
        raise
    return fd
