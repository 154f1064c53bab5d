"""What every command shares: global options, loading settings, and the exit path."""

from __future__ import annotations

import gc
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import typer

from sncli import logs
from sncli.cli.render import error_line
from sncli.errors import ExitCode, SncliError

if TYPE_CHECKING:
    import threading

    from sncli.config import Settings

T = TypeVar("T")
log = logging.getLogger("sncli")


@dataclass
class AppState:
    config_path: Path | None = None
    log_format: str | None = None
    json_output: bool = False
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    _settings: Settings | None = None

    def settings(self) -> Settings:
        """Load and validate the config once; a bad config exits 2 with one line."""
        if self._settings is None:
            # Lazy here and in run_cycles: sncli.config imports pydantic, which would more than double
            # the start-up of every command, ``--help`` included.
            from sncli.config import load_settings, resolve_config_path

            path = resolve_config_path(self.config_path)
            self._settings = guard(lambda: load_settings(path))  # registers its secrets for masking
        return self._settings


# Every command that reads the config also accepts --config after its name, so both
# `sncli --config c.yaml source poll` and `sncli source poll --config c.yaml` work.
CONFIG_OPTION = typer.Option(None, "--config", "-c", help="Config file (overrides the global --config).")


def state_of(ctx: typer.Context, config: Path | None = None) -> AppState:
    obj = ctx.find_root().obj
    if not isinstance(obj, AppState):  # a command invoked without the root callback (tests)
        obj = AppState()
        ctx.find_root().obj = obj
    if config is not None:
        obj.config_path = config
        obj._settings = None
    # The leaf command's path ("source poll"), so every log line says which job wrote it.
    logs.set_context(command=ctx.command_path.partition(" ")[2] or None)
    return obj


def exit_with(code: int | ExitCode) -> NoReturn:
    raise typer.Exit(int(code))


def guard(job: Callable[[], T]) -> T:
    """Run ``job``; an SncliError becomes one readable line and its exit code, never a traceback."""
    try:
        return job()
    except SncliError as exc:
        error_line(str(exc))
        exit_with(exc.exit_code)
    except KeyboardInterrupt:
        error_line("interrupted")
        exit_with(ExitCode.FAILED)


def run_cycles(
    state: AppState,
    settings: Settings,
    every: float | None,
    cycle: Callable[[Settings], int],
    stop: threading.Event,
) -> int:
    """One cycle, or with ``--every`` cycles until ``stop`` is set; the last cycle's exit code.

    Between cycles of one long-lived process the config is re-read when its
    content changed (an invalid edit is logged and the last good config kept),
    so a ConfigMap update reaches a looping pod without a restart.
    """
    if every is None:
        return cycle(settings)
    from sncli.config import resolve_config_path
    from sncli.repeat import ConfigWatcher, StopFlag, run_every

    watcher = ConfigWatcher(path=resolve_config_path(state.config_path), settings=settings)
    return run_every(every, watcher, cycle, StopFlag(event=stop))


#: Young-generation threshold of the collector during a run (CPython's default is 700).
RUN_GC_THRESHOLD = (50_000, 20, 20)


def prepare_for_run() -> None:
    """Set the garbage collector up for a run's hot loop; call once, after the config is loaded.

    A large page allocates tens of thousands of small containers (each record's
    header list) that live until the page is acknowledged, so with the default
    thresholds the collector ran full collections over them and over every
    object of the imported libraries again and again, a visible share of a
    large poll. ``gc.freeze()`` moves what start-up created out of the
    collector's sight, and a higher threshold collects the young generation
    every 50 000 allocations instead of every 700; cycles are still collected,
    only less often. The README's Performance section has the effect.
    """
    gc.freeze()  # no collection first: it is slow, and start-up leaves little garbage
    gc.set_threshold(*RUN_GC_THRESHOLD)
