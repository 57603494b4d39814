"""Reddit dump ingestion: Pushshift / Arctic-Shift NDJSON ``.zst`` files streamed into ``items`` and
``comments`` shards, in constant memory, for collections far beyond what the API gives.

How it streams
  Files are decompressed as a stream (``max_window_size=2**31``: Pushshift wrote with
  ``--long=31``) in 1 MiB chunks, cut at line ends into batches of at least ``batch_rows`` lines
  (:func:`read_blocks`: the parent never splits lines). Batches are parsed by ``workers``
  processes with orjson (the rows are built there, straight into Arrow columns, and travel back
  as one table per batch) and written, in input order, to a sink that buckets rows by a stable
  hash of the item uid (:class:`_BucketWindow` gathers a window of batches so each bucket gets one
  large write). An item and all its comments share a bucket number, so each output shard is a
  self-contained set of items, and ``finalize_bucket`` can dedupe and derive depth with one bucket
  in memory. Until the spawned workers are up (~0.5 s) the parent parses batches itself.

What a line becomes
  * a row (``items`` for submission files, ``comments`` for comment files), mapped by
    :mod:`blift.collect.reddit.rows`, the mapping the API collector uses (the usual record is
    mapped by :mod:`blift.collect.reddit.dump_rows`, which gives the same bytes without a dict per row;
    :func:`ingest_batch_reference` is the row-dict path, and the tests hold the two equal);
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
"""

from __future__ import annotations

import ctypes
import gc
import glob
import logging
import multiprocessing
import os
import pickle
import re
import tempfile
from collections import Counter, deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import zstandard
from pydantic import Field, field_validator

from blift import schemas
from blift.collect.reddit.dump_finalize import comment_depths_vectorized
from blift.collect.reddit.dump_rows import AuthorCache, CommentColumns, ItemColumns
from blift.collect.reddit.rows import (  # the one mapping
    classify_media,
    comment_row,
    item_row,
)
from blift.errors import ConfigError, ErrorClass, InvalidRecord, SchemaError
from blift.ids import author_salt, canonical_json, now_utc, short_id, uid_hash
from blift.processes import die_with_parent
from blift.stage import RecordFailure, ShardSink, StageConfig, StreamStage
from blift.storage import local_dir

log = logging.getLogger(__name__)

DUMP_KINDS = ("submissions", "comments")
_DATASET = {"submissions": "items", "comments": "comments"}
_IMAGE_KINDS = frozenset({"image", "gallery"})
_READ_CHUNK = 1 << 20
_NO_DATE = object()


# --------------------------------------------------------------------------------------- config


def parse_when(value: str, field_name: str) -> datetime:
    """An ISO date or datetime as an aware UTC datetime (a bare date means its midnight UTC)."""
    try:
        when = datetime.fromisoformat(value.strip())
    except (ValueError, AttributeError):
        raise ValueError(f"{field_name}: expected an ISO date like 2023-01-31 or 2023-01-31T12:00:00Z, got {value!r}") from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


class DumpConfig(StageConfig):
    """Options of ``reddit.dumps``."""

    buckets: int = Field(8, ge=1, le=65536, description="output shards; memory at finalize is one bucket")
    batch_rows: int = Field(2000, ge=1, le=1_000_000, description="lines per parse batch, at least (batches are whole 1 MiB chunks)")
    subreddits: list[str] | None = Field(None, description="keep only these (case-insensitive)")
    since: str | None = Field(None, description="keep submissions created at or after this UTC instant")
    until: str | None = Field(None, description="keep submissions created before this UTC instant (exclusive)")
    image_only: bool = Field(False, description="keep only image and gallery submissions (and their comments)")
    drop_rows: bool = Field(True, description="write a dropped row per filtered record (subreddit: counted only)")
    workers: int | None = Field(None, ge=0, le=64, description="parse processes; 0 parses in this process; None: one per CPU")
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


# ---------------------------------------------------------------------------------- mapping

_BASE36 = re.compile(r"(?:t\d_)?([0-9a-z]{1,13})")


def _is_base36(text: Any) -> bool:
    return isinstance(text, str) and _BASE36.fullmatch(text) is not None and "_" not in text


def _base36_id(data: dict[str, Any], what: str, fields: tuple[str, ...]) -> str:
    """A reddit id (``t3_`` / ``t1_`` prefix removed), checked: ids become int64 keys of the kept set."""
    for name in fields:
        value = data.get(name)
        if value is not None and value != "":
            break
    else:
        raise InvalidRecord(f"{what}: field {fields[0]!r} is missing")
    m = _BASE36.fullmatch(value) if isinstance(value, str) else None
    if m is not None:
        return m.group(1)
    text = value.split("_", 1)[1] if isinstance(value, str) and "_" in value[:3] else value
    if not _is_base36(text):
        raise InvalidRecord(f"{what}: field {name!r}: expected a reddit base36 id, got {value!r:.60}")
    return text


# ----------------------------------------------------------------------------- per-batch parsing


def bucket_of(uid: str, buckets: int) -> int:
    """The output shard of an item and its comments (the same hash as the item's split)."""
    return uid_hash(uid) % buckets


@dataclass(frozen=True)
class _Filters:
    """Everything a parse worker needs; pickled once per worker."""

    stage: str
    buckets: int
    subreddits: frozenset[str] | None
    since: float | None
    until: float | None
    image_only: bool
    drop_rows: bool
    fallback_collected_at: datetime


@dataclass
class _Batch:
    """What one batch of lines became."""

    # Rows of the kind's dataset ordered by bucket, and (bucket, start, length) ranges of it. One
    # table, not one per bucket: pickling a slice to the parent would copy its whole parent table.
    table: pa.Table | None = None
    ranges: list[tuple[int, int, int]] = field(default_factory=list)
    failures: list[RecordFailure] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    kept_ids: np.ndarray | None = None  # submissions: ids (int64) of the items kept


def _subreddit_of(data: dict[str, Any]) -> Any:
    sub = data.get("subreddit")
    return sub.get("display_name") if isinstance(sub, dict) else sub


def _created(data: dict[str, Any], where: str) -> Any:
    value = data.get("created_utc")
    if value is None or value == "":
        return _NO_DATE
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidRecord(f"{where}: field 'created_utc': expected epoch seconds, got {value!r:.60}") from None


def _fail(batch: _Batch, file: str, line_no: int, error_type: str, message: str) -> None:
    batch.failures.append(RecordFailure(
        record_key=f"{file}:{line_no}", error_class=ErrorClass.INVALID, error_type=error_type,
        message=f"{file}:{line_no}: {message}",
    ))
    batch.counts["invalid"] += 1


def _drop(batch: _Batch, f: _Filters, table: str, uid: str, record_id: str, reason: str, detail: str | None) -> None:
    batch.counts[f"dropped:{reason}"] += 1
    if f.drop_rows and reason != "subreddit":
        batch.dropped.append({"stage": f.stage, "table": table, "uid": uid, "record_id": record_id,
                              "reason": reason, "detail": detail})


def _parse(line: bytes | None, batch: _Batch, file: str, line_no: int, max_line_bytes: int) -> dict[str, Any] | None:
    """A line as a JSON object, or None (blank, or a failure recorded)."""
    if line is None:
        _fail(batch, file, line_no, "LineTooLong", f"line longer than max_line_bytes={max_line_bytes}; skipped")
        return None
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        if not line.strip():
            batch.counts["blank"] += 1
            return None
        kind = "InvalidUTF8" if "utf-8" in str(exc).lower() else "JSONDecodeError"
        _fail(batch, file, line_no, kind, f"not valid JSON: {exc}")
        return None
    if type(data) is not dict:
        _fail(batch, file, line_no, "NotAnObject", f"expected a JSON object, got a JSON {type(data).__name__}")
        return None
    return data


def ingest_batch_reference(kind: str, file: str, first_line: int, lines: list[bytes | None], f: _Filters,
                           kept: np.ndarray | None, max_line_bytes: int) -> _Batch:
    """:func:`ingest_batch` through the reference mapping (``item_row`` / ``comment_row``, one dict
    per row, ``pa.Table.from_pylist``). The fast path falls back to it for a batch whose columns
    do not convert, and the tests hold the fast path to its exact output.
    """
    batch = _Batch()
    rows: list[dict[str, Any]] = []
    buckets: list[int] = []
    kept_ids: list[int] = []
    candidates: list[tuple[int, dict[str, Any], str, int]] = []  # comments awaiting the kept check
    for offset, line in enumerate(lines):
        line_no = first_line + offset
        data = _parse(line, batch, file, line_no, max_line_bytes)
        if data is None:
            continue
        try:
            if kind == "submissions":
                row = _submission(data, f, batch)
                if row is not None:
                    rows.append(row)
                    buckets.append(bucket_of(row["uid"], f.buckets))
                    kept_ids.append(int(row["item_id"], 36))
            else:
                cand = _comment_candidate(data, f, batch, follow_items=kept is not None)
                if cand is not None:
                    candidates.append((line_no, data, *cand))
        except InvalidRecord as exc:
            _fail(batch, file, line_no, exc.error_type, str(exc))
        except Exception as exc:  # noqa: BLE001 - a record with odd types must not end the stream
            _fail(batch, file, line_no, type(exc).__name__, f"unexpected record shape: {exc}")
    if candidates:
        keep = np.ones(len(candidates), dtype=bool)
        if kept is not None:
            links = np.fromiter((c[3] for c in candidates), dtype=np.int64, count=len(candidates))
            if len(kept):
                pos = np.searchsorted(kept, links)
                pos[pos >= len(kept)] = 0
                keep = np.asarray(kept[pos]) == links
            else:
                keep = np.zeros(len(candidates), dtype=bool)
        for (line_no, data, uid, _), ok in zip(candidates, keep.tolist()):
            comment_id = str(data.get("id"))
            if not ok:
                _drop(batch, f, "comments", uid, comment_id, "item_not_kept",
                      "submission filtered out or absent from the submission files")
                continue
            try:
                row = comment_row(data, depth=0, collected_at=_collected_at(data, f.fallback_collected_at, f"comment {comment_id}"), uid=uid)
            except InvalidRecord as exc:
                _fail(batch, file, line_no, exc.error_type, str(exc))
                continue
            except Exception as exc:  # noqa: BLE001
                _fail(batch, file, line_no, type(exc).__name__, f"unexpected record shape: {exc}")
                continue
            rows.append(row)
            buckets.append(bucket_of(uid, f.buckets))
    dataset = _DATASET[kind]
    schema = schemas.get(dataset)
    if rows:
        # One conversion per batch (per-bucket conversions cost more than the rows when there are
        # many buckets), then zero-copy slices per bucket of the table ordered by bucket.
        table = _to_table(schema, rows, f"{file}:{first_line}+: ")
        bucket_arr = np.asarray(buckets, dtype=np.int64)
        order = np.argsort(bucket_arr, kind="stable")
        table = table.take(pa.array(order))
        sorted_buckets = bucket_arr[order]
        starts = np.flatnonzero(np.r_[True, sorted_buckets[1:] != sorted_buckets[:-1]])
        ends = np.r_[starts[1:], len(order)]
        batch.table = table
        batch.ranges = [(int(sorted_buckets[a]), a, b - a) for a, b in zip(starts.tolist(), ends.tolist())]
        batch.counts[dataset] += len(rows)
    if kind == "submissions":
        batch.kept_ids = np.asarray(kept_ids, dtype=np.int64)
    return batch


# ------------------------------------------------------------------------------ fast batch path

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)
_KEPT_CHUNK = 32  # comments per kept-ids check: parsed records alive at once stay in cache (measured:
# 256 cost 3.5 us more per comment than 32), the check still vectorized
_AUTHORS = AuthorCache()  # per process (each parse worker has its own)
_BUCKET_CACHE: dict[tuple[str, int], int] = {}
_BUCKET_CACHE_MAX = 1 << 16


def _bucket_cached(uid: str, buckets: int) -> int:
    """:func:`bucket_of` through a bounded cache: comments of one item repeat its uid."""
    key = (uid, buckets)
    b = _BUCKET_CACHE.get(key)
    if b is None:
        if len(_BUCKET_CACHE) >= _BUCKET_CACHE_MAX:
            _BUCKET_CACHE.clear()
        b = _BUCKET_CACHE[key] = bucket_of(uid, buckets)
    return b


def _fast_id(data: dict[str, Any], key: str) -> str | None:
    """The id :func:`_base36_id` returns when ``key`` holds a well-formed one; None: ask it."""
    value = data.get(key)
    if value.__class__ is str:
        m = _BASE36.fullmatch(value)
        if m is not None:
            return m.group(1)
    return None


def _record_error(batch: _Batch, file: str, line_no: int, exc: Exception) -> None:
    """Record a mapping error the way the reference loop's handlers do."""
    if isinstance(exc, InvalidRecord):
        _fail(batch, file, line_no, exc.error_type, str(exc))
    else:
        _fail(batch, file, line_no, type(exc).__name__, f"unexpected record shape: {exc}")


def ingest_batch(kind: str, file: str, first_line: int, lines: list[bytes | None], f: _Filters,
                 kept: np.ndarray | None, max_line_bytes: int) -> _Batch:
    """Parse, filter and map one batch of dump lines (runs in a worker process or inline).

    ``kept``: sorted ids of the kept submissions, when comments must follow them. The result
    (rows, order, errors, dropped rows, counters) is exactly :func:`ingest_batch_reference`'s;
    rows are built as columns (:mod:`blift.collect.reddit.dump_rows`). The cyclic garbage collector is
    paused meanwhile: a batch allocates ~100 containers per line, none in a cycle, and the
    collections they trigger cost as much as the parsing.
    """
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        try:
            return _ingest_fast(kind, file, first_line, lines, f, kept, max_line_bytes)
        except _Unconvertible:
            return ingest_batch_reference(kind, file, first_line, lines, f, kept, max_line_bytes)
    finally:
        if gc_was_on:
            gc.enable()


class _Unconvertible(Exception):
    """Fast columns that Arrow refused (an int beyond int64...): redo the batch the reference way."""


def _ingest_fast(kind: str, file: str, first_line: int, lines: list[bytes | None], f: _Filters,
                 kept: np.ndarray | None, max_line_bytes: int) -> _Batch:
    batch = _Batch()
    late = _Batch()  # comments' kept check and mapping: the reference reports these after the rest
    cache = _AUTHORS
    cache.use(author_salt())
    fallback_us = (f.fallback_collected_at - _EPOCH) // _US
    slow_rows: list[tuple[int, dict[str, Any]]] = []  # (line offset, reference row)
    dated = f.since is not None or f.until is not None
    loads = orjson.loads
    match = _BASE36.fullmatch
    if kind == "submissions":
        items = ItemColumns()
        cols: ItemColumns | CommentColumns = items
        kept_ids: list[int] = []
        for offset, line in enumerate(lines):
            line_no = first_line + offset
            try:
                data = loads(line)
            except Exception:  # noqa: BLE001 - _parse below names what it is
                data = None
            if data.__class__ is not dict:
                _parse(line, batch, file, line_no, max_line_bytes)  # blank, or the reference's error
                continue
            try:
                item_id = _fast_id(data, "id") or _base36_id(data, "submission", ("id", "name"))
                uid = "reddit:" + item_id
                media = None
                if f.subreddits is not None or dated or f.image_only:
                    where = f"submission {item_id}"
                    if _outside_subreddits(data, f, batch, "items", uid, item_id):
                        continue
                    if dated and _outside_dates(data, f, batch, "items", uid, item_id, where):
                        continue
                    if f.image_only:
                        media = classify_media(data)
                        if media[0] not in _IMAGE_KINDS:
                            _drop(batch, f, "items", uid, item_id, "not_image", media[0])
                            continue
                if not items.add(offset, data, uid, item_id, media, fallback_us, cache):
                    slow_rows.append((offset, item_row(data, source="dump", collected_at=_collected_at(
                        data, f.fallback_collected_at, f"submission {item_id}"))))
                kept_ids.append(int(item_id, 36))
            except Exception as exc:  # noqa: BLE001 - a record with odd types must not end the stream
                _record_error(batch, file, line_no, exc)
        batch.kept_ids = np.asarray(kept_ids, dtype=np.int64)
    else:
        comments = CommentColumns()
        cols = comments
        follow = kept is not None
        pending: list[tuple[int, dict[str, Any], str, str, int]] = []
        for offset, line in enumerate(lines):
            line_no = first_line + offset
            try:
                data = loads(line)
            except Exception:  # noqa: BLE001
                data = None
            if data.__class__ is not dict:
                _parse(line, batch, file, line_no, max_line_bytes)
                continue
            try:
                # _fast_id() inlined (twice per comment)
                m = match(v) if (v := data.get("id")).__class__ is str else None
                comment_id = m.group(1) if m is not None else _base36_id(data, "comment", ("id", "name"))
                m = match(v) if (v := data.get("link_id")).__class__ is str else None
                link_id = m.group(1) if m is not None else _base36_id(data, f"comment {comment_id}", ("link_id",))
                uid = "reddit:" + link_id
                if f.subreddits is not None and _outside_subreddits(data, f, batch, "comments", uid, comment_id):
                    continue
                if not follow and dated and _outside_dates(data, f, batch, "comments", uid, comment_id,
                                                           f"comment {comment_id}"):
                    continue
                pending.append((offset, data, uid, comment_id, int(link_id, 36)))
            except Exception as exc:  # noqa: BLE001
                _record_error(batch, file, line_no, exc)
                continue
            if len(pending) >= _KEPT_CHUNK:
                _map_comments(pending, kept, file, first_line, f, comments, slow_rows, late, fallback_us, cache)
                pending = []
        if pending:
            _map_comments(pending, kept, file, first_line, f, comments, slow_rows, late, fallback_us, cache)
        batch.failures.extend(late.failures)
        batch.dropped.extend(late.dropped)
        batch.counts.update(late.counts)
    _finish_table(batch, kind, file, first_line, f, cols, slow_rows)
    return batch


def _outside_dates(data: dict[str, Any], f: _Filters, batch: _Batch, table: str, uid: str, record_id: str,
                   where: str) -> bool:
    """True (and counted) when ``created_utc`` is missing or outside since/until (the reference test)."""
    created = _created(data, where)
    if created is _NO_DATE:
        _drop(batch, f, table, uid, record_id, "date_range", "no created_utc")
        return True
    if (f.since is not None and created < f.since) or (f.until is not None and created >= f.until):
        _drop(batch, f, table, uid, record_id, "date_range", datetime.fromtimestamp(created, tz=timezone.utc).isoformat())
        return True
    return False


def _map_comments(pending: list[tuple[int, dict[str, Any], str, str, int]], kept: np.ndarray | None, file: str,
                  first_line: int, f: _Filters, cols: CommentColumns, slow_rows: list[tuple[int, dict[str, Any]]],
                  late: _Batch, fallback_us: int, cache: AuthorCache) -> None:
    """Kept check for a chunk of comment candidates, then their rows (fast columns or reference)."""
    if kept is None:
        keep = None
    elif len(kept):
        links = np.fromiter((c[4] for c in pending), dtype=np.int64, count=len(pending))
        pos = np.searchsorted(kept, links)
        pos[pos >= len(kept)] = 0
        keep = (np.asarray(kept[pos]) == links).tolist()
    else:
        keep = [False] * len(pending)
    cands: list[tuple[int, dict[str, Any], str, str]] = []
    for i, (offset, data, uid, comment_id, _) in enumerate(pending):
        if keep is not None and not keep[i]:
            _drop(late, f, "comments", uid, str(data.get("id")), "item_not_kept",
                  "submission filtered out or absent from the submission files")
        else:
            cands.append((offset, data, uid, comment_id))
    for i, exc in cols.add(cands, fallback_us, cache):
        offset, data, uid, _ = cands[i]
        line_no = first_line + offset
        if exc is not None:
            _record_error(late, file, line_no, exc)
            continue
        comment_id = str(data.get("id"))
        try:
            row = comment_row(data, depth=0, collected_at=_collected_at(data, f.fallback_collected_at, f"comment {comment_id}"), uid=uid)
        except Exception as exc2:  # noqa: BLE001
            _record_error(late, file, line_no, exc2)
            continue
        slow_rows.append((offset, row))


def _finish_table(batch: _Batch, kind: str, file: str, first_line: int, f: _Filters,
                  cols: ItemColumns | CommentColumns, slow_rows: list[tuple[int, dict[str, Any]]]) -> None:
    """One table of the batch's rows, ordered by bucket then line (the reference order), and its
    per-bucket ranges."""
    dataset = _DATASET[kind]
    schema = schemas.get(dataset)
    where = f"{file}:{first_line}+: "
    parts: list[pa.Table] = []
    try:  # anything Arrow refuses: the reference path redoes the batch and reports it its way
        if len(cols):
            parts.append(cols.table(schema.arrow))
        if slow_rows:
            parts.append(pa.Table.from_pylist([row for _, row in slow_rows], schema=schema.arrow))
        for table in parts:
            schema.validate(table, where=where)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError, SchemaError) as exc:
        raise _Unconvertible(str(exc)) from None
    n = len(cols) + len(slow_rows)
    if not n:
        return
    positions = np.fromiter(cols.pos, dtype=np.int64, count=len(cols))
    uids = cols.uid
    if slow_rows:
        positions = np.concatenate([positions, np.fromiter((p for p, _ in slow_rows), dtype=np.int64, count=len(slow_rows))])
        uids = uids + [row["uid"] for _, row in slow_rows]
    nb = f.buckets
    bucket_arr = np.fromiter((_bucket_cached(u, nb) for u in uids), dtype=np.int64, count=n)
    order = np.lexsort((positions, bucket_arr))
    table = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
    table = table.take(pa.array(order))
    sorted_buckets = bucket_arr[order]
    starts = np.flatnonzero(np.r_[True, sorted_buckets[1:] != sorted_buckets[:-1]])
    ends = np.r_[starts[1:], n]
    batch.table = table
    batch.ranges = [(int(sorted_buckets[a]), a, b - a) for a, b in zip(starts.tolist(), ends.tolist())]
    batch.counts[dataset] += n


def _to_table(schema: schemas.TableSchema, rows: list[dict[str, Any]], where: str) -> pa.Table:
    """Rows built here have exactly the schema's keys, so skip from_rows' per-row key check;
    any conversion problem still gets from_rows' message naming the record and field."""
    try:
        table = pa.Table.from_pylist(rows, schema=schema.arrow)
        schema.validate(table, where=where)
        return table
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        return schema.from_rows(rows, where=where)


def _collected_at(data: dict[str, Any], fallback: datetime, where: str) -> datetime:
    meta = data.get("_meta")
    second = meta.get("retrieved_2nd_on") if isinstance(meta, dict) else None
    for value, name in ((second, "_meta.retrieved_2nd_on"), (data.get("retrieved_on"), "retrieved_on"),
                        (data.get("retrieved_utc"), "retrieved_utc")):
        if value is not None and value != "":
            try:
                return datetime.fromtimestamp(float(value), tz=timezone.utc)
            except (TypeError, ValueError, OverflowError, OSError):
                raise InvalidRecord(f"{where}: field {name!r}: expected epoch seconds, got {value!r:.60}") from None
    return fallback


def _outside_subreddits(data: dict[str, Any], f: _Filters, batch: _Batch, table: str, uid: str, record_id: str) -> bool:
    """True (and counted) when a subreddit list is set and the record is not in it."""
    if f.subreddits is None:
        return False
    sub = _subreddit_of(data)
    if isinstance(sub, str) and sub.lower() in f.subreddits:
        return False
    _drop(batch, f, table, uid, record_id, "subreddit", str(sub))
    return True


def _submission(data: dict[str, Any], f: _Filters, batch: _Batch) -> dict[str, Any] | None:
    item_id = _base36_id(data, "submission", ("id", "name"))
    where = f"submission {item_id}"
    uid = f"reddit:{item_id}"
    if _outside_subreddits(data, f, batch, "items", uid, item_id):
        return None
    if f.since is not None or f.until is not None:
        created = _created(data, where)
        if created is _NO_DATE:
            _drop(batch, f, "items", uid, item_id, "date_range", "no created_utc")
            return None
        if (f.since is not None and created < f.since) or (f.until is not None and created >= f.until):
            _drop(batch, f, "items", uid, item_id, "date_range",
                  datetime.fromtimestamp(created, tz=timezone.utc).isoformat())
            return None
    if f.image_only:
        media_kind, _ = classify_media(data)
        if media_kind not in _IMAGE_KINDS:
            _drop(batch, f, "items", uid, item_id, "not_image", media_kind)
            return None
    return item_row(data, source="dump", collected_at=_collected_at(data, f.fallback_collected_at, where))


def _comment_candidate(data: dict[str, Any], f: _Filters, batch: _Batch, *, follow_items: bool) -> tuple[str, int] | None:
    """(uid, link id as int) of a comment passing the per-record filters, or None if dropped."""
    comment_id = _base36_id(data, "comment", ("id", "name"))
    link_id = _base36_id(data, f"comment {comment_id}", ("link_id",))
    uid = f"reddit:{link_id}"
    if _outside_subreddits(data, f, batch, "comments", uid, comment_id):
        return None
    if not follow_items and (f.since is not None or f.until is not None):
        created = _created(data, f"comment {comment_id}")
        if created is _NO_DATE or (f.since is not None and created < f.since) or (f.until is not None and created >= f.until):
            detail = "no created_utc" if created is _NO_DATE else datetime.fromtimestamp(created, tz=timezone.utc).isoformat()
            _drop(batch, f, "comments", uid, comment_id, "date_range", detail)
            return None
    return uid, int(link_id, 36)


# ----------------------------------------------------------------------------------- reading


def read_blocks(path: Path, batch_rows: int, max_line_bytes: int) -> Iterator[tuple[int, int, list[bytes | None]]]:
    """(first line number, line count, pieces) batches of lines (tests check them against a plain
    line-by-line reader).

    A piece is a run of whole lines joined by ``\\n`` (a slice of the decompressed stream, never
    split into line objects here) or None for one line over ``max_line_bytes`` that spanned
    chunks (its bytes skipped, never held). The parse workers split the pieces
    (:func:`lines_of`): the parent, which also decompresses and writes every row, stays light,
    and a batch crosses the process boundary as a few large buffers. A batch is whole chunks, so
    it holds at least ``batch_rows`` lines (the last one fewer).
    """
    with open(path, "rb") as raw:
        if path.suffix == ".zst":
            stream: Any = zstandard.ZstdDecompressor(max_window_size=2**31).stream_reader(raw, read_size=_READ_CHUNK)
        else:
            stream = raw
        pieces: list[bytes | None] = []
        count, first, line_no = 0, 1, 0
        tail = b""
        skipping = False  # inside an over-long line
        while True:
            chunk = stream.read(_READ_CHUNK)
            if not chunk:
                break
            cut = chunk.rfind(b"\n")
            if cut < 0:  # no line ends in this chunk
                if not skipping:
                    tail += chunk
                    if len(tail) > max_line_bytes:
                        skipping, tail = True, b""
                continue
            if skipping:  # the first line ending here is the over-long one
                pieces.append(None)
                n = 1
                start = chunk.find(b"\n") + 1
                if start <= cut:
                    block = chunk[start:cut]
                    pieces.append(block)
                    n += _newlines(block) + 1
                skipping = False
            else:
                block = tail + chunk[:cut] if tail else chunk[:cut]
                pieces.append(block)
                n = _newlines(block) + 1
            tail = chunk[cut + 1:]
            if len(tail) > max_line_bytes:
                skipping, tail = True, b""
            count += n
            line_no += n
            if count >= batch_rows:
                yield first, count, pieces
                pieces, count, first = [], 0, line_no + 1
        if tail or skipping:
            pieces.append(None if skipping else tail)
            count += 1
        if count:
            yield first, count, pieces


def _newlines(data: bytes) -> int:
    """``data.count(b"\\n")``, 4x faster (bytes.count scans a byte at a time)."""
    return int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == 10))


def lines_of(pieces: list[bytes | None], max_line_bytes: int) -> list[bytes | None]:
    """The lines of :func:`read_blocks` pieces (None: a line over ``max_line_bytes``)."""
    lines: list[bytes | None] = []
    for piece in pieces:
        if piece is None:
            lines.append(None)
            continue
        parts = piece.split(b"\n")
        if len(piece) > max_line_bytes:  # some line may be over the limit: check each
            parts = [part if len(part) <= max_line_bytes else None for part in parts]
        lines.extend(parts)
    return lines


# ----------------------------------------------------------------------------------- workers

_WORKER_FILTERS: _Filters | None = None
_WORKER_KEPT: dict[str, np.ndarray] = {}


def _use_jemalloc() -> None:
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except (NotImplementedError, pa.ArrowNotImplementedError):  # a pyarrow built without jemalloc
        log.info("pyarrow has no jemalloc pool; keeping %s", pa.default_memory_pool().backend_name)


def _keep_freed_heap() -> None:
    """Have glibc's malloc keep and reuse freed memory in this (worker) process.

    By default blocks over 128 KiB are fresh mmaps and free heap tops go back to the OS, so each
    batch (its 1 MiB input pieces, its ~2 KB raw-JSON bytes per row, its pickled result) faults
    its pages in anew: ~1 fault per record, 1.5-3 us of system time in this VM. Keeping up to
    256 MiB means a worker stays at its high-water mark, which does not depend on the input size.
    No-op where there is no glibc ``mallopt``.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # the largest glibc takes; also stops its dynamic adjustment
    mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    mallopt(_M_TOP_PAD, 16 << 20)


_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc malloc.h


def _init_worker(filters: _Filters, parent: int) -> None:
    global _WORKER_FILTERS
    _WORKER_FILTERS = filters
    die_with_parent(parent, poll_s=1.0)
    _use_jemalloc()
    _keep_freed_heap()


def _noop() -> None:
    """Submitted once per worker at pool start: its completion says the worker is up."""


def _worker_batch(kind: str, file: str, first_line: int, pieces: list[bytes | None], kept_path: str | None,
                  max_line_bytes: int) -> bytes:
    """One batch's result, pickled here with protocol 5 (the pool pickles with 4, whose Arrow
    buffers the parent unpickles ~5x slower: ~1 us per record on the parent, the busiest
    process); :meth:`_Parser.map` unpickles it."""
    assert _WORKER_FILTERS is not None, "worker not initialised"
    kept = None
    if kept_path is not None:
        if kept_path not in _WORKER_KEPT:
            _WORKER_KEPT.clear()
            _WORKER_KEPT[kept_path] = np.load(kept_path, mmap_mode="r")
        kept = _WORKER_KEPT[kept_path]
    batch = ingest_batch(kind, file, first_line, lines_of(pieces, max_line_bytes), _WORKER_FILTERS, kept, max_line_bytes)
    return pickle.dumps(batch, protocol=5)


class _Parser:
    """Maps batches to results in input order: inline, or on a bounded pool of spawned processes.

    Spawned (not forked) workers, so no lock held by a thread of the parent is inherited; as
    with any multiprocessing code, a script calling this needs the ``if __name__ == "__main__"``
    guard (``workers: 0`` parses inline).
    """

    def __init__(self, workers: int, filters: _Filters, max_line_bytes: int) -> None:
        self.filters = filters
        self.max_line_bytes = max_line_bytes
        self.pool: ProcessPoolExecutor | None = None
        self.inflight = max(2, 2 * workers)  # bounded: memory is a few batches, whatever the input
        self.starting: list[Future[None]] = []
        if workers > 0:
            self.pool = ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(filters, os.getpid()),
            )
            # One no-op per worker starts them all now; until they answer, batches parse here.
            self.starting = [self.pool.submit(_noop) for _ in range(workers)]

    def map(self, kind: str, file: str, batches: Iterator[tuple[int, list[bytes | None]]],
            kept: np.ndarray | None, kept_path: str | None) -> Iterator[_Batch]:
        """Results of ``(first line, pieces)`` batches (:func:`read_blocks`), in input order.

        When reading fails (a corrupt frame), the batches read before it are still yielded, then
        the error is raised: their lines were counted as read."""
        if self.pool is None:
            for first, pieces in batches:
                yield ingest_batch(kind, file, first, lines_of(pieces, self.max_line_bytes), self.filters, kept,
                                   self.max_line_bytes)
            return
        pending: deque[Future[bytes]] = deque()
        source = iter(batches)
        while True:
            try:
                first, pieces = next(source)
            except StopIteration:
                break
            except Exception:
                while pending:
                    yield pickle.loads(pending.popleft().result())
                raise
            if not pending and self.starting:
                # Spawned workers take ~0.5 s to import; parse here meanwhile instead of waiting.
                if not all(w.done() for w in self.starting):
                    yield ingest_batch(kind, file, first, lines_of(pieces, self.max_line_bytes), self.filters, kept,
                                       self.max_line_bytes)
                    continue
                for w in self.starting:
                    w.result()  # a worker that failed to start fails here, not on the next batch
                self.starting = []
            pending.append(self.pool.submit(_worker_batch, kind, file, first, pieces, kept_path, self.max_line_bytes))
            if len(pending) >= self.inflight:
                yield pickle.loads(pending.popleft().result())
        while pending:
            yield pickle.loads(pending.popleft().result())

    def close(self) -> None:
        """Stop the workers without waiting for them to exit (~0.2 s): they have nothing left to do,
        exit on their own, and the executor's thread joins them (at the latest at interpreter exit)."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


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
                raise ConfigError(f"{where}: expected a mapping with 'submissions' and/or 'comments', got {entry!r:.80}")
            unknown = sorted(set(entry) - set(DUMP_KINDS))
            if unknown:
                raise ConfigError(f"{where}: unknown key(s) {unknown}; expected 'submissions' and/or 'comments'")
            spec = {kind: expand_paths(_as_list(entry.get(kind), f"{where}.{kind}"), f"{where}.{kind}") for kind in DUMP_KINDS}
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
                raise ConfigError(f"{self.name}: request {row.get('request_id', '?')}: unreadable spec ({exc})") from None
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
                                    message=f"{path}: compressed stream unreadable after line {lines_read}: {exc}; rest of file skipped"))
            counters["invalid"] += 1
            counters["files_truncated"] += 1
        out.flush()
        counters["in"] += lines_read
        counters["files"] += 1

    # ----------------------------------------------------------------------------- finalize

    @property
    def finalize_threads(self) -> int:
        """Buckets the sink may finish at once (:class:`blift.runner.bucket_sink.BucketSink`):
        one per parse worker, as many cores as the stream used. The pass is thread-safe (no
        shared state) and nearly all of it runs in Arrow without the GIL."""
        return max(1, min(self._workers(), os.cpu_count() or 1))

    def finalize_bucket(self, dataset: str, table: pa.Table) -> pa.Table:
        """Dedupe repeated records (newest snapshot wins), derive comment depth, sort (on the
        sink's finishing threads)."""
        # Dedupe and sort are worked out on the key columns alone, then the rows move once: a
        # take of the wide ``raw`` column costs more than everything else here.
        if dataset == "items":
            keep = _newest_per_key(table, ["uid"])
            keys = pa.table({"uid": table["uid"]}).take(keep)
            return table.take(keep.take(pc.sort_indices(keys, sort_keys=[("uid", "ascending")])))
        if dataset == "comments":
            keep = _newest_per_key(table, ["uid", "comment_id"])
            keys = pa.table({c: table[c] for c in ("uid", "comment_id", "parent_id", "created_at")}).take(keep)
            depth = comment_depths_vectorized(keys["uid"], keys["comment_id"], keys["parent_id"])
            if depth is None:  # a parent cycle: the reference walk decides how to break it
                depth = np.asarray(comment_depths(keys["uid"].to_pylist(), keys["comment_id"].to_pylist(),
                                                  keys["parent_id"].to_pylist()), dtype=np.int32)
            order = pc.sort_indices(keys, sort_keys=[
                ("uid", "ascending"), ("created_at", "ascending"), ("comment_id", "ascending")])
            table = table.take(keep.take(order))
            return table.set_column(table.schema.get_field_index("depth"), table.schema.field("depth"),
                                    pa.array(depth[order.to_numpy()], type=pa.int32()))
        return table


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
        sink.write(dataset, bucket, table)  # type: ignore[arg-type]
    else:
        sink.write(dataset, bucket, table.to_pylist())


def _newest_per_key(table: pa.Table, keys: list[str]) -> pa.Array:
    """Indices of one row per key: the latest ``collected_at``, ties going to the last occurrence."""
    n = table.num_rows
    if n == 0:
        return pa.array([], type=pa.int64())
    order_col = "__blift_order"
    work = pa.table({**{k: table[k] for k in keys}, "collected_at": table["collected_at"],
                     order_col: pa.array(np.arange(n, dtype=np.int64))})
    idx = pc.sort_indices(work, sort_keys=[(k, "ascending") for k in keys]
                          + [("collected_at", "ascending"), (order_col, "ascending")])
    work = work.take(idx)
    last = np.ones(n, dtype=bool)
    if n > 1:
        differs = np.zeros(n - 1, dtype=bool)
        for k in keys:
            col = work[k].combine_chunks() if isinstance(work[k], pa.ChunkedArray) else work[k]
            differs |= pc.not_equal(col.slice(0, n - 1), col.slice(1)).to_numpy(zero_copy_only=False)
        last[:-1] = differs
    keep = np.asarray(work[order_col].combine_chunks().to_numpy())[last]
    keep.sort()  # first-seen order of the kept rows, so the result does not depend on the sort
    return pa.array(keep)


def comment_depths(uids: list[str], comment_ids: list[str], parents: list[str | None]) -> list[int]:
    """Depth of each comment from the parent links within its item (iterative: chains can be long).

    A parent absent from the data counts as depth 0, so its replies get depth 1 (a lower bound);
    a parent cycle (corrupt data) is broken at the first comment met again.
    """
    index = {(u, c): p for u, c, p in zip(uids, comment_ids, parents)}
    memo: dict[tuple[str, str], int] = {}
    out = []
    for key in zip(uids, comment_ids):
        path: list[tuple[str, str]] = []
        on_path: set[tuple[str, str]] = set()
        k = key
        while k not in memo:
            parent = index.get(k, _MISSING)
            if parent is _MISSING or parent is None or k in on_path:
                memo[k] = 0  # absent ancestor, top-level comment, or a cycle closed here
                break
            on_path.add(k)
            path.append(k)
            k = (k[0], parent)  # type: ignore[assignment]
        depth = memo[k]
        for node in reversed(path):
            if node in memo:
                depth = memo[node]
            else:
                depth += 1
                memo[node] = depth
        out.append(memo[key])
    return out


_MISSING: Any = object()
