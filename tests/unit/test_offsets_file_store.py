"""FileStore: atomic replacement, corruption handling, concurrency, conditional writes."""

from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path

import pytest

from sncli.config import parse_settings
from sncli.errors import ExitCode, OffsetsError
from sncli.offsets import file_store
from sncli.offsets.file_store import FileStore
from sncli.offsets.model import OffsetConflictError, OffsetsCorruptError, StoredOffset, backfill_key
from sncli.offsets.store import open_store

FP = "f" * 64


def sid(n: int) -> str:
    return f"{n:032x}"


def make(key: str, second: int = 0, sys_n: int = 1) -> StoredOffset:
    return StoredOffset.new(key, f"2024-05-01 12:00:{second:02d}", sid(sys_n), FP)


def test_open_store_uses_the_configured_path(tmp_path: Path) -> None:
    settings = parse_settings({"servicenow": {"instance_url": "https://x.example.com",
                                              "auth": {"type": "basic", "username": "u", "password": "p"}},
                               "offsets": {"store": "file", "path": str(tmp_path / "o.json")}})
    store = open_store(settings)
    assert isinstance(store, FileStore)
    assert store.path == tmp_path / "o.json"


def test_missing_file_is_empty_and_first_save_creates_it(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "offsets.json"
    store = FileStore(path)
    assert store.load("incident") is None
    assert store.load_all() == {}
    saved = make("incident")
    store.save(saved)
    doc = json.loads(path.read_text())
    assert doc["version"] == 1
    assert doc["offsets"]["incident"]["sys_id"] == sid(1)
    assert FileStore(path).load("incident") == saved
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_save_then_save_again_and_delete(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "o.json")
    store.save(make("incident", 1))
    store.save(make("incident", 2))
    assert store.load("incident") is not None
    assert FileStore(tmp_path / "o.json").load_all()["incident"].timestamp == "2024-05-01 12:00:02"
    store.delete("incident")
    assert FileStore(tmp_path / "o.json").load("incident") is None
    store.delete("incident")  # deleting what is gone is fine


def test_failing_write_leaves_the_old_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "o.json"
    store = FileStore(path)
    store.save(make("incident", 1))
    before = path.read_bytes()

    def disk_full(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(file_store, "_write_fully", disk_full)
    with pytest.raises(OffsetsError, match=r"No space left on device.*previous offsets are intact"):
        store.save(make("incident", 2))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.json", "o.json.lock"]  # no temp file left

    monkeypatch.undo()
    third = make("incident", 3)
    store.save(third)  # the store is still usable and its precondition still right
    assert FileStore(path).load("incident") == third


def test_failing_fsync_leaves_the_old_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "o.json"
    store = FileStore(path)
    store.save(make("incident", 1))
    before = path.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(file_store.os, "fsync", broken_fsync)
    with pytest.raises(OffsetsError, match="Input/output error"):
        store.save(make("incident", 2))
    monkeypatch.undo()
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b'{"version": 1, "offsets": {"incident": {"version": 1, "table": "inc',
        b"\x00\x00\x00\x00",
        b"[]",
        b'{"version": 1, "offsets": []}',
        b'{"version": 1, "offsets": {"incident": {"version": 1}}}',
        b'{"version": 7, "offsets": {}}',
        b'{"version": 1, "offsets": {"../etc": {"version": 1, "table": "../etc", "timestamp": "2024-05-01 12:00:00",'
        b' "sys_id": "", "fingerprint": "", "updated_at": ""}}}',
    ],
)
def test_corrupt_file_is_reported_with_exit_2_and_never_overwritten(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "o.json"
    path.write_bytes(content)
    store = FileStore(path)
    with pytest.raises(OffsetsCorruptError) as info:
        store.load("incident")
    assert info.value.exit_code == ExitCode.USAGE
    assert str(path) in str(info.value)
    with pytest.raises(OffsetsCorruptError):
        store.load_all()
    with pytest.raises(OffsetsCorruptError):
        store.save(make("incident"))
    with pytest.raises(OffsetsCorruptError):
        store.delete("incident")
    assert path.read_bytes() == content


def test_truncated_real_file_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "o.json"
    FileStore(path).save(make("incident"))
    full = path.read_bytes()
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(OffsetsCorruptError, match="is corrupt: not valid JSON"):
        FileStore(path).load("incident")


def test_eight_threads_saving_concurrently_keep_every_key(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "o.json")
    tables = [f"table_{i}" for i in range(8)]
    for table in tables:
        store.load(table)
    errors: list[BaseException] = []
    start = threading.Barrier(len(tables))

    def run(table: str) -> None:
        try:
            start.wait()
            for second in range(25):
                store.save(make(table, second, sys_n=second + 1))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in tables]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stored = FileStore(tmp_path / "o.json").load_all()
    assert sorted(stored) == tables
    assert {o.timestamp for o in stored.values()} == {"2024-05-01 12:00:24"}


def test_two_store_instances_keep_each_others_keys(tmp_path: Path) -> None:
    path = tmp_path / "o.json"
    one, two = FileStore(path), FileStore(path)  # as two processes would
    one.load("incident")
    two.load("problem")
    one.save(make("incident", 1))
    two.save(make("problem", 1))
    one.save(make("incident", 2))
    stored = FileStore(path).load_all()
    assert stored["incident"].timestamp.endswith(":02")
    assert stored["problem"].timestamp.endswith(":01")


def test_a_key_moved_by_another_writer_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "o.json"
    ours, theirs = FileStore(path), FileStore(path)
    ours.load("incident")
    ours.save(make("incident", 1))
    theirs.load("incident")
    theirs.save(make("incident", 30))
    before = path.read_bytes()
    with pytest.raises(OffsetConflictError, match="another writer moved the offset for incident"):
        ours.save(make("incident", 2))
    with pytest.raises(OffsetConflictError):
        ours.delete("incident")
    assert path.read_bytes() == before
    assert ours.load("incident") is not None  # after re-reading, saving is allowed again
    ours.save(make("incident", 31))


def test_an_unseen_key_is_expected_to_be_absent(tmp_path: Path) -> None:
    path = tmp_path / "o.json"
    FileStore(path).save(make("incident", 5))
    fresh = FileStore(path)
    with pytest.raises(OffsetConflictError):
        fresh.save(make("incident", 6))
    fresh.load_all()
    fresh.save(make("incident", 6))
    key = backfill_key("incident", "r", 1, 2)
    fresh.save(make(key, 1))  # absent and unseen: creating it is fine
    assert set(FileStore(path).load_all()) == {"incident", key}


def test_identical_save_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "o.json"
    store = FileStore(path)
    saved = make("incident", 1)
    store.save(saved)
    mtime = path.stat().st_mtime_ns
    store.save(saved)
    assert path.stat().st_mtime_ns == mtime


def test_file_mode_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "o.json"
    store = FileStore(path)
    store.save(make("incident", 1))
    assert path.stat().st_mode & 0o777 == 0o600  # new: private (see test_private_files)
    path.chmod(0o640)
    store.save(make("incident", 2))
    assert path.stat().st_mode & 0o777 == 0o640  # an operator's choice is kept


def test_concurrent_saves_are_written_together_and_each_gets_its_own_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "o.json"
    store = FileStore(path)
    rival = FileStore(path)
    rival.save(make("incident", 1))  # moved behind the first store's back: its save of this key must fail
    writes: list[int] = []
    real_write = FileStore._write
    started = threading.Event()

    def slow_write(self: FileStore, entries: dict[str, object], *, then: object) -> None:
        writes.append(len(entries))
        started.set()
        threading.Event().wait(0.2)  # long enough for the other threads to queue behind this write
        real_write(self, entries, then=then)  # type: ignore[arg-type]

    monkeypatch.setattr(FileStore, "_write", slow_write)
    keys = [backfill_key("incident", "r", i, 8) for i in range(8)]
    errors: dict[str, BaseException] = {}

    def save(key: str, second: int) -> None:
        try:
            store.save(make(key, second))
        except BaseException as exc:
            errors[key] = exc

    first = threading.Thread(target=save, args=(keys[0], 1))
    first.start()
    started.wait(5)
    threads = [threading.Thread(target=save, args=(k, 2)) for k in keys[1:]]
    threads.append(threading.Thread(target=save, args=("incident", 3)))
    for t in threads:
        t.start()
    for t in [first, *threads]:
        t.join(10)
    assert set(errors) == {"incident"} and isinstance(errors["incident"], OffsetConflictError)
    assert len(writes) == 2  # the first save alone, then the eight that queued behind it in one write
    stored = FileStore(path).load_all()
    assert all(stored[k].timestamp == f"2024-05-01 12:00:0{1 if k == keys[0] else 2}" for k in keys)
    assert stored["incident"].timestamp == "2024-05-01 12:00:01"  # the rival's value, kept


def test_a_failed_group_write_fails_every_save_in_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileStore(tmp_path / "o.json")
    monkeypatch.setattr(file_store, "_write_fully", lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC,
                                                                                                   "No space")))
    errors: list[BaseException] = []

    def save(i: int) -> None:
        try:
            store.save(make(backfill_key("incident", "r", i, 4)))
        except OffsetsError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(errors) == 4 and all("previous offsets are intact" in str(e) for e in errors)
    assert not (tmp_path / "o.json").exists()


def test_a_store_sees_every_change_another_writer_makes_between_its_saves(tmp_path: Path) -> None:
    path = tmp_path / "o.json"
    ours, theirs = FileStore(path), FileStore(path)
    ours.save(make("incident", 1))
    theirs.save(make("problem", 2))  # another process's key, written after ours was read
    ours.save(make("incident", 3))
    assert set(FileStore(path).load_all()) == {"incident", "problem"}
    text = path.read_text()
    path.write_text("x" * len(text))  # corrupted in place, same size
    with pytest.raises(OffsetsCorruptError):
        ours.save(make("incident", 4))
    assert path.read_text() == "x" * len(text)  # never overwritten
