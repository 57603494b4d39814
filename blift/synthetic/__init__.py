"""Synthetic inputs in real platform shapes, for tests, benchmarks and demos.

Each module writes what one source reads (for example :mod:`blift.synthetic.reddit_dumps`:
Pushshift / Arctic-Shift ``.zst`` dumps), with the field sets and sizes of real records, so that
costs measured on them are the costs of real data. Deterministic per seed: the same arguments
give the same records and the same bytes.
"""
