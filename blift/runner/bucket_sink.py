"""Where stream stages write: rows bucketed into co-partitioned shards of a run folder, in bounded memory.

``write(dataset, bucket, rows)`` appends to a per-(dataset, bucket) temporary file under a
dot-prefixed name (readers and reruns ignore those). Small writes are buffered per bucket and
flushed as record batches of about ``row_group_bytes``; when all buffers together pass
``buffer_bytes`` the biggest are flushed early, so memory does not grow with the bucket count
either. At most ``max_open_files`` bucket files are open at once; a bucket closed in between
gets its next rows as a further Arrow IPC stream appended to the same file.

Why Arrow IPC for the bucket files (read back once, by finalize): a write is a copy of the
Arrow buffers and the read back maps the file (no decoding either way); with Parquet, encoding,
decoding and a new file at each reopen of a closed bucket (80 buckets, 16 open) cost ~4 us of a
dump record's ~40 (benchmarks/bench_dumps.py).

``close(stage)`` turns each bucket's temporary file into one final shard
``<dataset>/<prefix>-<bucket:05d>.parquet`` through ``stage.finalize_bucket`` (dedupe, sort,
derived columns; memory is one bucket) and :func:`blift.tables.write_shard` (atomic). A stage
whose ``finalize_bucket`` is thread-safe may set ``finalize_threads = N``: then N buckets are
finished at once on N threads (memory: N buckets). Arrow and Parquet release the GIL for nearly
all of that pass (read back, sort, take, zstd write), and it runs after the stream, when the
stage's own workers are idle, so it was the one part of a dump ingestion on a single core. Every
bucket gets a shard, empty ones included, so co-partitioned stages downstream find every shard
id. Dropped rows and errors stream to ``dropped/<stage>/`` and ``errors/<stage>/`` as Parquet
files rolled over every ``row_groups_per_file`` row groups (a Parquet writer keeps every row
group's metadata until it closes). After a crash only temporary files remain; the next run
deletes and rewrites them.

When the run folder is a URL (an object store), every temporary file lives in the run's local
scratch folder (:func:`blift.storage.local_dir`) and only finished shards are uploaded.
"""

from __future__ import annotations

import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from blift import schemas, storage
from blift.errors import ConfigError
from blift.stage import RecordFailure, StreamStage
from blift.tables import write_shard

_TMP_SUFFIX = ".stream.tmp"
# Bucket files are read back once, by finalize: uncompressed (lz4 on Parquet temporaries made the
# read back 5x slower for no real saving, measured).
_IPC_OPTS = pa.ipc.IpcWriteOptions(compression=None)
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


class _BucketFile:
    """One bucket's temporary file: Arrow IPC streams appended one after the other, one per
    time the file was open, read back as one table (mapped, not copied)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path, self.schema = path, schema
        self.starts: list[int] = []  # byte offset where each stream begins
        self.rows = 0
        self._file: Any = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")
            self.starts.append(self._file.tell())
            self._writer = pa.ipc.new_stream(self._file, self.schema, options=_IPC_OPTS)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._writer = None
                self._file.close()
                self._file = None

    def read(self) -> pa.Table:
        """Every row written, in order (the file must be closed)."""
        self.close()
        if not self.starts:
            return self.schema.empty_table()
        with pa.memory_map(str(self.path)) as source:
            buf = source.read_buffer()
        tables = [pa.ipc.open_stream(buf.slice(start)).read_all() for start in self.starts]
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    def remove(self) -> None:
        try:
            self.close()
        finally:
            self.path.unlink(missing_ok=True)


class BucketSink:
    """A :class:`blift.stage.ShardSink` writing a stream stage's buckets into a run folder.

    ``write`` takes row dicts (the ShardSink contract) or, to skip a conversion round trip, an
    Arrow table already in the dataset's schema (``accepts_tables``).
    """

    accepts_tables = True

    def __init__(self, run_dir: storage.RunPath | str, stage_name: str, outputs: dict[str, str], buckets: int,
                 shard_prefix: str = "part", *, input_shard: str = "requests", row_group_bytes: int = 2 << 20,
                 buffer_bytes: int = 16 << 20, row_groups_per_file: int = 256, max_open_files: int = 16) -> None:
        if buckets < 1:
            raise ConfigError(f"{stage_name}: buckets must be >= 1, got {buckets}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", shard_prefix) or shard_prefix.startswith("."):
            raise ConfigError(f"{stage_name}: shard prefix {shard_prefix!r}: use letters, digits, '-', '_' or '.'")
        self.run_dir = storage.run_path(run_dir)
        self.work_dir = storage.local_dir(self.run_dir)  # temporaries: the run folder itself when local
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
        self._required = {ds: [i for i, f in enumerate(s.arrow) if not f.nullable] for ds, s in self._schemas.items()}
        self._pending: dict[tuple[str, int], list[pa.Table]] = {}
        self._pending_bytes: Counter = Counter()
        self._total_pending = 0
        self._writers: dict[tuple[str, int], _BucketFile] = {}
        self._dropped = self._side("dropped")
        self._errors = self._side("errors")
        self._side_rows: dict[str, list[dict[str, Any]]] = {"dropped": [], "errors": []}
        self.dropped_by_reason: Counter = Counter()
        self.errors_by_class: Counter = Counter()
        self._closed = False
        self._clear_temps()

    # ------------------------------------------------------------------------------- paths

    def _folders(self) -> list[Path]:
        """Folders of this sink's temporary files."""
        return [self.work_dir / ds for ds in self.outputs] + [
            self.work_dir / side / self.stage_name for side in ("dropped", "errors")]

    def _clear_temps(self) -> None:
        """Remove this sink's temporary files left by a crashed run (only names it would write)."""
        pattern = re.compile(rf"\.{re.escape(self.prefix)}-(?:(?:\d{{5}}|side)\.parquet\.\d+|\d{{5}}\.ipc)"
                             rf"{re.escape(_TMP_SUFFIX)}")
        for folder in self._folders():
            if folder.is_dir():
                for path in folder.iterdir():
                    if pattern.fullmatch(path.name):
                        path.unlink(missing_ok=True)

    def shard_name(self, bucket: int) -> str:
        return f"{self.prefix}-{bucket:05d}"

    def _side(self, side: str) -> _RollingWriter:
        return _RollingWriter(self.work_dir / side / self.stage_name, f"{self.prefix}-side.parquet",
                              schemas.get(side).arrow, self.row_groups_per_file, _FINAL_OPTS)

    # ------------------------------------------------------------------------------- ShardSink

    def write(self, dataset: str, bucket: int, rows: list[dict[str, Any]] | pa.Table) -> None:
        """Buffer rows of ``dataset`` for ``bucket``; flushes keep memory bounded."""
        self._check_open()
        schema = self._schemas.get(dataset)
        if schema is None:
            raise ConfigError(f"{self.stage_name}: wrote to dataset {dataset!r}, which is not one of its outputs "
                              f"{sorted(self.outputs)}")
        if not 0 <= bucket < self.buckets:
            raise ConfigError(f"{self.stage_name}: bucket {bucket} out of range 0..{self.buckets - 1}")
        where = f"{self.stage_name} {dataset} {self.shard_name(bucket)}: "
        if isinstance(rows, pa.Table):
            if rows.schema.equals(schema.arrow, check_metadata=False):
                # Already conformed (the usual case): names and types match, so only the nulls of
                # non-nullable columns are left to check; validate() (~140 us a call) names them.
                if any(rows.column(i).null_count for i in self._required[dataset]):
                    schema.validate(rows, where=where)
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
            writer = self._writers[key] = _BucketFile(
                self.work_dir / dataset / f".{self.shard_name(bucket)}.ipc{_TMP_SUFFIX}", self._schemas[dataset].arrow)
        writer.write(tables[0] if len(tables) == 1 else pa.concat_tables(tables))
        # Keep only the most recently written few files open (descriptors, whatever the bucket
        # count); a closed bucket's next flush appends a new stream to its file.
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
            summary: dict[str, Any] = {"stage": self.stage_name, "datasets": self._finalize_all(stage)}
            for dataset in self.outputs:
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

    def _finalize_all(self, stage: StreamStage) -> dict[str, dict[str, dict[str, Any]]]:
        """Every bucket of every dataset through :meth:`_finalize` on ``stage.finalize_threads``
        threads; the summary is in dataset, bucket order. Never on the main thread, even with one:
        Arrow's big allocations (the rows in their new order) cost twice as much there with its
        jemalloc pool (page faults; measured 1.27 vs 2.73 us per dump comment)."""
        jobs = [(dataset, schema_name, bucket) for dataset, schema_name in self.outputs.items()
                for bucket in range(self.buckets)]
        threads = max(1, min(int(stage.finalize_threads), len(jobs)))
        pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"{self.stage_name}-finalize")
        try:
            # At most ``threads`` buckets are in memory: a job reads its bucket when it starts.
            futures = [pool.submit(self._finalize, stage, *job) for job in jobs]
            done = [f.result() for f in futures]
        finally:
            # On a failure, jobs not started are cancelled and running ones end before the
            # caller's abort() removes the temporary files they read.
            pool.shutdown(wait=True, cancel_futures=True)
        out: dict[str, dict[str, dict[str, Any]]] = {dataset: {} for dataset in self.outputs}
        for (dataset, _, bucket), result in zip(jobs, done):
            out[dataset][self.shard_name(bucket)] = result
        return out

    def _finalize(self, stage: StreamStage, dataset: str, schema_name: str, bucket: int) -> dict[str, Any]:
        writer = self._writers.get((dataset, bucket))
        schema = self._schemas[dataset]
        table = schema.empty() if writer is None else writer.read()
        table = stage.finalize_bucket(dataset, table)
        path = self.run_dir / dataset / f"{self.shard_name(bucket)}.parquet"
        written = write_shard(path, table, schema_name)
        if writer is not None:
            writer.remove()
            self._writers.pop((dataset, bucket), None)  # published: abort() has nothing of it to remove
        return {"path": str(path), "file": f"{dataset}/{path.name}", "rows": written.num_rows}

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
                storage.commit_file(tmp, folder / f"{self.shard_name(i)}.parquet")
            count = len(writer.paths)
            writer.paths = []
        self._remove_stale(folder, count)
        return [str(folder / f"{self.shard_name(i)}.parquet") for i in range(count)]

    def _remove_stale(self, folder: storage.RunPath, count: int) -> None:
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
        writers: list[_BucketFile | _RollingWriter] = [*self._writers.values(), self._dropped, self._errors]
        for writer in writers:
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


def stream_into_buckets(stage: StreamStage, requests: list[dict[str, Any]],
                        run_dir: storage.RunPath | str) -> tuple[dict[str, int], dict[str, Any]]:
    """Run a stream stage over its requests into a new sink and finish it: (the stage's counters,
    the sink's summary). On any failure the sink is aborted, so no partial shard is left."""
    sink = BucketSink(run_dir, stage.name, dict(stage.outputs), stage.buckets())
    try:
        counters = stage.stream(requests, sink)
        return counters, sink.close(stage)
    except BaseException:
        sink.abort()
        raise
