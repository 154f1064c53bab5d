"""S3Store and the S3 run lease against a real S3 server (moto_server) with conditional writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from sncli.config import Settings, parse_settings
from sncli.errors import ExitCode, LockHeldError
from sncli.offsets.lock import lease_key, run_lock
from sncli.offsets.model import OffsetConflictError, OffsetsCorruptError, StoredOffset
from sncli.offsets.s3_key_store import S3KeyStore
from sncli.offsets.s3_store import S3Store
from sncli.offsets.store import open_store

pytestmark = pytest.mark.integration

FP = "e" * 64


def sid(n: int) -> str:
    return f"{n:032x}"


def make(key: str, second: int = 0) -> StoredOffset:
    """The same arguments give equal offsets (a fixed ``updated_at``), so tests can compare them whole."""
    return StoredOffset.new(key, f"2024-05-01 12:00:{second:02d}", sid(second + 1), FP,
                            now=datetime(2024, 5, 1, 12, 1, tzinfo=UTC))


@pytest.fixture
def bucket(s3_bucket: str) -> str:
    return s3_bucket


@pytest.fixture
def client(s3_endpoint: str, aws_env: None) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


def settings_for(s3_endpoint: str, bucket: str, lease_seconds: int = 30, layout: str | None = None) -> Settings:
    offsets = {"store": "s3", "url": f"s3://{bucket}/sncli/offsets.json", "endpoint_url": s3_endpoint,
               "region": "us-east-1", "lease_seconds": lease_seconds}
    if layout is not None:
        offsets["layout"] = layout
    return parse_settings({
        "servicenow": {"instance_url": "https://x.example.com",
                       "auth": {"type": "basic", "username": "u", "password": "p"}},
        "offsets": offsets,
    })


def store_for(s3_endpoint: str, bucket: str) -> S3Store:
    """The single-object layout (sncli before per_key, still selectable with `layout: single`)."""
    store = open_store(settings_for(s3_endpoint, bucket, layout="single"))
    assert isinstance(store, S3Store)
    return store


def key_store_for(s3_endpoint: str, bucket: str) -> S3KeyStore:
    """The default layout: one object per key."""
    store = open_store(settings_for(s3_endpoint, bucket))
    assert isinstance(store, S3KeyStore)
    return store


def read_key(client: Any, bucket: str, key: str) -> tuple[bytes, str]:
    response = client.get_object(Bucket=bucket, Key=f"sncli/offsets.json.d/{key}.json")
    return response["Body"].read(), response["ETag"]


def read_doc(client: Any, bucket: str) -> tuple[dict[str, Any], str]:
    response = client.get_object(Bucket=bucket, Key="sncli/offsets.json")
    return json.loads(response["Body"].read()), response["ETag"]


# --------------------------------------------------------------------------- store


def test_first_save_creates_the_object_and_a_second_creator_cannot_clobber_it(
    s3_endpoint: str, bucket: str, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="sncli.offsets")
    ours, theirs = store_for(s3_endpoint, bucket), store_for(s3_endpoint, bucket)
    assert ours.load("incident") is None
    assert theirs.load("problem") is None  # both saw "no object"
    ours.save(make("incident", 1))
    # theirs still believes the object does not exist: its If-None-Match create gets 412,
    # it re-reads, sees only another key changed, merges and writes.
    theirs.save(make("problem", 2))
    assert any("changed under us while saving problem" in r.getMessage() for r in caplog.records)
    doc, _ = read_doc(client, bucket)
    assert doc["version"] == 1
    assert sorted(doc["offsets"]) == ["incident", "problem"]
    loaded = store_for(s3_endpoint, bucket).load("incident")
    assert loaded is not None and loaded.timestamp == "2024-05-01 12:00:01"


def test_a_concurrent_writer_of_our_key_makes_our_save_fail_and_leaves_the_object_intact(
    s3_endpoint: str, bucket: str, client: Any
) -> None:
    ours, theirs = store_for(s3_endpoint, bucket), store_for(s3_endpoint, bucket)
    ours.load("incident")
    ours.save(make("incident", 1))
    theirs.load("incident")
    theirs.save(make("incident", 40))
    doc_before, etag_before = read_doc(client, bucket)
    with pytest.raises(OffsetConflictError, match="another writer moved the offset for incident") as info:
        ours.save(make("incident", 2))
    assert info.value.exit_code == ExitCode.FAILED
    doc_after, etag_after = read_doc(client, bucket)
    assert (doc_after, etag_after) == (doc_before, etag_before)
    assert doc_after["offsets"]["incident"]["timestamp"] == "2024-05-01 12:00:40"


def test_a_412_caused_by_other_keys_is_merged_and_retried(
    s3_endpoint: str, bucket: str, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="sncli.offsets")
    ours, theirs = store_for(s3_endpoint, bucket), store_for(s3_endpoint, bucket)
    ours.load_all()
    theirs.load_all()
    ours.save(make("incident", 1))
    theirs.save(make("problem", 1))  # 412 (ours changed the object), merged
    ours.save(make("incident", 2))  # 412 (theirs changed it), merged
    theirs.save(make("problem", 2))
    retried = [r.getMessage() for r in caplog.records if "changed under us" in r.getMessage()]
    assert len(retried) == 3  # every save but the first met a 412 and merged
    doc, _ = read_doc(client, bucket)
    assert {k: v["timestamp"] for k, v in doc["offsets"].items()} == {
        "incident": "2024-05-01 12:00:02", "problem": "2024-05-01 12:00:02"}


def test_a_foreign_put_between_read_and_write_is_detected(s3_endpoint: str, bucket: str, client: Any) -> None:
    ours = store_for(s3_endpoint, bucket)
    ours.load("incident")
    ours.save(make("incident", 1))
    doc, etag = read_doc(client, bucket)
    doc["offsets"]["incident"]["timestamp"] = "2030-01-01 00:00:00"
    client.put_object(Bucket=bucket, Key="sncli/offsets.json", Body=json.dumps(doc).encode(), IfMatch=etag)
    with pytest.raises(OffsetConflictError):
        ours.save(make("incident", 2))
    assert read_doc(client, bucket)[0]["offsets"]["incident"]["timestamp"] == "2030-01-01 00:00:00"


def test_threads_of_one_process_and_another_process_store_all_keep_their_keys(
    s3_endpoint: str, bucket: str, client: Any
) -> None:
    ours, other = store_for(s3_endpoint, bucket), store_for(s3_endpoint, bucket)
    tables = [f"t{i}" for i in range(6)]
    ours.load_all()
    other.load("other")
    errors: list[BaseException] = []

    def run(store: S3Store, table: str) -> None:
        try:
            for second in range(5):
                store.save(make(table, second))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(ours, t)) for t in tables]
    threads.append(threading.Thread(target=run, args=(other, "other")))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    doc, _ = read_doc(client, bucket)
    assert {k: v["timestamp"] for k, v in doc["offsets"].items()} == {
        t: "2024-05-01 12:00:04" for t in [*tables, "other"]}


def test_delete_is_conditional_too(s3_endpoint: str, bucket: str, client: Any) -> None:
    ours, theirs = store_for(s3_endpoint, bucket), store_for(s3_endpoint, bucket)
    ours.load_all()
    ours.save(make("incident", 1))
    ours.save(make("problem", 1))
    theirs.load("incident")
    theirs.save(make("incident", 9))
    with pytest.raises(OffsetConflictError):
        ours.delete("incident")
    ours.delete("problem")
    doc, _ = read_doc(client, bucket)
    assert sorted(doc["offsets"]) == ["incident"]


def test_a_corrupt_object_is_reported_and_not_overwritten(s3_endpoint: str, bucket: str, client: Any) -> None:
    client.put_object(Bucket=bucket, Key="sncli/offsets.json", Body=b'{"version": 1, "offs')
    store = store_for(s3_endpoint, bucket)
    with pytest.raises(OffsetsCorruptError) as info:
        store.load("incident")
    assert info.value.exit_code == ExitCode.USAGE
    with pytest.raises(OffsetsCorruptError):
        store.save(make("incident", 1))
    body = client.get_object(Bucket=bucket, Key="sncli/offsets.json")["Body"].read()
    assert body == b'{"version": 1, "offs'


def test_a_missing_bucket_is_a_clear_error(s3_endpoint: str, aws_env: None) -> None:
    from sncli.errors import OffsetsError

    store = store_for(s3_endpoint, "no-such-bucket-" + uuid.uuid4().hex[:8])
    with pytest.raises(OffsetsError, match="NoSuchBucket"):
        store.load_all()


# --------------------------------------------------------------------------- lease


def test_lease_is_exclusive_and_names_the_holder(s3_endpoint: str, bucket: str, client: Any) -> None:
    settings = settings_for(s3_endpoint, bucket)
    with run_lock(settings, "incident") as held:
        body = json.loads(client.get_object(Bucket=bucket, Key=lease_key("sncli/offsets.json", "incident"))
                          ["Body"].read())
        assert body["owner"] == held.holder.owner
        assert {"host", "pid", "acquired_at", "expires_at"} <= set(body)
        with pytest.raises(LockHeldError) as info, run_lock(settings, "incident"):
            pass
        assert info.value.exit_code == ExitCode.LOCKED
        assert "incident" in str(info.value) and f"pid {held.holder.pid}" in str(info.value)
        with run_lock(settings, "problem"):  # another scope is independent
            pass
    # released on exit: the lease object is gone and the scope can be taken again
    listed = client.list_objects_v2(Bucket=bucket, Prefix="sncli/offsets.json.locks/").get("KeyCount", 0)
    assert listed == 0
    with run_lock(settings, "incident"):
        pass


def test_lease_is_renewed_while_held(s3_endpoint: str, bucket: str, client: Any) -> None:
    settings = settings_for(s3_endpoint, bucket)
    key = lease_key("sncli/offsets.json", "incident")
    with run_lock(settings, "incident", lease_seconds=3) as held:
        first = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        time.sleep(2.5)  # renewal every lease/3 = 1 s
        second = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        assert second["expires_at"] > first["expires_at"]
        assert second["owner"] == first["owner"]
        assert not held.lost
        held.ensure_held()


def test_lease_is_taken_over_only_after_expiry(s3_endpoint: str, bucket: str, client: Any) -> None:
    settings = settings_for(s3_endpoint, bucket, lease_seconds=30)
    key = lease_key("sncli/offsets.json", "incident")
    later = datetime.now(UTC) + timedelta(seconds=31)
    with run_lock(settings, "incident") as first:
        # Not yet expired for a clock 10 s ahead.
        with pytest.raises(LockHeldError), run_lock(
            settings, "incident", clock=lambda: datetime.now(UTC) + timedelta(seconds=10)
        ):
            pass
        # Expired for a clock past the lease: taken over, the old holder's renewal then fails.
        with run_lock(settings, "incident", clock=lambda: later) as second:
            body = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
            assert body["owner"] == second.holder.owner != first.holder.owner
        # the second holder released it (conditional delete on its own ETag)
    # the first holder's release must not delete someone else's lease; here it was already gone
    with run_lock(settings, "incident"):
        pass


def test_renewal_after_takeover_marks_the_lock_lost(s3_endpoint: str, bucket: str, client: Any) -> None:
    settings = settings_for(s3_endpoint, bucket)
    key = lease_key("sncli/offsets.json", "incident")
    later = datetime.now(UTC) + timedelta(seconds=60)
    with (
        run_lock(settings, "incident", lease_seconds=3) as first,
        run_lock(settings, "incident", clock=lambda: later, lease_seconds=300) as second,
    ):
        deadline = time.monotonic() + 5
        while not first.lost and time.monotonic() < deadline:
            time.sleep(0.1)
        assert first.lost
        with pytest.raises(LockHeldError, match="lost its lease"):
            first.ensure_held()
        body = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        assert body["owner"] == second.holder.owner  # the loser did not overwrite it
    # the loser's exit did not delete the winner's lease (it was deleted by the winner itself)


def test_an_unreleased_lease_blocks_until_it_expires(s3_endpoint: str, bucket: str, client: Any) -> None:
    settings = settings_for(s3_endpoint, bucket)
    key = lease_key("sncli/offsets.json", "incident")
    now = datetime.now(UTC)
    crashed = {"owner": "dead", "host": "elsewhere", "pid": 4242, "acquired_at": now.isoformat(),
               "expires_at": (now + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps(crashed).encode())
    with pytest.raises(LockHeldError, match="pid 4242 on elsewhere"), run_lock(settings, "incident"):
        pass
    with run_lock(settings, "incident", clock=lambda: now + timedelta(seconds=31)) as taken:
        assert taken.holder.owner != "dead"


# --------------------------------------------------------------------------- CLI on the S3 store


def test_offsets_cli_on_the_s3_store_respects_the_lease(
    s3_endpoint: str, bucket: str, client: Any, tmp_path: Path
) -> None:
    config = tmp_path / "sncli.yaml"
    config.write_text(yaml.safe_dump({
        "servicenow": {"instance_url": "https://x.example.com",
                       "auth": {"type": "basic", "username": "u", "password": "p"}},
        "offsets": {"store": "s3", "url": f"s3://{bucket}/sncli/offsets.json", "endpoint_url": s3_endpoint,
                    "region": "us-east-1"},
        "source": {"tables": [{"name": "incident", "topic": "sn.incident"}]},
    }))
    env = {k: v for k, v in os.environ.items() if k != "SNCLI_CONFIG"}

    def sncli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sncli", "--config", str(config), *args], env=env,
                              text=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)

    set_args = ("offsets", "set", "--table", "incident", "--timestamp", "2024-05-01 12:00:00", "--yes")
    result = sncli(*set_args)
    assert result.returncode == 0, result.stderr
    assert json.loads(read_key(client, bucket, "incident")[0])["timestamp"] == "2024-05-01 12:00:00"
    rows = json.loads(sncli("--json", "offsets", "show").stdout)
    assert [(r["table"], r["fingerprint"]) for r in rows] == [("incident", "ok")]

    with run_lock(settings_for(s3_endpoint, bucket), "incident"):
        held = sncli(*set_args[:-2], "2024-06-01 00:00:00", "--yes")
        assert held.returncode == 75, held.stderr
        assert "incident" in held.stderr
    assert json.loads(read_key(client, bucket, "incident")[0])["timestamp"] == "2024-05-01 12:00:00"
    reset = sncli("offsets", "reset", "--table", "incident", "--yes")
    assert reset.returncode == 0, reset.stderr
    assert json.loads(sncli("--json", "offsets", "show").stdout)[0]["stored"] is False
    bridge = tmp_path / "bridge-offsets.json"
    bridge.write_text(json.dumps({"incident": {"timestamp": "2024-07-01 00:00:00", "last_identifier": sid(7)}}))
    imported = sncli("offsets", "import", "--from-bridge", str(bridge), "--yes")  # over reset's tombstone
    assert imported.returncode == 0, imported.stderr
    assert json.loads(read_key(client, bucket, "incident")[0])["sys_id"] == sid(7)


class _NoConditionalDelete:
    """An S3 client whose server rejects DeleteObject with If-Match (as some S3-compatible stores do)."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def delete_object(self, **kwargs: Any) -> Any:
        from botocore.exceptions import ClientError

        if "IfMatch" in kwargs:
            raise ClientError({"Error": {"Code": "NotImplemented", "Message": "no conditional delete"}},
                              "DeleteObject")
        return self._real.delete_object(**kwargs)


def test_lease_is_released_where_conditional_delete_is_not_supported(
    s3_endpoint: str, bucket: str, client: Any
) -> None:
    settings = settings_for(s3_endpoint, bucket)
    with run_lock(settings, "incident", client=_NoConditionalDelete(client)):
        pass
    assert client.list_objects_v2(Bucket=bucket, Prefix="sncli/offsets.json.locks/").get("KeyCount", 0) == 0


# --------------------------------------------------------------------------- one object per key


WINDOW_RANGE = "20240101T000000-20240201T000000"


def test_many_writers_each_saving_its_own_window_many_times_a_second_never_conflict(
    s3_endpoint: str, bucket: str
) -> None:
    """An Indexed-Job backfill: N pods (here N stores, one per thread) each save their own window after
    every page. Each write touches its own key only, so none can make another's save fail."""
    count, saves = 12, 40
    keys = [f"backfill/incident/{WINDOW_RANGE}/{i}of{count}" for i in range(count)]
    stores = [open_store(settings_for(s3_endpoint, bucket)) for _ in keys]  # per_key: the default
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def window(store: Any, key: str) -> None:
        try:
            start.wait(10)
            assert store.load(key) is None
            for second in range(saves):
                store.save(make(key, second))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=window, args=pair) for pair in zip(stores, keys, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    final = open_store(settings_for(s3_endpoint, bucket)).load_all()
    assert {k: (v.timestamp, v.sys_id) for k, v in final.items()} == {
        k: (f"2024-05-01 12:00:{saves - 1:02d}", sid(saves)) for k in keys}


def test_per_key_a_writer_of_another_key_never_conflicts_a_writer_of_ours_is_never_overwritten(
    s3_endpoint: str, bucket: str, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="sncli.offsets")
    ours, theirs = key_store_for(s3_endpoint, bucket), key_store_for(s3_endpoint, bucket)
    assert ours.load("incident") is None and theirs.load("problem") is None
    ours.save(make("incident", 1))
    theirs.save(make("problem", 1))
    ours.save(make("incident", 2))
    assert not [r for r in caplog.records if "rewritten" in r.getMessage()]  # no 412 at all
    theirs.load("incident")
    theirs.save(make("incident", 40))
    before = read_key(client, bucket, "incident")
    with pytest.raises(OffsetConflictError, match="another writer moved the offset for incident") as info:
        ours.save(make("incident", 3))
    assert info.value.exit_code == ExitCode.FAILED
    assert read_key(client, bucket, "incident") == before
    # A foreign PUT between our read and our write is detected the same way.
    body, etag = read_key(client, bucket, "problem")
    foreign = dict(json.loads(body), timestamp="2030-01-01 00:00:00")
    client.put_object(Bucket=bucket, Key="sncli/offsets.json.d/problem.json", Body=json.dumps(foreign).encode(),
                      IfMatch=etag)
    with pytest.raises(OffsetConflictError):
        theirs.save(make("problem", 2))
    assert json.loads(read_key(client, bucket, "problem")[0])["timestamp"] == "2030-01-01 00:00:00"


def test_per_key_delete_leaves_a_conditional_tombstone(s3_endpoint: str, bucket: str, client: Any) -> None:
    ours, theirs = key_store_for(s3_endpoint, bucket), key_store_for(s3_endpoint, bucket)
    ours.load_all()
    ours.save(make("incident", 1))
    ours.save(make("problem", 1))
    theirs.load("incident")
    theirs.save(make("incident", 9))
    with pytest.raises(OffsetConflictError):
        ours.delete("incident")
    ours.delete("problem")
    assert read_key(client, bucket, "problem")[0] == b""  # a tombstone: later writes still name its ETag
    assert sorted(key_store_for(s3_endpoint, bucket).load_all()) == ["incident"]
    fresh = key_store_for(s3_endpoint, bucket)  # never saw problem: expects it absent, and it is
    fresh.save(make("problem", 5))
    assert fresh.load("problem") == make("problem", 5)
    with pytest.raises(OffsetConflictError):
        ours.save(make("problem", 2))  # ours saw the tombstone it wrote, not fresh's value


def test_per_key_a_corrupt_object_is_reported_and_not_overwritten(
    s3_endpoint: str, bucket: str, client: Any
) -> None:
    client.put_object(Bucket=bucket, Key="sncli/offsets.json.d/incident.json", Body=b'{"version": 1, "tab')
    store = key_store_for(s3_endpoint, bucket)
    for attempt in (lambda: store.load("incident"), store.load_all, lambda: store.save(make("incident", 1))):
        with pytest.raises(OffsetsCorruptError, match=r"incident\.json is corrupt") as info:
            attempt()
        assert info.value.exit_code == ExitCode.USAGE
    assert read_key(client, bucket, "incident")[0] == b'{"version": 1, "tab'
    store.save(make("problem", 1))  # the other keys are unaffected


def test_per_key_a_missing_bucket_is_a_clear_error(s3_endpoint: str, aws_env: None) -> None:
    from sncli.errors import OffsetsError

    store = key_store_for(s3_endpoint, "no-such-bucket-" + uuid.uuid4().hex[:8])
    with pytest.raises(OffsetsError, match="NoSuchBucket"):
        store.load_all()


# --------------------------------------------------------------------------- migration from the single object


def test_the_single_object_is_split_on_first_use_by_many_processes_at_once_keeping_newer_values(
    s3_endpoint: str, bucket: str, client: Any
) -> None:
    window = f"backfill/incident/{WINDOW_RANGE}/0of2"
    old = store_for(s3_endpoint, bucket)  # what sncli wrote before per_key
    old.load_all()
    for key in ("incident", "problem", window):
        old.save(make(key, 1))
    # A per-key value that already exists is newer than the single object's: never replaced by the copy.
    newer = json.dumps(make("problem", 30).to_json()).encode()
    client.put_object(Bucket=bucket, Key="sncli/offsets.json.d/problem.json", Body=newer, IfNoneMatch="*")

    count = 6
    start = threading.Barrier(count)
    seen: list[dict[str, StoredOffset]] = []
    errors: list[BaseException] = []

    def first_use() -> None:
        try:
            store = key_store_for(s3_endpoint, bucket)
            start.wait(10)
            seen.append(store.load_all())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and len(seen) == count
    expected = {"incident": make("incident", 1), "problem": make("problem", 30), window: make(window, 1)}
    assert all(found == expected for found in seen)
    # The single object is now a marker an older sncli (document version 1) refuses, never overwrites.
    doc, _ = read_doc(client, bucket)
    assert doc["version"] == 2 and doc["layout"] == "per_key" and "offsets" not in doc
    assert doc["objects"] == f"s3://{bucket}/sncli/offsets.json.d/"
    with pytest.raises(OffsetsCorruptError, match="moved to one object per key"):
        store_for(s3_endpoint, bucket).save(make("incident", 2))
    after = key_store_for(s3_endpoint, bucket)
    after.load("incident")
    after.save(make("incident", 2))
    assert after.load_all()["incident"] == make("incident", 2)


class _OlderSncliWritesDuringTheSplit:
    """An S3 client that, just before the marker is written, lets an older sncli save into the single object."""

    def __init__(self, real: Any, older_write: Any) -> None:
        self._real = real
        self._older_write = older_write

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def put_object(self, **kwargs: Any) -> Any:
        if kwargs["Key"] == "sncli/offsets.json" and self._older_write is not None:
            write, self._older_write = self._older_write, None
            write()
        return self._real.put_object(**kwargs)


def test_a_save_by_an_older_sncli_during_the_split_is_copied_too(
    s3_endpoint: str, bucket: str, client: Any
) -> None:
    old = store_for(s3_endpoint, bucket)
    old.load_all()
    old.save(make("incident", 1))
    old.save(make("problem", 1))
    store = S3KeyStore(f"s3://{bucket}/sncli/offsets.json",
                       client=_OlderSncliWritesDuringTheSplit(client, lambda: old.save(make("incident", 5))))
    assert store.load_all() == {"incident": make("incident", 5), "problem": make("problem", 1)}
    assert read_doc(client, bucket)[0]["layout"] == "per_key"


def test_a_store_without_the_single_object_fences_older_sncli_at_once(
    s3_endpoint: str, bucket: str, client: Any
) -> None:
    assert key_store_for(s3_endpoint, bucket).load("incident") is None
    assert read_doc(client, bucket)[0]["layout"] == "per_key"
    with pytest.raises(OffsetsCorruptError):
        store_for(s3_endpoint, bucket).load_all()
