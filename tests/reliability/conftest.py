"""Fixtures local to the reliability suite (helpers without fixtures live in support.py)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path | None]:
    """A 64 KiB tmpfs mounted for this test (a real "disk full"), or None where mounting is not allowed."""
    if os.environ.get("SNCLI_TEST_NO_TMPFS"):  # exercise the in-process fallback where root is available
        yield None
        return
    mount_point = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(mount_point)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        yield None
        return
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)


def fill_up(directory: Path, leave_pages: int = 0) -> Path:
    """Fill the filesystem of ``directory`` but ``leave_pages`` 4 KiB pages; returns the filler (delete it to free).

    tmpfs allocates whole pages: cutting the filler to ``leave_pages`` pages fewer than it
    holds frees exactly that many.
    """
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 512)
        except OSError:
            pass
    if leave_pages:
        allocated = -(-filler.stat().st_size // 4096)
        os.truncate(filler, max(0, allocated - leave_pages) * 4096)
    return filler


