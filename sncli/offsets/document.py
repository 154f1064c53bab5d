"""The JSON document the file store and the S3 store's ``single`` layout keep every key in::

    {"version": 1, "offsets": {"incident": {"version": 1, "table": "incident",
     "timestamp": "2024-05-01 12:00:00", "sys_id": "<32 hex>", "fingerprint": "<sha256>",
     "updated_at": "2024-05-01T12:00:03Z"}, "backfill/incident/<range>/0of4": {...}}}

and what every store shares to write conditionally per key: :class:`SeenValues`
remembers the value of each key as the store last saw it, and :func:`moved_error`
is the refusal when another writer changed it in between. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

import orjson

from sncli.offsets.model import DOCUMENT_VERSION, OffsetConflictError, OffsetsCorruptError, StoredOffset

Entries = dict[str, dict[str, Any]]


def parse_document(data: bytes, where: str) -> Entries:
    """The raw entries of a stored document; anything unexpected is OffsetsCorruptError (exit 2)."""

    def corrupt(why: str) -> OffsetsCorruptError:
        return OffsetsCorruptError(
            f"offsets {where} is corrupt: {why}; fix or restore it (or move it away to start every "
            f"table over from its `start`). sncli will not overwrite it"
        )

    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise corrupt(f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise corrupt("expected a JSON object")
    if doc.get("layout") == "per_key":
        raise OffsetsCorruptError(
            f"offsets {where} were moved to one object per key under {doc.get('objects')}; "
            f"remove `layout: single` from the offsets config to use them. sncli will not overwrite it"
        )
    version = doc.get("version")
    if version != DOCUMENT_VERSION:
        raise OffsetsCorruptError(
            f"offsets {where} has document version {version!r}, this sncli reads version {DOCUMENT_VERSION}; "
            f"use the sncli that wrote it, or move it away to start every table over. sncli will not overwrite it"
        )
    entries = doc.get("offsets")
    if not isinstance(entries, dict):
        raise corrupt("'offsets' must be an object")
    for key, entry in entries.items():
        try:
            StoredOffset.from_json(key, entry)
        except ValueError as exc:
            raise corrupt(str(exc)) from None
    return entries


def render_document(entries: Entries) -> bytes:
    doc = {"version": DOCUMENT_VERSION, "offsets": dict(sorted(entries.items()))}
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"


def to_offsets(entries: Entries) -> dict[str, StoredOffset]:
    return {key: StoredOffset.from_json(key, entry) for key, entry in entries.items()}


def moved_error(key: str, where: str) -> OffsetConflictError:
    return OffsetConflictError(
        f"another writer moved the offset for {key} in {where} since this run read it; "
        f"not overwriting it. Is another sncli running without the run lock? Re-run to continue from the stored offset"
    )


class SeenValues:
    """The value of each key as this store last saw it: the precondition of its next write."""

    def __init__(self) -> None:
        self._values: dict[str, dict[str, Any] | None] = {}

    def remember(self, key: str, entry: dict[str, Any] | None) -> None:
        self._values[key] = entry

    def remember_all(self, entries: Entries) -> None:
        for key in list(self._values):
            if key not in entries:
                self._values[key] = None
        for key, entry in entries.items():
            self._values[key] = entry

    def unchanged(self, key: str, current: dict[str, Any] | None) -> bool:
        """True if ``current`` is what we last saw (an unseen key is expected to be absent)."""
        return self._values.get(key) == current
