"""The offset store contract, and choosing a store from the config.

The file store and the S3 store's ``single`` layout keep every key in one JSON
document (:mod:`sncli.offsets.document`); the S3 ``per_key`` layout, the default,
keeps each key's entry in its own object (:mod:`sncli.offsets.s3_key_store`).

Writes are conditional per key: a store remembers the value of each key it last
saw (``load``/``load_all``/``save``/``delete``) and refuses to write a key that
another writer changed in between (OffsetConflictError), while keys changed by
others are kept. A key this store never loaded is expected to be absent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from sncli.offsets.file_store import FileStore
from sncli.offsets.model import StoredOffset
from sncli.offsets.s3_key_store import S3KeyStore
from sncli.offsets.s3_store import S3Store

if TYPE_CHECKING:
    from sncli.config import FileOffsets, S3Offsets, Settings


class OffsetStore(Protocol):
    @property
    def location(self) -> str:
        """Where the document lives (a path or s3:// URL), for messages."""
        ...

    def load(self, key: str) -> StoredOffset | None: ...

    def load_all(self) -> dict[str, StoredOffset]: ...

    def save(self, offset: StoredOffset) -> None: ...

    def delete(self, key: str) -> None: ...


def open_store(settings: Settings) -> OffsetStore:
    """The configured store: ``offsets.store: file`` or ``s3``."""
    return open_store_from(settings.offsets)


def open_store_from(offsets: FileOffsets | S3Offsets) -> OffsetStore:
    if offsets.store == "file":
        return FileStore(offsets.path)
    if offsets.layout == "single":
        return S3Store(offsets.url, endpoint_url=offsets.endpoint_url, region=offsets.region)
    return S3KeyStore(offsets.url, endpoint_url=offsets.endpoint_url, region=offsets.region)
