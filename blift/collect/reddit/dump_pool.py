"""The parse worker pool of ``reddit.dumps`` and the allocator tuning its processes need.

Apart from the stage because it is process plumbing, not ingestion: spawned workers import this
module (not the stage), take the filters once (:func:`_init_worker`), parse batches with
:func:`blift.collect.reddit.dump_parse.ingest_batch` and send each result back pickled with
protocol 5. :class:`_Parser` keeps input order, bounds the batches in flight, and parses in the
parent until the workers are up (~0.5 s). Workers die with their parent
(:func:`blift.processes.die_with_parent`).

Allocator tuning, measured on ``benchmarks/bench_dumps.py``: Arrow's jemalloc pool keeps peak
memory flat from 1x to 10x input (:func:`_use_jemalloc`, also used by the stage's parent), and
glibc keeping freed heap saves ~1 page fault per record in a worker (:func:`_keep_freed_heap`).

Worker-global state (``_WORKER_FILTERS``, ``_WORKER_KEPT``) lives here and only here.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import pickle
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Iterator

import numpy as np
import pyarrow as pa

from blift.collect.reddit.dump_parse import _Batch, _Filters, ingest_batch
from blift.collect.reddit.dump_read import lines_of
from blift.processes import die_with_parent

log = logging.getLogger(__name__)

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
    batch = ingest_batch(kind, file, first_line, lines_of(pieces, max_line_bytes), _WORKER_FILTERS, kept,
                         max_line_bytes)
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
        """Results of ``(first line, pieces)`` batches
        (:func:`blift.collect.reddit.dump_read.read_blocks`), in input order.

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
