"""Offsets, lock files and backfill Parquet are the running user's alone (issue 15 §4)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sncli.config import Settings, parse_settings
from sncli.errors import OffsetsError
from sncli.offsets.file_store import FileStore
from sncli.offsets.lock import lock_path, run_lock
from sncli.offsets.model import StoredOffset
from sncli.source.parquet_out import ParquetWindowWriter

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another local user")


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def settings_for(path: Path) -> Settings:
    return parse_settings({
        "servicenow": {"instance_url": "https://x.example.com",
                       "auth": {"type": "basic", "username": "u", "password": "p"}},
        "offsets": {"store": "file", "path": str(path)},
    })


def offset(key: str = "incident") -> StoredOffset:
    return StoredOffset.new(key, "2024-05-01 12:00:00", "a" * 32, "f" * 64)


@contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_offsets_and_lock_files_are_created_0600_in_0700_directories(tmp_path: Path, mask: int) -> None:
    path = tmp_path / "state" / "deep" / "offsets.json"
    with umask(mask):
        FileStore(path).save(offset())
        with run_lock(settings_for(path), "incident"):
            pass
    assert mode(path) == 0o600  # was 0644, even under umask 077
    assert mode(path.with_name("offsets.json.lock")) == 0o600
    assert mode(lock_path(path, "incident")) == 0o600
    assert mode(path.parent) == 0o700 and mode(path.parent.parent) == 0o700


def test_backfill_parquet_is_created_0600_in_a_0700_directory(tmp_path: Path) -> None:
    directory = tmp_path / "backfill" / "incident"
    writer = ParquetWindowWriter(directory, "incident", 0, 1, row_group_rows=1)
    writer.write([{"sys_id": "a", "short_description": "secret"}])
    with umask(0o022):
        writer.write([{"sys_id": "b", "u_new": "x"}])  # a new column: a second part
        (first, second) = writer.finish()
    assert mode(first) == 0o600 and mode(second) == 0o600
    assert mode(directory) == 0o700 and mode(directory.parent) == 0o700
    assert pq.read_table(second).column("u_new").to_pylist() == ["x"]


def test_a_stricter_umask_makes_new_directories_stricter(tmp_path: Path) -> None:
    path = tmp_path / "strict" / "offsets.json"
    with umask(0o277):
        FileStore(path).save(offset())
    assert mode(path.parent) == 0o500


def test_an_older_sncli_lock_file_readable_by_others_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "offsets.json"
    old = lock_path(path, "incident")
    old.write_text("")
    old.chmod(0o644)
    with run_lock(settings_for(path), "incident"):
        assert mode(old) == 0o600


def test_a_symlink_at_the_lock_file_name_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    path = tmp_path / "offsets.json"
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    lock_path(path, "incident").symlink_to(target)
    with pytest.raises(OffsetsError, match="cannot open run lock file"), run_lock(settings_for(path), "incident"):
        pass
    path.with_name("offsets.json.lock").symlink_to(target)
    with pytest.raises(OffsetsError, match="cannot open offsets lock file"):
        FileStore(path).save(offset())
    assert target.read_text() == "keep me\n"


@needs_root
def test_a_lock_file_another_user_created_first_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "offsets.json"
    planted = lock_path(path, "incident")
    planted.write_text("")
    os.chown(planted, NOBODY, NOBODY)
    with pytest.raises(OffsetsError, match=f"belongs to uid {NOBODY}"), run_lock(settings_for(path), "incident"):
        pass


@needs_root
def test_a_directory_another_user_owns_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "theirs"
    directory.mkdir()
    os.chown(directory, NOBODY, NOBODY)
    with pytest.raises(OffsetsError, match="belongs to uid"):
        FileStore(directory / "offsets.json").save(offset())


# The other user: open the lock file read-only (all flock needs) and hold it until stdin closes.
HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys
    try:
        fd = os.open(sys.argv[1], os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        print("denied", exc.errno, flush=True)
        sys.exit(0)
    print("held", flush=True)
    sys.stdin.read()
    """
)


@needs_root
def test_another_local_user_cannot_hold_our_run_lock() -> None:
    # A directory every user may enter, as a shared offsets directory often is.
    directory = Path(tempfile.mkdtemp(prefix="sncli-shared-"))
    try:
        directory.chmod(0o755)
        path = directory / "offsets.json"
        settings = settings_for(path)
        with run_lock(settings, "incident"):
            pass  # an earlier run left the lock file behind, as every run does
        proc = subprocess.Popen(["/usr/bin/python3", "-c", HOLDER, str(lock_path(path, "incident"))],
                                user=NOBODY, group=NOBODY, cwd="/", stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            answer = proc.stdout.readline().split()
            with run_lock(settings, "incident"):  # was: LockHeldError (exit 75) for as long as they liked
                pass
            assert answer[0] == "denied"
        finally:
            proc.kill()
            proc.wait(timeout=10)
    finally:
        shutil.rmtree(directory)
