"""Reading and writing table shards: Parquet files stamped with their schema, written atomically.

Layout of a run folder: ``<out>/<dataset>/<shard>.parquet``. A dataset is a folder of shards of
one schema; ``dropped`` and ``errors`` get one sub-folder per stage (``<out>/errors/<stage>/``)
because several stages write them.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from blift import schemas, storage
from blift.errors import SchemaError
from blift.storage import RunPath, RunPathT

META_RELEASE_COLUMNS = b"blift.release_columns"  # columns a release adds to a table (scene replay, image bytes)
# Files are readable by others like any file this process creates (mkstemp alone gives 0600).
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK

# Deterministic writer settings: same table in, same bytes out (resume must be byte-identical).
_WRITE_OPTS: dict[str, Any] = {"compression": "zstd", "write_statistics": True, "use_dictionary": True}


def atomic_write_bytes(path: RunPath, data: bytes) -> None:
    """Never a half-written file: a temporary name then a rename locally, one object PUT on an
    object store (:mod:`blift.storage`)."""
    storage.write_bytes(path, data, _FILE_MODE)


def swap_folder(tmp: Path, out_dir: Path, *, old_prefix: str = "old") -> None:
    """Replace the folder ``out_dir`` (if any) by the finished folder ``tmp``: two renames, the old
    one removed only after the swap, so ``out_dir`` is always the old or the new complete folder.

    Between the renames the old folder waits as ``.<name>.<old_prefix>-<pid>-<ns>`` beside
    ``out_dir``: a caller that recovers from a crash there (``blift.release.takedown.recover``)
    picks its own prefix to find it."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.{old_prefix}-{os.getpid()}-{time.monotonic_ns()}"
        os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.rename(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_parquet(path: RunPath, table: pa.Table, *, row_group_size: int | None = None) -> None:
    """Write Parquet to a local temporary file (next to ``path`` when local), fsync, then commit
    it: a rename, or an upload when ``path`` is on an object store."""
    tmp = storage.scratch_file(path)
    try:
        os.chmod(tmp, _FILE_MODE)
        pq.write_table(table, tmp, row_group_size=row_group_size, **_WRITE_OPTS)
        storage.commit_file(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_shard(path: RunPath, table: pa.Table, schema_name: str, *, row_group_size: int | None = None) -> pa.Table:
    """Conform ``table`` to its schema, validate it and write it atomically. Returns the table written."""
    schema = schemas.get(schema_name)
    table = schema.conform(table, where=f"{path}: ")
    table = table.replace_schema_metadata(schema.arrow.metadata)
    atomic_write_parquet(path, table, row_group_size=row_group_size)
    return table


def write_rows(path: RunPath, rows: list[dict[str, Any]], schema_name: str) -> pa.Table:
    table = schemas.get(schema_name).from_rows(rows, where=f"{path}: ")
    return write_shard(path, table, schema_name)


def read_parquet(path: RunPath, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file as a table, local or on an fsspec filesystem (one GET: shards are read whole)."""
    if storage.is_remote(path):
        return pq.read_table(pa.BufferReader(path.fs.cat_file(path.path)), columns=columns)
    return pq.read_table(path, columns=columns)


def read_shard(path: RunPath, expected: str | None = None) -> pa.Table:
    """Read a shard, checking its schema stamp (and that it is ``expected`` when given)."""
    try:
        table = read_parquet(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise SchemaError(f"{path}: not a readable Parquet file ({exc})") from exc
    schema = schemas.schema_of_file_metadata(table.schema.metadata, where=str(path))
    if expected is not None and schema.name != expected:
        raise SchemaError(f"{path}: holds table {schema.name!r}, expected {expected!r}")
    table = schema.upgrade(table, schemas.file_version(table.schema.metadata) or schema.version)
    meta = table.schema.metadata or {}
    omitted = meta.get(schemas.META_OMITTED, b"").decode()
    # A release shard may carry columns the release adds (named in its metadata); the table's
    # own columns are validated, the added ones are the release's business.
    added = [c for c in meta.get(META_RELEASE_COLUMNS, b"").decode().split(",") if c in table.column_names]
    checked = table.drop_columns(added) if added else table
    schema.validate(checked, where=f"{path}: ", omitted=frozenset(filter(None, omitted.split(","))))
    return table


def shard_paths(folder: RunPathT) -> list[RunPathT]:
    """Finished shards of a dataset folder, sorted (temporary files are ignored)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def read_dataset(folder: RunPath, expected: str | None = None) -> pa.Table:
    """All shards of a dataset folder as one table (recursing into per-stage sub-folders)."""
    paths = sorted(p for p in folder.rglob("*.parquet") if not p.name.startswith("."))
    if not paths:
        if expected is None:
            raise SchemaError(f"{folder}: no shards")
        return schemas.get(expected).empty()
    return pa.concat_tables([read_shard(p, expected) for p in paths])
