"""The offsets file itself, planted by another local user in a shared sticky directory (adversarial review).

sncli.private_files accepts a world-writable sticky directory (like /tmp) for lock
files, and checked the lock files, but not the offsets file next to them: it was
read through FIFOs and other users' files, and its mode was copied onto the file
sncli wrote. Needs root (acts as `nobody` with su).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("su") is None, reason="needs root and su")

CONFIG = """\
servicenow:
  instance_url: http://127.0.0.1:1
  auth: {{type: basic, username: admin, password: admin123}}
kafka:
  bootstrap_servers: 127.0.0.1:1
offsets:
  store: file
  path: {path}
source:
  tables:
    - name: incident
      topic: t.incident
"""


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    directory = Path("/tmp") / f"sncli-adv-{uuid.uuid4().hex[:8]}"
    directory.mkdir()
    os.chmod(directory, 0o1777)  # sticky and shared, as private_files allows
    config = tmp_path / "sncli.yaml"
    config.write_text(CONFIG.format(path=directory / "offsets.json"))
    yield directory, config
    shutil.rmtree(directory, ignore_errors=True)


def sncli(config: Path, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sncli", "--json", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ})


def as_nobody(command: str) -> None:
    subprocess.run(["su", "nobody", "-s", "/bin/sh", "-c", command], check=True, timeout=10)


def test_a_fifo_planted_as_the_offsets_file_does_not_hang_the_run(shared: tuple[Path, Path]) -> None:
    directory, config = shared
    as_nobody(f"mkfifo {directory / 'offsets.json'}")
    try:
        result = sncli(config, "offsets", "show", timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("`offsets show` hung forever opening a FIFO another user planted as the offsets file")
    assert result.returncode != 0


def test_another_users_offsets_file_is_neither_trusted_nor_its_mode_copied(shared: tuple[Path, Path]) -> None:
    directory, config = shared
    offsets = directory / "offsets.json"
    # What a real run writes, then the same with the cursor in 2099, planted 0666 by nobody.
    assert sncli(config, "offsets", "set", "--table", "incident", "--timestamp", "2026-01-01 00:00:00",
                 "-y").returncode == 0
    forged = offsets.read_text().replace("2026-01-01 00:00:00", "2099-01-01 00:00:00")
    for leftover in directory.iterdir():
        leftover.unlink()
    source = directory.parent / f"{directory.name}.forged"
    source.write_text(forged)
    os.chmod(source, 0o644)
    try:
        as_nobody(f"cp {source} {offsets} && chmod 666 {offsets}")
    finally:
        source.unlink()

    shown = sncli(config, "offsets", "show")
    assert shown.returncode != 0 and "belongs to uid" in shown.stderr, shown.stdout + shown.stderr
    assert "2099-01-01" not in shown.stdout  # another user's cursor is never taken for this table's progress
    refused = sncli(config, "offsets", "set", "--table", "incident", "--timestamp", "2026-02-01 00:00:00", "-y")
    assert refused.returncode != 0
    info = offsets.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) != (0, 0o666)  # not taken over with its 0666
    assert "2099-01-01" in offsets.read_text()  # left as it was, for the operator to look at
