"""Offsets in one S3 object (`offsets.layout: single`), written only with conditional PUTs.

Every PUT carries ``If-Match: <ETag we read>`` (or ``If-None-Match: *`` when the
object does not exist yet), so two writers can never silently overwrite each
other. On 412 the document is read again: if only other keys changed, ours is
merged in and the PUT retried (a bounded number of times); if our own key was
moved by someone else, the save fails with OffsetConflictError and the object
is left as the other writer made it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from sncli.errors import ConfigError, OffsetsError
from sncli.offsets.document import Entries, SeenValues, moved_error, parse_document, render_document, to_offsets
from sncli.offsets.model import StoredOffset

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger("sncli.offsets")

MAX_WRITE_ATTEMPTS = 10
_PRECONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412", "409"}


class PreconditionFailedError(Exception):
    """The object is not what our condition said (412/409, or gone under an If-Match)."""


def make_client(endpoint_url: str | None, region: str | None) -> S3Client:
    """A boto3 S3 client; credentials come from the usual AWS environment/profile chain."""
    # Lazy: boto3 (and botocore's config, which loads its data files) is the second slowest import
    # sncli has, and a run on the file store never makes a client.
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=30)
    client: S3Client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
    return client


def error_code(exc: BaseException) -> str:
    response: Any = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status:
            return str(status)
    return type(exc).__name__


def translate(exc: Exception, what: str) -> Exception:
    """Turn a boto error into one line an operator can act on (never includes credentials)."""
    if isinstance(exc, NoCredentialsError):
        return ConfigError(
            f"{what}: no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            f"AWS_PROFILE, or an instance/pod role)"
        )
    if isinstance(exc, ClientError):
        message = exc.response.get("Error", {}).get("Message", "")
        return OffsetsError(f"{what}: {error_code(exc)} {message}".rstrip())
    if isinstance(exc, BotoCoreError):
        return OffsetsError(f"{what}: {exc}")
    return exc


def is_precondition_failure(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and error_code(exc) in _PRECONDITION_CODES


def is_missing(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and error_code(exc) in {"NoSuchKey", "404", "NotFound"}


def get_object(client: S3Client, bucket: str, key: str, what: str) -> tuple[bytes, str] | None:
    """(body, ETag), or None when the object does not exist."""
    try:
        response = client.get_object(Bucket=bucket, Key=key)
        return response["Body"].read(), response["ETag"]
    except (ClientError, BotoCoreError) as exc:
        if is_missing(exc):
            return None
        raise translate(exc, what) from None


def put_object(client: S3Client, bucket: str, key: str, body: bytes, etag: str | None, what: str) -> str:
    """Conditional PUT; returns the new ETag or raises PreconditionFailedError."""
    try:
        if etag is None:
            response = client.put_object(
                Bucket=bucket, Key=key, Body=body, ContentType="application/json", IfNoneMatch="*"
            )
        else:
            response = client.put_object(
                Bucket=bucket, Key=key, Body=body, ContentType="application/json", IfMatch=etag
            )
    except (ClientError, BotoCoreError) as exc:
        if is_precondition_failure(exc):
            raise PreconditionFailedError(error_code(exc)) from None
        raise translate(exc, what) from None
    return response["ETag"]


class S3Store:
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
        self.key = parts.path.lstrip("/")
        self._endpoint_url = endpoint_url
        self._region = region
        self._client = client
        self._lock = threading.Lock()
        self._seen = SeenValues()
        self._entries: Entries | None = None  # the document as of our last read or write
        self._etag: str | None = None

    @property
    def location(self) -> str:
        return self.url

    @property
    def client(self) -> S3Client:
        if self._client is None:
            self._client = make_client(self._endpoint_url, self._region)
        return self._client

    # ------------------------------------------------------------------ reads

    def load(self, key: str) -> StoredOffset | None:
        with self._lock:
            entry = self._refresh().get(key)
            self._seen.remember(key, entry)
        return None if entry is None else StoredOffset.from_json(key, entry)

    def load_all(self) -> dict[str, StoredOffset]:
        with self._lock:
            entries = self._refresh()
            self._seen.remember_all(entries)
        return to_offsets(entries)

    # ------------------------------------------------------------------ writes

    def save(self, offset: StoredOffset) -> None:
        self._update(offset.key, offset.to_json())

    def delete(self, key: str) -> None:
        self._update(key, None)

    def _update(self, key: str, new: dict[str, Any] | None) -> None:
        with self._lock:
            entries = self._entries if self._entries is not None else self._refresh()
            for attempt in range(MAX_WRITE_ATTEMPTS):
                current = entries.get(key)
                if current == new:
                    # Nothing to change, or our previous PUT landed and its answer was lost
                    # (the SDK's retry then got a 412): either way the object holds our value.
                    self._seen.remember(key, new)
                    return
                if not self._seen.unchanged(key, current):
                    raise moved_error(key, self.location)
                candidate = {k: v for k, v in entries.items() if k != key}
                if new is not None:
                    candidate[key] = new
                try:
                    etag = put_object(
                        self.client, self.bucket, self.key, render_document(candidate), self._etag,
                        f"cannot write offsets {self.location}",
                    )
                except PreconditionFailedError:
                    log.info("offsets %s changed under us while saving %s; re-reading", self.location, key)
                    time.sleep(random.uniform(0, 0.02 * (attempt + 1)))
                    entries = self._refresh()
                    continue
                self._entries, self._etag = candidate, etag
                self._seen.remember(key, new)
                return
        raise OffsetsError(
            f"could not save offset {key} to {self.location}: other writers changed the object "
            f"{MAX_WRITE_ATTEMPTS} times in a row; nothing was overwritten, re-run to continue"
        )

    # ------------------------------------------------------------------ I/O

    def _refresh(self) -> Entries:
        found = get_object(self.client, self.bucket, self.key, f"cannot read offsets {self.location}")
        if found is None:
            self._entries, self._etag = {}, None
        else:
            body, etag = found
            self._entries, self._etag = parse_document(body, self.location), etag
        return self._entries
