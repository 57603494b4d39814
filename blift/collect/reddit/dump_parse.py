"""One batch of dump lines parsed, filtered and mapped to rows: the work ``reddit.dumps`` hands its
parse workers (:mod:`blift.collect.reddit.dump_pool`), or does inline with ``workers: 0``.

Apart from the stage because it is what a worker process runs: it knows the filters
(:class:`_Filters`, pickled once per worker) and what a batch becomes (:class:`_Batch`: one
table ordered by bucket, error rows, dropped rows, counters, kept submission ids), and nothing
of sinks, files or the run.

Two mappings give the same result. :func:`ingest_batch` builds Arrow columns straight from the
parsed records (:mod:`blift.collect.reddit.dump_rows`; the hot path, no dict per row);
:func:`ingest_batch_reference` maps each record with :mod:`blift.collect.reddit.rows`, the
mapping the API collector uses. The fast path falls back to the reference for a batch whose
columns Arrow refuses, and ``tests/test_dumps.py`` holds the two equal, field by field.

Process-wide state lives here and only here: the author-hash cache ``_AUTHORS`` and the bucket
cache ``_BUCKET_CACHE`` (one of each per worker process).
"""

from __future__ import annotations

import gc
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from blift import schemas
from blift.collect.reddit.dump_rows import AuthorCache, CommentColumns, ItemColumns
from blift.collect.reddit.rows import (  # the one mapping
    classify_media,
    comment_row,
    item_row,
)
from blift.errors import ErrorClass, InvalidRecord, SchemaError
from blift.ids import author_salt, uid_hash
from blift.stage import RecordFailure

_DATASET = {"submissions": "items", "comments": "comments"}
_IMAGE_KINDS = frozenset({"image", "gallery"})
_NO_DATE = object()


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
                row = comment_row(data, depth=0,
                                  collected_at=_collected_at(data, f.fallback_collected_at, f"comment {comment_id}"),
                                  uid=uid)
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
                data = loads(line) if line is not None else None  # None: a line over the limit
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
                data = loads(line) if line is not None else None  # None: a line over the limit
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
        _drop(batch, f, table, uid, record_id, "date_range",
              datetime.fromtimestamp(created, tz=timezone.utc).isoformat())
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
            row = comment_row(data, depth=0,
                              collected_at=_collected_at(data, f.fallback_collected_at, f"comment {comment_id}"),
                              uid=uid)
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
        positions = np.concatenate([positions,
                                    np.fromiter((p for p, _ in slow_rows), dtype=np.int64, count=len(slow_rows))])
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


def _comment_candidate(data: dict[str, Any], f: _Filters, batch: _Batch, *,
                       follow_items: bool) -> tuple[str, int] | None:
    """(uid, link id as int) of a comment passing the per-record filters, or None if dropped."""
    comment_id = _base36_id(data, "comment", ("id", "name"))
    link_id = _base36_id(data, f"comment {comment_id}", ("link_id",))
    uid = f"reddit:{link_id}"
    if _outside_subreddits(data, f, batch, "comments", uid, comment_id):
        return None
    if not follow_items and (f.since is not None or f.until is not None):
        created = _created(data, f"comment {comment_id}")
        if (created is _NO_DATE or (f.since is not None and created < f.since)
                or (f.until is not None and created >= f.until)):
            detail = ("no created_utc" if created is _NO_DATE
                      else datetime.fromtimestamp(created, tz=timezone.utc).isoformat())
            _drop(batch, f, "comments", uid, comment_id, "date_range", detail)
            return None
    return uid, int(link_id, 36)
