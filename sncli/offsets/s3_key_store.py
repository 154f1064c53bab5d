"""Offsets on S3 as one object per key, so writers of different tables and windows never contend.

With ``offsets.url: s3://bucket/sncli/offsets.json`` each offset key lives in its
own object under ``sncli/offsets.json.d/`` (``incident.json``,
``backfill/incident/<range>/3of16.json``), holding that key's entry. Every
write is a conditional PUT of that one object: ``If-Match: <ETag we saw>``, or
``If-None-Match: *`` for a key we saw absent. An Indexed-Job backfill of N pods,
or several cron groups, each write only their own objects: a 412 means another
writer touched *this* key, and then (as in the single object) the save fails
with OffsetConflictError and the object is left as the other writer made it.

A deleted key (``offsets reset``) becomes an empty object, a tombstone, rather
than disappearing: a later write must still name its ETag, and a migration
running late (below) can never bring the old value back with its create.

The single object at ``url`` (the ``single`` layout, :mod:`sncli.offsets.s3_store`)
is migrated on first use: its entries are copied with ``If-None-Match: *`` (a
per-key object that exists already is newer and is kept), then the object is
replaced, ``If-Match`` the ETag that was copied, by a marker (document version
2) that older sncli versions refuse to read or overwrite, so nobody keeps
writing the stale copy. If an older sncli changed the object in between, the
marker's PUT gets 412 and the copy is done again from the newer content: a
per-key object still holding what the earlier round copied is moved on, one a
per-key writer moved is kept. A store without the single object writes the
marker at once, for the same reason.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from sncli.errors import OffsetsError
from sncli.offsets.document import Entries, moved_error, parse_document
from sncli.offsets.model import OffsetsCorruptError, StoredOffset, iso_utc, parse_key
from sncli.offsets.s3_store import (
    MAX_WRITE_ATTEMPTS,
    PreconditionFailedError,
    get_object,
    make_client,
    put_object,
    translate,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger("sncli.offsets")

LAYOUT = "per_key"
MARKER_VERSION = 2  # a document version older sncli refuses (they read version 1 only)
OBJECT_SUFFIX = ".json"
MAX_MIGRATION_ROUNDS = 5
LOAD_THREADS = 8

#: (entry, ETag) of a key as this store last saw it; (None, None) = absent, (None, etag) = a tombstone.
Seen = tuple[dict[str, Any] | None, str | None]


def objects_prefix(legacy_key: str) -> str:
    """Where the per-key objects of the store at ``legacy_key`` live."""
    return legacy_key + ".d/"


def render_entry(entry: dict[str, Any] | None) -> bytes:
    """One key's object: its entry as JSON, or empty (a tombstone) for a deleted key."""
    return b"" if entry is None else orjson.dumps(entry, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def parse_object(key: str, body: bytes, where: str) -> dict[str, Any] | None:
    """The entry in one key's object (None for a tombstone); anything else is OffsetsCorruptError (exit 2)."""
    if not body.strip():
        return None
    try:
        entry = orjson.loads(body)
        if not isinstance(entry, dict):
            raise ValueError("expected a JSON object")
        StoredOffset.from_json(key, entry)
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise OffsetsCorruptError(
            f"offsets {where} is corrupt: {exc}; fix or restore it (or empty it to start {key} over "
            f"from its `start`). sncli will not overwrite it"
        ) from None
    return entry


def is_marker(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("layout") == LAYOUT


def marker_document(objects: str, now: datetime) -> bytes:
    doc = {
        "version": MARKER_VERSION,
        "layout": LAYOUT,
        "objects": objects,
        "migrated_at": iso_utc(now),
        "note": "sncli keeps these offsets as one object per key under `objects`; this object only stops "
                "older sncli versions (which read document version 1) from using a stale copy",
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"


class S3KeyStore:
    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: S3Client | None = None,
    ) -> None:
        parts = urlsplit(url)
        self.url = url
        self.bucket = parts.netloc
        self.legacy_key = parts.path.lstrip("/")
        self.prefix = objects_prefix(self.legacy_key)
        self._endpoint_url = endpoint_url
        self._region = region
        self._client = client
        self._lock = threading.Lock()  # guards _seen and _client only; never held during I/O
        self._seen: dict[str, Seen] = {}
        self._migration_lock = threading.Lock()
        self._migrated = False

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def client(self) -> S3Client:
        with self._lock:
            if self._client is None:
                self._client = make_client(self._endpoint_url, self._region)
            return self._client

    def object_key(self, key: str) -> str:
        return f"{self.prefix}{key}{OBJECT_SUFFIX}"

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.object_key(key)}"

    # ------------------------------------------------------------------ reads

    def load(self, key: str) -> StoredOffset | None:
        self._ensure_migrated()
        entry, etag = self.read_key(key)
        self._remember(key, (entry, etag))
        return None if entry is None else StoredOffset.from_json(key, entry)

    def load_all(self) -> dict[str, StoredOffset]:
        self._ensure_migrated()
        listed = dict(self._list())
        found: dict[str, Seen] = {key: (None, etag) for key, (etag, size) in listed.items() if size == 0}
        wanted = [key for key, (_etag, size) in listed.items() if size != 0]
        if wanted:
            with ThreadPoolExecutor(max_workers=min(LOAD_THREADS, len(wanted)),
                                    thread_name_prefix="sncli-offsets-load") as pool:
                found.update(zip(wanted, pool.map(self.read_key, wanted), strict=True))
        with self._lock:
            for key in list(self._seen):
                if key not in found:
                    self._seen[key] = (None, None)
            self._seen.update(found)
        return {key: StoredOffset.from_json(key, entry) for key, (entry, _etag) in sorted(found.items())
                if entry is not None}

    # ------------------------------------------------------------------ writes

    def save(self, offset: StoredOffset) -> None:
        self._ensure_migrated()
        self._write(offset.key, offset.to_json())

    def delete(self, key: str) -> None:
        self._ensure_migrated()
        self._write(key, None)

    def _write(self, key: str, new: dict[str, Any] | None) -> None:
        """Conditional PUT of ``key``'s object; never overwrites a value another writer put there."""
        with self._lock:
            seen, etag = self._seen.get(key, (None, None))
        if seen == new:
            return  # nothing to change (as in the single object: judged by what this store last saw)
        what = f"cannot write offsets {self._where(key)}"
        for attempt in range(MAX_WRITE_ATTEMPTS):
            try:
                written = put_object(self.client, self.bucket, self.object_key(key), render_entry(new), etag, what)
            except PreconditionFailedError:
                current, current_etag = self.read_key(key)
                if current == new:
                    # Our previous PUT landed and its answer was lost (the SDK's retry got a 412),
                    # or the object holds this value anyway.
                    self._remember(key, (new, current_etag))
                    return
                if current != seen:
                    raise moved_error(key, self._where(key)) from None
                # Rewritten with the same value (a migration round): not a move; write on its new ETag.
                log.info("offsets %s was rewritten unchanged; writing %s again", self._where(key), key)
                etag = current_etag
                time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
                continue
            self._remember(key, (new, written))
            return
        raise OffsetsError(
            f"could not save offset {key} to {self._where(key)}: it was rewritten {MAX_WRITE_ATTEMPTS} times "
            f"in a row; nothing was overwritten, re-run to continue"
        )

    def _remember(self, key: str, seen: Seen) -> None:
        with self._lock:
            self._seen[key] = seen

    # ------------------------------------------------------------------ I/O

    def read_key(self, key: str) -> Seen:
        where = self._where(key)
        found = get_object(self.client, self.bucket, self.object_key(key), f"cannot read offsets {where}")
        if found is None:
            return None, None
        body, etag = found
        return parse_object(key, body, where), etag

    def _list(self) -> Iterator[tuple[str, tuple[str, int]]]:
        """(offset key, (ETag, size)) of every object under the prefix; foreign names are skipped."""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                for item in page.get("Contents", []):
                    name = item["Key"][len(self.prefix):]
                    key = name[: -len(OBJECT_SUFFIX)] if name.endswith(OBJECT_SUFFIX) else ""
                    try:
                        parse_key(key)
                    except ValueError:
                        log.warning("offsets: ignoring s3://%s/%s (not an offset key's object)",
                                    self.bucket, item["Key"])
                        continue
                    yield key, (item["ETag"], item["Size"])
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"cannot list offsets {self.location}") from None

    # ------------------------------------------------------------------ migration

    def _ensure_migrated(self) -> None:
        """Split the single object into per-key objects once per store (threads wait for the first)."""
        if self._migrated:
            return
        with self._migration_lock:
            if not self._migrated:
                migrate_single_object(self)
                self._migrated = True


def migrate_single_object(store: S3KeyStore, *, now: datetime | None = None) -> int:
    """Copy the single object's entries into per-key objects and fence it with the marker; returns keys copied.

    Safe to run by many processes at once and against running per-key writers
    (see the module doc); an older sncli that keeps changing the single object
    makes it fail after a few rounds instead of chasing it.
    """
    client, bucket, legacy = store.client, store.bucket, store.legacy_key
    where = f"s3://{bucket}/{legacy}"
    copied_before: Entries = {}
    copied = 0
    for _ in range(MAX_MIGRATION_ROUNDS):
        found = get_object(client, bucket, legacy, f"cannot read offsets {where}")
        etag: str | None = None
        entries: Entries = {}
        if found is not None:
            body, etag = found
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                doc = None
            if is_marker(doc):
                return copied
            entries = parse_document(body, where)  # corrupt: OffsetsCorruptError, nothing written
            for key, entry in sorted(entries.items()):
                copied += _copy_key(store, key, entry, copied_before.get(key))
        marker = marker_document(store.location, now or datetime.now(UTC))
        try:
            put_object(client, bucket, legacy, marker, etag, f"cannot write offsets {where}")
        except PreconditionFailedError:
            log.info("offsets %s changed while being split into %s; again", where, store.location)
            copied_before = entries
            continue
        if entries:
            log.warning("offsets %s: %d key(s) moved to one object per key under %s; the object now only "
                        "fences older sncli versions", where, len(entries), store.location)
        return copied
    raise OffsetsError(
        f"offsets {where} kept changing while sncli moved it to one object per key under {store.location}: "
        f"is an older sncli still writing it? Upgrade every writer (or set offsets.layout: single), then re-run"
    )


def _copy_key(store: S3KeyStore, key: str, entry: dict[str, Any], copied_before: dict[str, Any] | None) -> int:
    """Create ``key``'s object from the single object's ``entry``; 1 if this call wrote it.

    An existing object is kept (it is newer, or the same copy), unless it still
    holds ``copied_before``, what an earlier round copied from an older version of
    the single object: then the newer entry replaces it, on that object's ETag.
    """
    client, bucket, name = store.client, store.bucket, store.object_key(key)
    what = f"cannot write offsets s3://{bucket}/{name}"
    try:
        put_object(client, bucket, name, render_entry(entry), None, what)
        return 1
    except PreconditionFailedError:
        pass
    if copied_before is None or copied_before == entry:
        return 0
    current, etag = store.read_key(key)
    if current != copied_before or etag is None:
        return 0  # a per-key writer moved it since: theirs is newer
    try:
        put_object(client, bucket, name, render_entry(entry), etag, what)
    except PreconditionFailedError:
        return 0  # moved in between: keep theirs
    return 1
