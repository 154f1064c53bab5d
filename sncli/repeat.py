"""``--every SECONDS``: one long-lived process that runs a bounded cycle repeatedly.

The Go bridge hot-reloaded its config with fsnotify. Here a cycle always runs
with the config that was valid when it started, and between cycles the file is
re-read when its *content* changed (a hash, not an mtime or an inotify event,
so a Kubernetes ConfigMap's symlink swap counts and a touch does not), or the
content of a ``${file:...}`` secret it reads (a rotated Secret volume). Each
config read registers its secrets for masking (:func:`sncli.config.parse_settings`). A new
config that does not validate is logged and ignored; the last good one stays.
A stop request (the command's SIGTERM/SIGINT handler, :mod:`sncli.signals`)
ends the loop after the current cycle.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sncli.config import Settings, load_settings, referenced_files
from sncli.errors import ConfigError, ExitCode

log = logging.getLogger(__name__)


def content_hash(path: Path) -> str | None:
    """The config's content and that of every ``${file:...}`` secret it reads; None if it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    digest = hashlib.sha256(data)
    for secret in referenced_files(data.decode("utf-8", errors="replace")):
        digest.update(b"\0" + str(secret).encode() + b"\0")
        try:
            digest.update(hashlib.sha256(secret.read_bytes()).digest())
        except OSError:
            digest.update(b"unreadable")  # judged (and refused) like any change; readable again is another
    return digest.hexdigest()


@dataclass
class ConfigWatcher:
    """Hands out the current valid settings, reloading them when the file's content changes."""

    path: Path
    settings: Settings
    digest: str | None = None
    loader: Callable[[Path], Settings] = load_settings
    reloads: int = 0
    rejected: int = 0

    def __post_init__(self) -> None:
        if self.digest is None:
            self.digest = content_hash(self.path)

    def current(self) -> Settings:
        digest = content_hash(self.path)
        if digest is None or digest == self.digest:
            return self.settings
        self.digest = digest  # judge each new content once, not on every cycle
        try:
            new = self.loader(self.path)
        except ConfigError as exc:
            self.rejected += 1
            log.error("config %s changed but is invalid, keeping the previous one: %s", self.path, exc)
            return self.settings
        self.settings = new
        self.reloads += 1
        log.info("config %s changed; the next cycle uses it", self.path)
        return new


@dataclass
class StopFlag:
    """Set when the loop should stop (by the command's signal handler); checked between cycles and while waiting."""

    event: threading.Event = field(default_factory=threading.Event)

    @property
    def stopped(self) -> bool:
        return self.event.is_set()


def run_every(
    interval: float,
    watcher: ConfigWatcher,
    cycle: Callable[[Settings], int],
    stop: StopFlag,
    *,
    max_cycles: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run ``cycle`` every ``interval`` seconds until stopped; return the last cycle's exit code.

    Cycles start on a fixed cadence (a slow cycle shortens the wait, it does not
    shift every later start). A lock held by another run (75) is a normal
    outcome in a loop: the next cycle simply tries again.
    """
    code = int(ExitCode.OK)
    cycles = 0
    while not stop.stopped:
        started = clock()
        code = cycle(watcher.current())
        cycles += 1
        if max_cycles is not None and cycles >= max_cycles:
            break
        wait = interval - (clock() - started)
        if wait > 0 and stop.event.wait(wait):
            break
    return code
