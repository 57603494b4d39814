"""Mix instruction records of several kinds (behavior, content, other) at a set ratio.

The paper trains on behavior and content records 1:1 (:data:`DEFAULT_RATIO`). Each record has
a kind (its ``task``, or its data source's ``kind``); :func:`mix_indices` returns the indices of
one epoch in which kind ``k`` makes up ``ratio[k] / sum(ratio)`` of the records.

When a kind is short, it is **upsampled**: the kind with the most records per unit of ratio sets
the epoch size, every other kind is repeated (whole shuffled passes, then a random subset of one
more pass) up to its share. Why not subsample the larger kind instead: it would throw away
behavior records, the scarce, valuable part of the data, every epoch; repeating the smaller
kind keeps every record and matches the ratio exactly. :func:`mix_counts` reports, per kind, how
many records there are and how many the epoch uses, so the repetition is visible in the logs.

Rules, so a config can never mix silently differently than it says: a kind present in the data
but absent from ``ratio`` is an error (give it a ratio; 0 leaves it out), and so is a kind with a
positive ratio but no records (say ``{"content": 1}`` for a content-only run). The order is a
seeded shuffle: the same kinds, ratio and seed give the same indices on every machine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT_RATIO: dict[str, float] = {"behavior": 1.0, "content": 1.0}


def mix_counts(kinds: Sequence[str], ratio: Mapping[str, float] | None = None) -> dict[str, tuple[int, int]]:
    """Per kind: (records available, records in one mixed epoch). Raises ValueError on a ratio
    that does not fit the data (see the module docstring)."""
    ratio = dict(DEFAULT_RATIO if ratio is None else ratio)
    for kind, share in ratio.items():
        if not (share >= 0 and np.isfinite(share)):
            raise ValueError(f"mix ratio of {kind!r} must be a finite number >= 0, got {share!r}")
    available = Counter(kinds)
    unnamed = sorted(set(available) - set(ratio))
    if unnamed:
        raise ValueError(f"records of kind(s) {unnamed} have no mix ratio (ratio names {sorted(ratio)}); "
                         "add them to `mix` (0 leaves them out)")
    empty = sorted(k for k, share in ratio.items() if share > 0 and not available.get(k))
    if empty:
        raise ValueError(f"mix ratio asks for kind(s) {empty} but the data has none "
                         f"(kinds present: {dict(available)}); drop them from `mix`")
    used = {k: share for k, share in ratio.items() if share > 0}
    if not used:
        raise ValueError("mix ratio leaves out every kind")
    scale = max(available[k] / share for k, share in used.items())  # records per unit of ratio
    return {k: (available.get(k, 0), int(round(scale * used[k])) if k in used else 0)
            for k in sorted(set(ratio) | set(available))}


def mix_indices(kinds: Sequence[str], ratio: Mapping[str, float] | None = None, seed: int = 0) -> list[int]:
    """Indices into ``kinds`` (one entry per record) for one mixed epoch, shuffled with ``seed``.

    ``ratio`` defaults to behavior:content = 1:1. Short kinds are repeated up to their share
    (see the module docstring); every record appears at least once unless its kind's ratio is 0."""
    counts = mix_counts(kinds, ratio)
    rng = np.random.default_rng(seed)
    by_kind: dict[str, list[int]] = {}
    for i, kind in enumerate(kinds):
        by_kind.setdefault(kind, []).append(i)
    chosen: list[np.ndarray] = []
    for kind in sorted(counts):
        have, want = counts[kind]
        if want == 0:
            continue
        pool = np.asarray(by_kind[kind])
        passes, rest = divmod(want, have)
        chosen += [rng.permutation(pool) for _ in range(passes)]
        if rest:
            chosen.append(rng.choice(pool, size=rest, replace=False))
    order = np.concatenate(chosen)
    return rng.permutation(order).tolist()
