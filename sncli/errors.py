"""Exit codes and the exceptions that carry them.

A scheduler only sees the exit code, so every failure the CLI can report maps
to exactly one code here, and the codes never change meaning between versions.
Jobs raise these; the CLI shell turns them into one readable line and the code,
never a traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # the run failed; nothing was committed past what succeeded
    USAGE = 2  # usage or config error
    PARTIAL = 3  # some tables/records failed, the rest committed
    LOCKED = 75  # another run holds the lock (EX_TEMPFAIL, safe to retry)


class SncliError(Exception):
    """An error the CLI reports as one line and turns into an exit code."""

    exit_code: ExitCode = ExitCode.FAILED


class ConfigError(SncliError):
    """The configuration is invalid; the message names the key path."""

    exit_code = ExitCode.USAGE


class UsageError(SncliError):
    exit_code = ExitCode.USAGE


class LockHeldError(SncliError):
    """Another run holds the run lock for the same scope."""

    exit_code = ExitCode.LOCKED


class OffsetsError(SncliError):
    """Stored progress is unreadable, mismatched, or was moved by another writer."""

    exit_code = ExitCode.FAILED
