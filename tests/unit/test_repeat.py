"""The --every loop: reload on content change, keep the last good config, stop between cycles."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sncli.config import Settings, load_settings
from sncli.repeat import ConfigWatcher, StopFlag, run_every

BASE = {
    "servicenow": {"instance_url": "http://127.0.0.1:1", "auth": {"type": "basic", "username": "u", "password": "p"}},
    "source": {"page_size": 100, "tables": [{"name": "incident", "topic": "t"}]},
}


def write(path: Path, page_size: object) -> None:
    data = {**BASE, "source": {**BASE["source"], "page_size": page_size}}  # type: ignore[dict-item]
    path.write_text(yaml.safe_dump(data))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "sncli.yaml"
    write(path, 100)
    return path


def test_reloads_on_content_change_only(config: Path) -> None:
    watcher = ConfigWatcher(config, load_settings(config))
    assert watcher.current().source.page_size == 100
    config.write_text(config.read_text())  # same content, new mtime: not a change
    watcher.current()
    assert watcher.reloads == 0
    write(config, 250)
    assert watcher.current().source.page_size == 250
    assert watcher.reloads == 1


def test_invalid_edit_is_logged_and_ignored(config: Path, caplog: pytest.LogCaptureFixture) -> None:
    watcher = ConfigWatcher(config, load_settings(config))
    write(config, "lots")
    assert watcher.current().source.page_size == 100
    assert watcher.rejected == 1
    assert "source.page_size" in caplog.text and "keeping the previous one" in caplog.text
    watcher.current()  # the same broken content is judged once
    assert watcher.rejected == 1
    write(config, 300)
    assert watcher.current().source.page_size == 300


def test_symlink_swap_counts_as_a_change(tmp_path: Path) -> None:
    # A Kubernetes ConfigMap volume swaps a symlink to a new directory.
    old, new = tmp_path / "a", tmp_path / "b"
    old.mkdir()
    new.mkdir()
    write(old / "sncli.yaml", 100)
    write(new / "sncli.yaml", 500)
    link = tmp_path / "sncli.yaml"
    link.symlink_to(old / "sncli.yaml")
    watcher = ConfigWatcher(link, load_settings(link))
    link.unlink()
    link.symlink_to(new / "sncli.yaml")
    assert watcher.current().source.page_size == 500


def test_loop_applies_edits_on_the_next_cycle(config: Path) -> None:
    watcher = ConfigWatcher(config, load_settings(config))
    seen: list[int] = []

    def cycle(settings: Settings) -> int:
        seen.append(settings.source.page_size)
        if len(seen) == 2:
            write(config, 999)  # edited during cycle 2: cycle 3 sees it
        return 0

    assert run_every(0.0, watcher, cycle, StopFlag(), max_cycles=4) == 0
    assert seen == [100, 100, 999, 999]


def test_stop_ends_after_the_current_cycle(config: Path) -> None:
    watcher = ConfigWatcher(config, load_settings(config))
    stop = StopFlag()
    calls = 0

    def cycle(settings: Settings) -> int:
        nonlocal calls
        calls += 1
        stop.event.set()  # SIGTERM arrives mid-cycle
        return 3

    assert run_every(3600.0, watcher, cycle, stop) == 3  # no hour-long wait after the stop
    assert calls == 1


def test_a_rotated_secret_file_is_a_change_too(tmp_path: Path) -> None:
    # A Kubernetes Secret volume updates the file behind ${file:...}; the config itself stays the same.
    secret = tmp_path / "password"
    secret.write_text("first-pw\n")
    config = tmp_path / "sncli.yaml"
    data = {**BASE, "servicenow": {**BASE["servicenow"],
                                   "auth": {"type": "basic", "username": "u", "password": f"${{file:{secret}}}"}}}
    config.write_text(yaml.safe_dump(data))
    watcher = ConfigWatcher(config, load_settings(config))
    secret.write_text("second-pw\n")
    auth = watcher.current().servicenow.auth
    assert auth.type == "basic" and auth.password.get_secret_value() == "second-pw"
    assert watcher.reloads == 1
    watcher.current()
    assert watcher.reloads == 1  # judged once
