"""Where stream stages write: rows bucketed into co-partitioned shards of a run folder, in bounded memory.

``write(dataset, bucket, rows)`` appends to a per-(dataset, bucket) Parquet file under a temporary,
dot-prefixed name (readers and reruns ignore those). Small writes are buffered per bucket and
flushed as row groups of about ``row_group_bytes``; when all buffers together pass
``buffer_bytes`` the biggest are flushed early, so memory does not grow with the bucket count
either. A temporary file is rolled over every ``row_groups_per_file`` row groups, because a
Parquet writer keeps every row group's metadata until it closes, and at most ``max_open_files``
are open at once (each holds buffers), so memory depends neither on the input size nor on the
number of buckets.

``close(stage)`` turns each bucket's temporary files into one final shard
``<dataset>/<prefix>-<bucket:05d>.parquet`` through ``stage.finalize_bucket`` (dedupe, sort,
derived columns; memory is one bucket) and :func:`blift.tables.write_shard` (atomic). Every
bucket gets a shard, empty ones included, so co-partitioned stages downstream find every shard
id. Dropped rows and errors stream to ``dropped/<stage>/`` and ``errors/<stage>/`` the same way.
After a crash only temporary files remain; the next run deletes and rewrites them.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from blift import schemas
from blift.errors import ConfigError
from blift.stage import RecordFailure, StreamStage
from blift.tables import write_shard

_TMP_SUFFIX = ".stream.tmp"
# Temporary files are read back once, by finalize. Uncompressed: the bulk of stream rows is already
# compressed (``raw``), and lz4 made reading back 5x slower for no real saving (measured).
_TMP_OPTS: dict[str, Any] = {"compression": "none", "use_dictionary": False, "write_statistics": False}
# Final dropped / errors shards are written in place of write_shard (they stream): same settings.
_FINAL_OPTS: dict[str, Any] = {"compression": "zstd", "write_statistics": True, "use_dictionary": True}


class _RollingWriter:
    """A Parquet writer over temporary files that rolls over every ``max_groups`` row groups."""

    def __init__(self, folder: Path, stem: str, schema: pa.Schema, max_groups: int, opts: dict[str, Any]) -> None:
        self.folder, self.stem, self.schema, self.max_groups, self.opts = folder, stem, schema, max_groups, opts
        self.paths: list[Path] = []
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._groups = 0

    def write(self, table: pa.Table) -> None:
        if self._writer is None or self._groups >= self.max_groups:  # closed (or never opened): next file
            self.close()
            path = self.folder / f".{self.stem}.{len(self.paths)}{_TMP_SUFFIX}"
            self.folder.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(path, self.schema, **self.opts)
            self.paths.append(path)
            self._groups = 0
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self._groups += 1
        self.rows += table.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def remove(self) -> None:
        try:
            self.close()
        finally:
            for path in self.paths:
                path.unlink(missing_ok=True)


class BucketSink:
    """A :class:`blift.stage.ShardSink` writing a stream stage's buckets into a run folder.

    ``write`` takes row dicts (the ShardSink contract) or, to skip a conversion round trip, an
    Arrow table already in the dataset's schema (``accepts_tables``).
    """

    accepts_tables = True

    def __init__(self, run_dir: Path | str, stage_name: str, outputs: dict[str, str], buckets: int,
                 shard_prefix: str = "part", *, input_shard: str = "requests", row_group_bytes: int = 2 << 20,
                 buffer_bytes: int = 16 << 20, row_groups_per_file: int = 256, max_open_files: int = 16) -> None:
        if buckets < 1:
            raise ConfigError(f"{stage_name}: buckets must be >= 1, got {buckets}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", shard_prefix) or shard_prefix.startswith("."):
            raise ConfigError(f"{stage_name}: shard prefix {shard_prefix!r}: use letters, digits, '-', '_' or '.'")
        self.run_dir = Path(run_dir)
        self.stage_name = stage_name
        self.outputs = dict(outputs)
        self.buckets = buckets
        self.prefix = shard_prefix
        self.input_shard = input_shard
        self.row_group_bytes = row_group_bytes
        self.buffer_bytes = buffer_bytes
        self.row_groups_per_file = row_groups_per_file
        self.max_open_files = max(1, max_open_files)
        self._open: dict[tuple[str, int], None] = {}  # writers with an open file, least recent first
        self._schemas = {ds: schemas.get(name) for ds, name in self.outputs.items()}
        self._pending: dict[tuple[str, int], list[pa.Table]] = {}
        self._pending_bytes: Counter = Counter()
        self._total_pending = 0
        self._writers: dict[tuple[str, int], _RollingWriter] = {}
        self._dropped = self._side("dropped")
        self._errors = self._side("errors")
        self._side_rows: dict[str, list[dict[str, Any]]] = {"dropped": [], "errors": []}
        self.dropped_by_reason: Counter = Counter()
        self.errors_by_class: Counter = Counter()
        self._closed = False
        self._clear_temps()

    # ------------------------------------------------------------------------------- paths

    def _folders(self) -> list[Path]:
        return [self.run_dir / ds for ds in self.outputs] + [
            self.run_dir / side / self.stage_name for side in ("dropped", "errors")]

    def _clear_temps(self) -> None:
        """Remove this sink's temporary files left by a crashed run (only names it would write)."""
        pattern = re.compile(rf"\.{re.escape(self.prefix)}-(?:\d{{5}}|side)\.parquet\.\d+{re.escape(_TMP_SUFFIX)}")
        for folder in self._folders():
            if folder.is_dir():
                for path in folder.iterdir():
                    if pattern.fullmatch(path.name):
                        path.unlink(missing_ok=True)

    def shard_name(self, bucket: int) -> str:
        return f"{self.prefix}-{bucket:05d}"

    def _side(self, side: str) -> _RollingWriter:
        return _RollingWriter(self.run_dir / side / self.stage_name, f"{self.prefix}-side.parquet",
                              schemas.get(side).arrow, self.row_groups_per_file, _FINAL_OPTS)

    # ------------------------------------------------------------------------------- ShardSink

    def write(self, dataset: str, bucket: int, rows: list[dict[str, Any]] | pa.Table) -> None:
        """Buffer rows of ``dataset`` for ``bucket``; flushes keep memory bounded."""
        self._check_open()
        schema = self._schemas.get(dataset)
        if schema is None:
            raise ConfigError(f"{self.stage_name}: wrote to dataset {dataset!r}, which is not one of its outputs {sorted(self.outputs)}")
        if not 0 <= bucket < self.buckets:
            raise ConfigError(f"{self.stage_name}: bucket {bucket} out of range 0..{self.buckets - 1}")
        where = f"{self.stage_name} {dataset} {self.shard_name(bucket)}: "
        if isinstance(rows, pa.Table):
            if rows.schema.equals(schema.arrow, check_metadata=False):
                schema.validate(rows, where=where)  # already conformed (the usual case): check nulls only
                table = rows
            else:
                table = schema.conform(rows, where=where)
        else:
            if not rows:
                return
            table = schema.from_rows(rows, where=where)
        if table.num_rows == 0:
            return
        key = (dataset, bucket)
        size = table.nbytes
        self._pending.setdefault(key, []).append(table)
        self._pending_bytes[key] += size
        self._total_pending += size
        if self._pending_bytes[key] >= self.row_group_bytes:
            self._flush(key)
        while self._total_pending > self.buffer_bytes and self._pending_bytes:
            self._flush(max(self._pending_bytes, key=self._pending_bytes.__getitem__))

    def drop(self, rows: list[dict[str, Any]]) -> None:
        """Record dropped rows (``dropped`` schema); they stream to disk in batches."""
        self._check_open()
        for row in rows:
            self.dropped_by_reason[row.get("reason")] += 1
        self._side_add("dropped", rows)

    def fail(self, failure: RecordFailure) -> None:
        """Record one failed record as an ``errors`` row."""
        self._check_open()
        error_class = getattr(failure.error_class, "value", failure.error_class)
        self.errors_by_class[error_class] += 1
        self._side_add("errors", [{
            "stage": self.stage_name, "shard": self.input_shard, "record_key": failure.record_key,
            "error_class": error_class, "error_type": failure.error_type, "message": failure.message,
            "attempts": failure.attempts,
        }])

    # ------------------------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.stage_name}: sink already closed")

    def _flush(self, key: tuple[str, int]) -> None:
        tables = self._pending.pop(key, [])
        self._total_pending -= self._pending_bytes.pop(key, 0)
        if not tables:
            return
        writer = self._writers.get(key)
        if writer is None:
            dataset, bucket = key
            writer = self._writers[key] = _RollingWriter(
                self.run_dir / dataset, f"{self.shard_name(bucket)}.parquet",
                self._schemas[dataset].arrow, self.row_groups_per_file, _TMP_OPTS)
        writer.write(pa.concat_tables(tables))
        # An open Parquet file holds buffers of its own: with many buckets, keep only the most
        # recently written few open; a closed bucket's next flush starts its next temporary file.
        self._open.pop(key, None)
        self._open[key] = None
        while len(self._open) > self.max_open_files:
            oldest = next(iter(self._open))
            del self._open[oldest]
            self._writers[oldest].close()

    def _side_add(self, side: str, rows: list[dict[str, Any]]) -> None:
        buf = self._side_rows[side]
        buf.extend(rows)
        if len(buf) >= 10_000:
            self._side_flush(side)

    def _side_flush(self, side: str) -> None:
        buf = self._side_rows[side]
        if buf:
            writer = self._dropped if side == "dropped" else self._errors
            writer.write(schemas.get(side).from_rows(buf, where=f"{self.stage_name} {side}: "))
            self._side_rows[side] = []

    # ------------------------------------------------------------------------------- finish

    def close(self, stage: StreamStage) -> dict[str, Any]:
        """Finalize every bucket into its shard, publish dropped/errors, remove temporary files."""
        self._check_open()
        try:
            for key in list(self._pending):
                self._flush(key)
            for writer in self._writers.values():
                writer.close()
            summary: dict[str, Any] = {"stage": self.stage_name, "datasets": {}}
            for dataset, schema_name in self.outputs.items():
                shards = summary["datasets"][dataset] = {}
                for bucket in range(self.buckets):
                    shards[self.shard_name(bucket)] = self._finalize(stage, dataset, schema_name, bucket)
                self._remove_stale(self.run_dir / dataset, self.buckets)
            summary["dropped"] = dict(sorted(self.dropped_by_reason.items()))
            summary["errors"] = dict(sorted(self.errors_by_class.items()))
            summary["dropped_files"] = self._publish_side("dropped")
            summary["error_files"] = self._publish_side("errors")
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return summary

    def _finalize(self, stage: StreamStage, dataset: str, schema_name: str, bucket: int) -> dict[str, Any]:
        writer = self._writers.pop((dataset, bucket), None)
        schema = self._schemas[dataset]
        if writer is None:
            table = schema.empty()
        else:
            parts = [pq.read_table(p, schema=schema.arrow) for p in writer.paths]
            table = pa.concat_tables(parts) if parts else schema.empty()
        table = stage.finalize_bucket(dataset, table)
        path = self.run_dir / dataset / f"{self.shard_name(bucket)}.parquet"
        written = write_shard(path, table, schema_name)
        if writer is not None:
            writer.remove()
        return {"path": str(path), "rows": written.num_rows}

    def _publish_side(self, side: str) -> list[str]:
        """Rename the streamed side files to final shard names (at least one, possibly empty)."""
        self._side_flush(side)
        writer = self._dropped if side == "dropped" else self._errors
        writer.close()
        folder = self.run_dir / side / self.stage_name
        if not writer.paths:
            write_shard(folder / f"{self.shard_name(0)}.parquet", schemas.get(side).empty(), side)
            count = 1
        else:
            for i, tmp in enumerate(writer.paths):
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
                os.replace(tmp, folder / f"{self.shard_name(i)}.parquet")
            count = len(writer.paths)
            writer.paths = []
        self._remove_stale(folder, count)
        return [str(folder / f"{self.shard_name(i)}.parquet") for i in range(count)]

    def _remove_stale(self, folder: Path, count: int) -> None:
        """Shards of an earlier run with more buckets would pass for this run's: remove them."""
        pattern = re.compile(rf"{re.escape(self.prefix)}-(\d{{5}})\.parquet")
        for path in folder.glob(f"{self.prefix}-*.parquet"):
            m = pattern.fullmatch(path.name)
            if m and int(m.group(1)) >= count:
                path.unlink()

    def abort(self) -> None:
        """Drop everything not yet published: temporary files go, finished shards stay."""
        self._closed = True
        self._pending.clear()
        self._pending_bytes.clear()
        self._total_pending = 0
        for writer in [*self._writers.values(), self._dropped, self._errors]:
            try:
                writer.remove()
            except OSError:
                pass
        self._writers.clear()

    def __enter__(self) -> BucketSink:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and not self._closed:
            self.abort()
