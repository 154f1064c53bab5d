"""Stored source progress: offset records, the file and S3 stores, and the run lock.

Heavy dependencies (boto3) are imported only when an S3 store or lease is used.
"""

from sncli.offsets.lock import Holder, RunLock, run_lock
from sncli.offsets.model import (
    OFFSET_VERSION,
    OffsetConflictError,
    OffsetMismatchError,
    OffsetsCorruptError,
    StoredOffset,
    backfill_key,
    backfill_prefix,
    check_offset,
    parse_key,
    poll_key,
)
from sncli.offsets.store import OffsetStore, open_store

__all__ = [
    "OFFSET_VERSION",
    "Holder",
    "OffsetConflictError",
    "OffsetMismatchError",
    "OffsetStore",
    "OffsetsCorruptError",
    "RunLock",
    "StoredOffset",
    "backfill_key",
    "backfill_prefix",
    "check_offset",
    "open_store",
    "parse_key",
    "poll_key",
    "run_lock",
]
