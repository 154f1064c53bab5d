"""Backfill output to Parquet: one file per window, streamed, all-string columns.

Why all strings: ServiceNow sends every value as a string, and a backfill file
should hold exactly what ServiceNow said (typing is a reader's choice). Columns
are the union of the fields seen: the schema of a Parquet file is fixed when it
is opened, so a column that first appears in a later page closes the current
part and opens the next one (``...-part1.parquet``) with the wider schema, so
nothing is dropped. Read a directory with one unified schema, e.g. with pyarrow:
``ds.dataset(files, schema=pa.unify_schemas([pq.read_schema(f) for f in files]))``
(missing columns read as null). The Table API returns every column of a table on
every record, so in practice a new part appears only when a column is added to
the table during the backfill.

Memory stays constant: rows are buffered up to ``row_group_rows`` and written as
one row group. Files are written under a ``.tmp`` name and renamed only when
the window is complete, so a file with the final name is always whole; an
interrupted window leaves only ``.tmp`` files, which the next attempt replaces.
The files hold whole records: they are created 0600, new directories 0700
(sncli.private_files).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from sncli.private_files import create_private, make_dirs

TMP_SUFFIX = ".tmp"


def window_file(directory: Path, table: str, index: int, count: int, part: int = 0) -> Path:
    name = f"{table}-w{index}of{count}" + (f"-part{part}" if part else "") + ".parquet"
    return directory / name


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


class ParquetWindowWriter:
    def __init__(self, directory: Path, table: str, index: int, count: int, *, row_group_rows: int = 10_000) -> None:
        self.directory = directory
        self.table = table
        self.index = index
        self.count = count
        self.row_group_rows = row_group_rows
        self.columns: list[str] = []
        self.rows = 0
        self._writer: Any = None
        self._file: IO[bytes] | None = None  # the open .tmp file the writer writes to
        self._part = 0
        self._parts: list[Path] = []
        self._buffer: list[dict[str, Any]] = []
        make_dirs(directory)
        # A window is always written from its start: files of an earlier attempt go.
        self._remove(f"{self._prefix}.parquet", f"{self._prefix}-part*.parquet")
        self._remove_leftovers()

    @property
    def _prefix(self) -> str:
        return f"{self.table}-w{self.index}of{self.count}"

    def _remove(self, *patterns: str) -> None:
        for pattern in patterns:
            for path in self.directory.glob(pattern):
                path.unlink(missing_ok=True)

    def _remove_leftovers(self) -> None:
        self._remove(f"{self._prefix}.parquet{TMP_SUFFIX}", f"{self._prefix}-part*.parquet{TMP_SUFFIX}")

    def write(self, records: Sequence[dict[str, Any]]) -> int:
        """Buffer a page (flushing full row groups); returns the number of records taken."""
        new = {k for r in records for k in r} - set(self.columns)
        if new:
            self._flush()
            self._close_part()
            self.columns = _ordered([*self.columns, *new], keep=self.columns)
        self._buffer.extend(records)
        if len(self._buffer) >= self.row_group_rows:
            self._flush()
        self.rows += len(records)
        return len(records)

    def _flush(self) -> None:
        if not self._buffer:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([(c, pa.string()) for c in self.columns])
        arrays = [pa.array([_text(r.get(c)) for r in self._buffer], type=pa.string()) for c in self.columns]
        batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
        if self._writer is None:
            path = window_file(self.directory, self.table, self.index, self.count, self._part)
            tmp = path.with_name(path.name + TMP_SUFFIX)
            self._file = open(create_private(tmp), "wb")  # noqa: SIM115 (closed in _close_part / abort)
            self._writer = pq.ParquetWriter(self._file, schema, compression="zstd")
            self._parts.append(path)
        self._writer.write_batch(batch)
        self._buffer = []

    def _close_part(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._writer = None
                self._close_file()
            self._part += 1

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None

    def finish(self) -> list[Path]:
        """Write what is buffered, close, and give every part its final name (the window is complete)."""
        self._flush()
        self._close_part()
        for path in self._parts:
            os.replace(path.with_name(path.name + TMP_SUFFIX), path)
        return list(self._parts)

    def abort(self) -> None:
        """The window did not complete: drop the partial files (the next attempt redoes the window)."""
        self._buffer = []
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._writer = None
                self._close_file()
        self._remove_leftovers()


def _ordered(columns: list[str], *, keep: list[str]) -> list[str]:
    """Existing columns keep their position; new ones follow, sys_id first in a fresh file."""
    fresh = sorted(c for c in columns if c not in keep)
    if not keep and "sys_id" in fresh:
        fresh.remove("sys_id")
        fresh.insert(0, "sys_id")
    return [*keep, *fresh]
