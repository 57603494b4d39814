"""Finishing one bucket of ``reddit.dumps``: dedupe repeated records, derive comment depth, sort.

Apart from the stage because it is the second pass, with its own costs: it runs after the stream,
one bucket at a time on the sink's finishing threads
(:attr:`blift.collect.reddit.dumps.DumpIngestStage.finalize_threads`), while the parse workers
idle, so its per-row cost is paid at full price. Everything here is thread-safe (no shared state).

Dump comments carry no depth. :func:`comment_depths` walks the ``parent_id`` links in Python
(~1.5 us a comment, most of it building tuples and dicts); :func:`comment_depths_vectorized`
resolves them with one Arrow hash lookup and sums the chains by pointer doubling in numpy (log2
of the deepest chain rounds). Same numbers for every forest; a cycle (corrupt data) returns None
and the caller uses the reference walk, whose way of breaking cycles is its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_SEP = "\x00"  # joins uid and comment id into one key; neither holds it (checked)


def _flat(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def comment_depths_vectorized(uids: pa.Array | pa.ChunkedArray, comment_ids: pa.Array | pa.ChunkedArray,
                              parents: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """Depths (int32) as ``comment_depths`` gives them, or None when it cannot say the same:
    a cycle, a repeated (uid, comment id), or a uid / id holding the key separator.

    Top-level (parent null): 0. Parent absent from the table: 1 (a lower bound). Else the
    parent's depth + 1.
    """
    uid, cid, parent = _flat(uids), _flat(comment_ids), _flat(parents)
    n = len(uid)
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    if uid.null_count or cid.null_count:
        return None
    for col in (uid, cid, parent):
        if pc.any(pc.match_substring(col, _SEP)).as_py():
            return None
    keys = pc.binary_join_element_wise(uid, cid, _SEP)
    if pc.count_distinct(keys).as_py() != n:
        return None
    parent_keys = pc.binary_join_element_wise(uid, parent, _SEP)  # null where the parent is
    found = pc.index_in(parent_keys, value_set=keys).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    top = parent.is_null().to_numpy(zero_copy_only=False)
    # Invariant: depth[i] == acc[i] + (0 if done[i] else depth[nxt[i]]).
    acc = np.where(top, 0, 1).astype(np.int64)
    done = found < 0
    nxt = np.where(done, np.arange(n), found)
    for _ in range(int(np.ceil(np.log2(n))) + 2):
        todo = np.flatnonzero(~done)
        if not len(todo):
            return acc.astype(np.int32)
        j = nxt[todo]
        acc_new, nxt_new, done_new = acc[todo] + acc[j], nxt[j], done[j]
        acc[todo], nxt[todo], done[todo] = acc_new, nxt_new, done_new
    return None  # still unresolved after log2(n) doublings: a cycle


def finish_bucket(dataset: str, table: pa.Table) -> pa.Table:
    """Dedupe repeated records (newest snapshot wins), derive comment depth, sort
    (:meth:`blift.collect.reddit.dumps.DumpIngestStage.finalize_bucket`)."""
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
            k = (k[0], parent)
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
