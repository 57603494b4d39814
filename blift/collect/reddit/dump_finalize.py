"""Comment depth from parent links, vectorized: the finishing pass of ``reddit.dumps`` runs on one
process while the parse workers idle, so its per-comment cost is paid at full price.

:func:`blift.collect.reddit.dumps.comment_depths` walks the links in Python (~1.5 us a comment, most of
it building tuples and dicts). Here the links are resolved with one Arrow hash lookup and the
chains summed by pointer doubling in numpy (log2 of the deepest chain rounds). Same numbers for
every forest; a cycle (corrupt data) returns None and the caller uses the reference walk, whose
way of breaking cycles is its own.
"""

from __future__ import annotations

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
