"""What ``dlq inspect`` and ``dlq export`` show: the selected records, their signatures checked.

pyarrow is imported inside the Parquet functions: it is the heaviest import of
the package and only ``dlq export --format parquet`` needs it.
"""

from __future__ import annotations

import base64
import heapq
import os
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from sncli.config import KafkaSettings
from sncli.dlq.reader import read_view
from sncli.dlq.record import DlqEntry, format_timestamp
from sncli.dlq.select import Filters, View
from sncli.dlq.signing import DlqSigner
from sncli.errors import UsageError
from sncli.private_files import create_private, make_dirs

if TYPE_CHECKING:
    import pyarrow as pa

EXPORT_FORMATS = ("parquet", "jsonl")


def with_signatures(entries: Iterable[DlqEntry], signer: DlqSigner | None) -> Iterator[DlqEntry]:
    """The entries with their signature checked (``valid``, ``unsigned``, ...); unchanged without a signer."""
    for entry in entries:
        yield entry if signer is None else replace(
            entry, signature=signer.verify(entry.key, entry.value, entry.headers))


def inspect_dlq(
    kafka: KafkaSettings, topic: str, filters: Filters, limit: int, *, view: View | None = None,
    signer: DlqSigner | None = None,
) -> list[DlqEntry]:
    """The ``limit`` most recently dead-lettered records that match, oldest first."""
    newest: list[tuple[tuple[str, int, int], DlqEntry]] = []
    for entry in with_signatures(read_view(kafka, topic, view or View()), signer):
        if not filters.matches(entry):
            continue
        when = format_timestamp(entry.dead_lettered_at) if entry.dead_lettered_at else ""
        item = ((when, entry.partition, entry.offset), entry)
        if len(newest) < limit:
            heapq.heappush(newest, item)
        elif item[0] > newest[0][0]:
            heapq.heapreplace(newest, item)
    return [entry for _key, entry in sorted(newest, key=lambda pair: pair[0])]


# --------------------------------------------------------------------------- export


def export_dlq(
    kafka: KafkaSettings,
    topic: str,
    filters: Filters,
    output: Path,
    fmt: str,
    *,
    view: View | None = None,
    batch_rows: int = 1000,
    signer: DlqSigner | None = None,
) -> int:
    """Write the matching DLQ records, one row each with the error headers as columns; returns the count.

    The file is written next to its final name and renamed into place at the end,
    so a failed export never leaves a half-written file that looks complete.
    The file holds whole records: it is created 0600 (new directories 0700).
    """
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    make_dirs(output.parent)
    partial = output.with_name(output.name + ".partial")
    entries = (e for e in with_signatures(read_view(kafka, topic, view or View()), signer) if filters.matches(e))
    try:
        count = _write_parquet(entries, partial, batch_rows) if fmt == "parquet" else _write_jsonl(entries, partial)
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return count


def _write_jsonl(entries: Iterable[DlqEntry], path: Path) -> int:
    count = 0
    with open(create_private(path), "wb") as out:
        for entry in entries:
            row = entry.as_row()
            for name, raw in (("key", entry.key), ("value", entry.value)):
                row[name], row[f"{name}_encoding"] = _text_or_base64(raw)
            out.write(orjson.dumps(row) + b"\n")
            count += 1
    return count


def _text_or_base64(raw: bytes | None) -> tuple[str | None, str | None]:
    if raw is None:
        return None, None
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def _parquet_row(entry: DlqEntry) -> dict[str, Any]:
    """``as_row`` with the types the Parquet schema wants: raw key/value bytes, times, headers as JSON text."""
    row = entry.as_row()
    row["headers"] = orjson.dumps(row["headers"]).decode()
    row["key"], row["value"] = entry.key, entry.value
    row["kafka_timestamp"] = entry.kafka_timestamp_ms and datetime.fromtimestamp(entry.kafka_timestamp_ms / 1000, UTC)
    row["error_timestamp"] = entry.dead_lettered_at
    return row


def _parquet_schema() -> pa.Schema:
    import pyarrow as pa  # see the module docstring

    ts = pa.timestamp("ms", tz="UTC")
    return pa.schema([
        ("partition", pa.int32()), ("offset", pa.int64()), ("kafka_timestamp", ts),
        ("error_class", pa.string()), ("error_message", pa.string()), ("error_status", pa.int32()),
        ("error_topic", pa.string()), ("error_partition", pa.int32()), ("error_offset", pa.int64()),
        ("error_table", pa.string()), ("error_attempts", pa.int32()), ("error_timestamp", ts),
        ("replay_count", pa.int32()), ("sys_id", pa.string()), ("pending", pa.bool_()),
        ("problems", pa.list_(pa.string())), ("signature", pa.string()),
        ("key", pa.binary()), ("value", pa.binary()), ("headers", pa.string()),
    ])


def _write_parquet(entries: Iterable[DlqEntry], path: Path, batch_rows: int) -> int:
    import pyarrow as pa  # see the module docstring
    import pyarrow.parquet as pq

    schema = _parquet_schema()
    count = 0
    batch: list[dict[str, Any]] = []
    with open(create_private(path), "wb") as out, pq.ParquetWriter(out, schema) as writer:
        for entry in entries:
            batch.append(_parquet_row(entry))
            count += 1
            if len(batch) >= batch_rows:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        if batch or count == 0:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    return count
