"""Reddit dump ingestion: Pushshift / Arctic-Shift NDJSON ``.zst`` files streamed into ``items`` and
``comments`` shards, in constant memory, for collections far beyond what the API gives.

How it streams
  Files are decompressed as a stream (``max_window_size=2**31``: Pushshift wrote with
  ``--long=31``) in 1 MiB chunks, cut at line ends into batches of at least ``batch_rows`` lines
  (:func:`blift.collect.reddit.dump_read.read_blocks`: the parent never splits lines). Batches
  are parsed by ``workers`` processes (:mod:`blift.collect.reddit.dump_pool`) with orjson (the
  rows are built there, straight into Arrow columns, and travel back as one table per batch) and
  written, in input order, to a sink that buckets rows by a stable hash of the item uid
  (:class:`_BucketWindow` gathers a window of batches so each bucket gets one large write). An
  item and all its comments share a bucket number, so each output shard is a self-contained set
  of items, and ``finalize_bucket`` (:mod:`blift.collect.reddit.dump_finalize`) can dedupe and
  derive depth with one bucket in memory. Until the spawned workers are up (~0.5 s) the parent
  parses batches itself.

What a line becomes
  * a row (``items`` for submission files, ``comments`` for comment files), mapped by
    :mod:`blift.collect.reddit.rows`, the mapping the API collector uses (the usual record is
    mapped by :mod:`blift.collect.reddit.dump_rows`, which gives the same bytes without a dict
    per row; :func:`blift.collect.reddit.dump_parse.ingest_batch_reference` is the row-dict path,
    and the tests hold the two equal);
  * or an ``errors`` row (class ``invalid``, key ``<file>:<line>``) when it is not a JSON object
    in UTF-8, lacks an id, or has a field of the wrong type; the stream goes on;
  * or a ``dropped`` row with a named reason: ``subreddit``, ``date_range``, ``not_image``,
    ``item_not_kept``. Every reason is counted exactly (``dropped:<reason>`` counters). Records
    outside ``subreddits`` are *counted only*: a subreddit list selects a tiny part of a monthly
    dump, and one row per unselected record would make the dropped table as big as the dump.
    ``drop_rows: false`` counts every reason without rows;
  * or nothing, for a blank line (counted as ``blank``).
  ``in == blank + invalid + items + comments + sum(dropped:*)`` holds for every run.

Which comments are kept
  When submission files are given, they are all read first and the ids of the kept submissions
  go into a sorted ``int64`` array (base36 ids as integers): 8 bytes per kept id (a Python set
  would take ~60), briefly twice that while it is sorted, shared with the parse workers through a
  memory-mapped ``.npy`` file. A comment is then kept only
  if its submission was kept (otherwise ``item_not_kept``: filtered out, or absent from the
  submission files), so the ``comments`` table never holds comments of items it does not have.
  Without submission files every comment that passes the subreddit and date filters is kept.
  ``since`` / ``until`` filter submissions on their ``created_utc``; comments follow their
  submission, and are date-filtered on their own ``created_utc`` only when no submission files
  are given.

Snapshot time
  ``collected_at`` is when the dump's crawler fetched the record, because that is when its score
  and counts were observed: ``_meta.retrieved_2nd_on`` (Arctic Shift's second pass, whose numbers
  the line carries) if present, else ``retrieved_on``, else ``retrieved_utc``; only a line with
  none of them gets the ingestion time (``blift.ids.now_utc()``, pinned by SOURCE_DATE_EPOCH).

Depth
  Dump comments carry no depth. ``finalize_bucket`` derives it from ``parent_id`` links within the
  item. A comment whose parent is missing from the dump is counted as a reply to a top-level
  comment (depth 1, its replies 2, ...): a lower bound, since the true depth of the missing parent
  is unknown; ``parent_id`` keeps the real parent.

Where the code is
  This module is the stage: its options, its requests, the order of files, and the write window
  between parse results and the sink. Reading is :mod:`~blift.collect.reddit.dump_read`, parsing
  and mapping a batch :mod:`~blift.collect.reddit.dump_parse` (columns built by
  :mod:`~blift.collect.reddit.dump_rows`), the worker processes
  :mod:`~blift.collect.reddit.dump_pool`, finishing a bucket
  :mod:`~blift.collect.reddit.dump_finalize`.
"""

from __future__ import annotations

import glob
import logging
import os
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np
import orjson
import pyarrow as pa
import zstandard
from pydantic import Field, field_validator

from blift.collect.reddit.dump_finalize import finish_bucket
from blift.collect.reddit.dump_parse import _DATASET, _Batch, _Filters
from blift.collect.reddit.dump_pool import _Parser, _use_jemalloc
from blift.collect.reddit.dump_read import read_blocks
from blift.errors import ConfigError, ErrorClass
from blift.ids import canonical_json, now_utc, short_id
from blift.stage import RecordFailure, ShardSink, StageConfig, StreamStage
from blift.storage import local_dir

log = logging.getLogger(__name__)

DUMP_KINDS = ("submissions", "comments")


# --------------------------------------------------------------------------------------- config


def parse_when(value: str, field_name: str) -> datetime:
    """An ISO date or datetime as an aware UTC datetime (a bare date means its midnight UTC)."""
    try:
        when = datetime.fromisoformat(value.strip())
    except (ValueError, AttributeError):
        raise ValueError(f"{field_name}: expected an ISO date like 2023-01-31 or 2023-01-31T12:00:00Z, "
                         f"got {value!r}") from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


class DumpConfig(StageConfig):
    """Options of ``reddit.dumps``."""

    buckets: int = Field(8, ge=1, le=65536, description="output shards; memory at finalize is one bucket")
    batch_rows: int = Field(2000, ge=1, le=1_000_000,
                            description="lines per parse batch, at least (batches are whole 1 MiB chunks)")
    subreddits: list[str] | None = Field(None, description="keep only these (case-insensitive)")
    since: str | None = Field(None, description="keep submissions created at or after this UTC instant")
    until: str | None = Field(None, description="keep submissions created before this UTC instant (exclusive)")
    image_only: bool = Field(False, description="keep only image and gallery submissions (and their comments)")
    drop_rows: bool = Field(True, description="write a dropped row per filtered record (subreddit: counted only)")
    workers: int | None = Field(None, ge=0, le=64,
                                description="parse processes; 0 parses in this process; None: one per CPU")
    max_line_bytes: int = Field(64 << 20, ge=1024, description="longer lines are errors, not memory blow-ups")

    @field_validator("since", "until")
    @classmethod
    def _iso(cls, value: str | None, info: Any) -> str | None:
        if value is not None:
            parse_when(value, info.field_name)
        return value

    @field_validator("subreddits")
    @classmethod
    def _subs(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            value = [s.strip().removeprefix("r/").removeprefix("/r/") for s in value]
            if not all(value):
                raise ValueError("subreddits: empty name")
        return value


# ------------------------------------------------------------------------------------- stage


def _as_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    if isinstance(value, list) and all(isinstance(v, (str, os.PathLike)) for v in value):
        return [os.fspath(v) for v in value]
    raise ConfigError(f"{where}: expected a path, a glob or a list of them, got {value!r:.80}")


def expand_paths(patterns: list[str], where: str) -> list[str]:
    """Absolute, sorted, de-duplicated paths of files and globs; a miss is a ConfigError."""
    out: set[str] = set()
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        if glob.has_magic(expanded):
            matches = [m for m in glob.glob(expanded, recursive=True) if os.path.isfile(m)]
            if not matches:
                raise ConfigError(f"{where}: glob {pattern!r} matches no file")
            out.update(os.path.abspath(m) for m in matches)
        elif os.path.isfile(expanded):
            out.add(os.path.abspath(expanded))
        else:
            raise ConfigError(f"{where}: file not found: {pattern!r} (looked at {os.path.abspath(expanded)})")
    return sorted(out)


class DumpIngestStage(StreamStage):
    """Stream Reddit dump files into co-partitioned ``items`` and ``comments`` buckets."""

    name: ClassVar[str] = "reddit.dumps"
    version: ClassVar[int] = 1
    inputs: ClassVar[dict[str, str]] = {"requests": "requests"}
    outputs: ClassVar[dict[str, str]] = {"items": "items", "comments": "comments"}
    resources: ClassVar[str] = "cpu"
    request_paths: ClassVar[tuple[str, ...]] = ("submissions", "comments", "paths", "files")
    Config: ClassVar[type[StageConfig]] = DumpConfig

    config: DumpConfig

    def setup(self) -> None:
        """Use Arrow's jemalloc pool: with the default (mimalloc) pool, freed buffers of read-back
        buckets were kept and peak memory grew 1.6x from 1x to 10x input; with jemalloc it stays
        flat (benchmarks/bench_dumps.py). Process-wide, but harmless for every other stage."""
        _use_jemalloc()

    def describe(self) -> str:
        return f"{self.name} ({self.buckets()} buckets, {self._workers()} parse workers)"

    @classmethod
    def expand_requests(cls, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One ``requests`` row per ``{submissions: [...], comments: [...]}`` entry; globs expanded."""
        if not isinstance(specs, list) or not specs:
            raise ConfigError(f"{cls.name}: requests: expected a non-empty list of {{submissions, comments}} entries")
        rows = []
        for i, entry in enumerate(specs):
            where = f"{cls.name}: requests[{i}]"
            if not isinstance(entry, dict):
                raise ConfigError(f"{where}: expected a mapping with 'submissions' and/or 'comments', "
                                  f"got {entry!r:.80}")
            unknown = sorted(set(entry) - set(DUMP_KINDS))
            if unknown:
                raise ConfigError(f"{where}: unknown key(s) {unknown}; expected 'submissions' and/or 'comments'")
            spec = {kind: expand_paths(_as_list(entry.get(kind), f"{where}.{kind}"), f"{where}.{kind}")
                    for kind in DUMP_KINDS}
            if not any(spec.values()):
                raise ConfigError(f"{where}: names no files; give 'submissions' and/or 'comments'")
            rows.append({"request_id": short_id(cls.name, spec), "kind": "dump", "spec": canonical_json(spec).decode()})
        return rows

    def _workers(self) -> int:
        if self.config.workers is not None:
            return self.config.workers
        return min(os.cpu_count() or 1, 8)

    def _files(self, requests: list[dict[str, Any]]) -> dict[str, list[Path]]:
        files: dict[str, list[Path]] = {kind: [] for kind in DUMP_KINDS}
        for row in requests:
            try:
                spec = orjson.loads(row["spec"])
            except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
                raise ConfigError(f"{self.name}: request {row.get('request_id', '?')}: "
                                  f"unreadable spec ({exc})") from None
            for kind in DUMP_KINDS:
                for p in spec.get(kind) or []:
                    path = Path(p)
                    if not path.is_file():
                        raise ConfigError(f"{self.name}: request {row.get('request_id')}: {kind} file not found: {p}")
                    if path not in files[kind]:
                        files[kind].append(path)
        return files

    def _filters(self, fallback: datetime) -> _Filters:
        c = self.config
        return _Filters(
            stage=self.name, buckets=self.buckets(),
            subreddits=frozenset(s.lower() for s in c.subreddits) if c.subreddits is not None else None,
            since=parse_when(c.since, "since").timestamp() if c.since else None,
            until=parse_when(c.until, "until").timestamp() if c.until else None,
            image_only=c.image_only, drop_rows=c.drop_rows, fallback_collected_at=fallback,
        )

    def stream(self, requests: list[dict[str, Any]], sink: ShardSink) -> dict[str, int]:
        """Submissions first (collecting the kept ids), then comments; returns exact counters."""
        files = self._files(requests)
        counters: Counter = Counter({"in": 0, "blank": 0, "invalid": 0, "items": 0, "comments": 0})
        parser = _Parser(self._workers(), self._filters(now_utc()), self.config.max_line_bytes)
        kept_file: Path | None = None
        try:
            kept_parts: list[np.ndarray] = []
            for path in files["submissions"]:
                self._stream_file("submissions", path, parser, sink, counters, kept_parts, None, None)
            kept = None
            if files["submissions"]:
                kept = np.unique(np.concatenate(kept_parts)) if kept_parts else np.zeros(0, dtype=np.int64)
                del kept_parts
                log.info("%s: %d submissions kept; comments of other items are dropped", self.name, len(kept))
                if parser.pool is not None and files["comments"]:
                    work = local_dir(self.run_dir)  # the workers map it: a local file
                    work.mkdir(parents=True, exist_ok=True)
                    fd, name = tempfile.mkstemp(prefix=".reddit.dumps-kept-", suffix=".npy", dir=work)
                    os.close(fd)
                    kept_file = Path(name)
                    np.save(kept_file, kept)
            for path in files["comments"]:
                self._stream_file("comments", path, parser, sink, counters, [], kept,
                                  str(kept_file) if kept_file else None)
        finally:
            parser.close()
            if kept_file is not None:
                kept_file.unlink(missing_ok=True)
        return dict(counters)

    def _stream_file(self, kind: str, path: Path, parser: _Parser, sink: ShardSink, counters: Counter,
                     kept_parts: list[np.ndarray], kept: np.ndarray | None, kept_path: str | None) -> None:
        dataset = _DATASET[kind]
        lines_read = 0

        def counted() -> Iterator[tuple[int, list[bytes | None]]]:
            nonlocal lines_read
            for first, count, pieces in read_blocks(path, self.config.batch_rows, self.config.max_line_bytes):
                lines_read += count
                yield first, pieces

        out = _BucketWindow(sink, dataset)
        try:
            for batch in parser.map(kind, str(path), counted(), kept, kept_path):
                out.add(batch)
                if batch.dropped:
                    sink.drop(batch.dropped)
                for failure in batch.failures:
                    sink.fail(failure)
                counters.update(batch.counts)
                if batch.kept_ids is not None and len(batch.kept_ids):
                    kept_parts.append(batch.kept_ids)
        except zstandard.ZstdError as exc:
            # A corrupt or truncated frame ends this file, not the run: the lines before it are kept.
            sink.fail(RecordFailure(record_key=f"{path}:{lines_read + 1}", error_class=ErrorClass.INVALID,
                                    error_type="ZstdError",
                                    message=f"{path}: compressed stream unreadable after line {lines_read}: {exc}; "
                                    "rest of file skipped"))
            counters["invalid"] += 1
            counters["files_truncated"] += 1
        out.flush()
        counters["in"] += lines_read
        counters["files"] += 1

    # ----------------------------------------------------------------------------- finalize

    @property
    def finalize_threads(self) -> int:  # type: ignore[override]  # StreamStage's is a plain attribute; read only
        """Buckets the sink may finish at once (:class:`blift.runner.bucket_sink.BucketSink`):
        one per parse worker, as many cores as the stream used. The pass is thread-safe (no
        shared state) and nearly all of it runs in Arrow without the GIL."""
        return max(1, min(self._workers(), os.cpu_count() or 1))

    def finalize_bucket(self, dataset: str, table: pa.Table) -> pa.Table:
        """Dedupe repeated records (newest snapshot wins), derive comment depth, sort (on the
        sink's finishing threads; :func:`blift.collect.reddit.dump_finalize.finish_bucket`)."""
        return finish_bucket(dataset, table)


class _BucketWindow:
    """Rows on their way to the sink, gathered per bucket over a window of ``_WRITE_WINDOW`` bytes
    of batches, then written bucket by bucket, one write each.

    Why: a batch spread over many buckets is many small writes, and the sink pays per write
    (schema check) and per flush (a row group, often a new temporary file): with 80 buckets and
    one write per batch and bucket that was ~5 us of the parent's time per record, the parent
    being the one process that also decompresses. Memory: one window plus the sink's buffer,
    whatever the input size or bucket count (each write is compacted, so a write the sink holds
    does not keep whole batches alive).
    Row order within a bucket is the input order, as with direct writes.
    """

    def __init__(self, sink: ShardSink, dataset: str) -> None:
        self.sink, self.dataset = sink, dataset
        self.parts: dict[int, list[pa.Table]] = {}
        self.bytes = 0

    def add(self, batch: _Batch) -> None:
        if batch.table is None:
            return
        for bucket, start, length in batch.ranges:
            self.parts.setdefault(bucket, []).append(batch.table.slice(start, length))
        self.bytes += batch.table.nbytes
        if self.bytes >= _WRITE_WINDOW:
            self.flush()

    def flush(self) -> None:
        parts, self.parts, self.bytes = self.parts, {}, 0
        for bucket in sorted(parts):
            tables = parts.pop(bucket)
            # One contiguous copy per bucket (~0.2 us a row): the sink sizes every write with
            # ``nbytes``, which over a table of many slices cost ~2.7 us a row at 80 buckets, and a
            # write it buffers would otherwise keep every batch its slices came from alive.
            table = tables[0] if len(tables) == 1 else pa.concat_tables(tables).combine_chunks()
            _write(self.sink, self.dataset, bucket, table)


# 64 MiB: at 80 buckets 128 MiB saved another ~0.9 us of parent CPU per record, but a window larger
# than a small input reads as memory growth from 1x to 10x (bench --quick: 1.25 at 64, 1.39 at 128).
_WRITE_WINDOW = 64 << 20


def _write(sink: ShardSink, dataset: str, bucket: int, table: pa.Table) -> None:
    """Hand a table to sinks that take Arrow (no row dicts round trip), row dicts to the others."""
    if getattr(sink, "accepts_tables", False):
        sink.write(dataset, bucket, table)
    else:
        sink.write(dataset, bucket, table.to_pylist())
