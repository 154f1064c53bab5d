"""The local run lock across real processes: a second run of the same scope fails at once with 75."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sncli.config import Settings, parse_settings
from sncli.errors import ExitCode, LockHeldError
from sncli.offsets.lock import lock_path, run_lock

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

# Takes the lock for argv[2] with offsets at argv[1]; "hold" keeps it until stdin closes.
CHILD = textwrap.dedent(
    """
    import sys
    from sncli.config import parse_settings
    from sncli.errors import LockHeldError
    from sncli.offsets import run_lock

    settings = parse_settings({
        "servicenow": {"instance_url": "https://x.example.com",
                       "auth": {"type": "basic", "username": "u", "password": "p"}},
        "offsets": {"store": "file", "path": sys.argv[1]},
    })
    try:
        with run_lock(settings, sys.argv[2]):
            print("acquired", flush=True)
            if sys.argv[3] == "hold":
                sys.stdin.read()
    except LockHeldError as exc:
        print(exc, file=sys.stderr, flush=True)
        sys.exit(int(exc.exit_code))
    """
)


def settings_for(path: Path) -> Settings:
    return parse_settings({
        "servicenow": {"instance_url": "https://x.example.com",
                       "auth": {"type": "basic", "username": "u", "password": "p"}},
        "offsets": {"store": "file", "path": str(path)},
    })


def child(path: Path, scope: str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), scope, mode],
        cwd=REPO, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def wait_acquired(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "acquired", proc.stderr.read() if proc.stderr else ""


def test_a_second_process_on_the_same_scope_exits_75_at_once(tmp_path: Path) -> None:
    offsets = tmp_path / "offsets.json"
    holder = child(offsets, "incident", "hold")
    try:
        wait_acquired(holder)
        started = time.monotonic()
        second = child(offsets, "incident", "once")
        _, err = second.communicate(timeout=30)
        assert second.returncode == ExitCode.LOCKED == 75
        assert time.monotonic() - started < 10  # fails at once, does not wait
        assert "incident" in err and f"pid {holder.pid}" in err and "started" in err
        other = child(offsets, "problem", "once")  # another table is not blocked
        out, _ = other.communicate(timeout=30)
        assert other.returncode == 0 and "acquired" in out
    finally:
        holder.communicate(input="", timeout=30)
    assert holder.returncode == 0
    again = child(offsets, "incident", "once")  # released on exit
    assert again.communicate(timeout=30)[0].strip() == "acquired"


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    offsets = tmp_path / "offsets.json"
    holder = child(offsets, "incident", "hold")
    wait_acquired(holder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    with run_lock(settings_for(offsets), "incident") as held:
        assert held.holder.pid == os.getpid()


def test_in_process_holder_blocks_a_subprocess_and_another_thread(tmp_path: Path) -> None:
    offsets = tmp_path / "offsets.json"
    settings = settings_for(offsets)
    with run_lock(settings, "incident") as held:
        info = json.loads(lock_path(offsets, "incident").read_text())
        assert info["pid"] == os.getpid() and info["owner"] == held.holder.owner
        proc = child(offsets, "incident", "once")
        proc.communicate(timeout=30)
        assert proc.returncode == 75
        with pytest.raises(LockHeldError) as exc_info, run_lock(settings, "incident"):
            pass
        assert exc_info.value.exit_code == ExitCode.LOCKED
    assert lock_path(offsets, "incident").read_text() == ""  # holder info cleared on release


def test_scopes_with_slashes_get_distinct_safe_file_names(tmp_path: Path) -> None:
    offsets = tmp_path / "offsets.json"
    a = lock_path(offsets, "backfill/incident/r1")
    b = lock_path(offsets, "backfill_incident_r1")
    assert a.parent == b.parent == tmp_path
    assert a != b and "/" not in a.name
    settings = settings_for(offsets)
    with (
        run_lock(settings, "backfill/incident/r1"),
        run_lock(settings, "backfill_incident_r1"),
        pytest.raises(LockHeldError),
        run_lock(settings, "backfill/incident/r1"),
    ):
        pass



def test_an_unusable_lock_directory_is_a_clear_error(tmp_path: Path) -> None:
    from sncli.errors import OffsetsError

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with (
        pytest.raises(OffsetsError, match="cannot open run lock file"),
        run_lock(settings_for(not_a_dir / "offsets.json"), "incident"),
    ):
        pass
