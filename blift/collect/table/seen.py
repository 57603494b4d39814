"""Which item uids a stream has written, in about 8 bytes each, so a repeated id is found whatever
the input size.

A Python set of uid strings costs ~100 bytes an id (10 million rows: a gigabyte); here an id is
its 64-bit :func:`blift.ids.uid_hash` in a sorted ``uint64`` array (the same idea as the kept
ids of ``reddit.dumps``), plus a small set of recent ones merged into the array every
``merge_at`` additions. Two different uids share a 64-bit hash with probability about
n^2 / 2^65 (10 million ids: 3 in a million); the second would be dropped as ``duplicate_id``,
and its dropped row names it.
"""

from __future__ import annotations

import numpy as np


class SeenIds:
    """A set of 64-bit hashes: ``in`` and ``add``."""

    def __init__(self, merge_at: int = 1 << 16) -> None:
        self._sorted = np.zeros(0, dtype=np.uint64)
        self._recent: set[int] = set()
        self._merge_at = merge_at

    def __contains__(self, h: int) -> bool:
        if h in self._recent:
            return True
        if not self._sorted.size:
            return False
        key = np.uint64(h)
        i = int(np.searchsorted(self._sorted, key))
        return i < self._sorted.size and bool(self._sorted[i] == key)

    def add(self, h: int) -> None:
        self._recent.add(h)
        if len(self._recent) >= self._merge_at:
            recent = np.sort(np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent)))
            # two sorted runs: a stable sort (timsort) merges them in linear time; np.union1d goes
            # through np.unique, whose hash-table path in numpy 2.x was 170x slower here and held a
            # large transient table (benchmarks/RESULTS.md, the BLIFT import at 10x)
            merged = np.sort(np.concatenate((self._sorted, recent)), kind="stable")
            if merged.size > 1:
                merged = merged[np.concatenate(([True], merged[1:] != merged[:-1]))]
            self._sorted = merged
            self._recent = set()

    def __len__(self) -> int:
        return int(self._sorted.size) + len(self._recent)
