"""The local executor: a spawn process pool per stage, resilient to dying workers.

* ``setup()`` runs once per worker (pool initializer), so models and clients load once.
* At most ``max_in_flight`` shards are submitted at a time (memory stays bounded).
* A shard that raises is retried up to ``max_attempts`` times, then recorded as failed; the job
  goes on. A worker that dies (OOM killer, segfault, ``kill -9``) breaks a stdlib pool
  (``BrokenProcessPool``): the pool is rebuilt and the shards that were in flight are retried.
* Workers die with their parent (see ``worker._watch_parent``).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Callable

from blift.errors import BliftError
from blift.runner.worker import (
    ShardSummary,
    ShardTask,
    StageSpec,
    init_worker,
    run_task,
)

log = logging.getLogger("blift.runner")


@dataclass
class ShardFailure:
    shard: str
    attempts: int
    error_type: str
    message: str


def retry_or_fail(task: ShardTask, attempts: dict[str, int], pending: list[ShardTask], max_attempts: int,
                  on_failed: Callable[[ShardFailure], None], error_type: str, message: str) -> None:
    """Queue a failed shard again while it has attempts left, else report it failed (both executors)."""
    if attempts[task.shard] < max_attempts:
        log.warning("shard %s failed (%s: %s); retrying (attempt %d of %d)", task.shard, error_type,
                    message.splitlines()[0] if message else "", attempts[task.shard] + 1, max_attempts)
        pending.append(task)
    else:
        on_failed(ShardFailure(task.shard, attempts[task.shard], error_type, message))


class LocalExecutor:
    def __init__(self, workers: int | None = None, *, max_attempts: int = 3, max_in_flight: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.max_attempts = max_attempts
        self.max_in_flight = max_in_flight or self.workers * 2

    def run(
        self,
        spec: StageSpec,
        tasks: list[ShardTask],
        on_done: Callable[[ShardSummary], None],
        on_failed: Callable[[ShardFailure], None],
    ) -> None:
        if not tasks:
            return
        pending = list(reversed(tasks))  # pop() from the end keeps submission order
        attempts: dict[str, int] = {t.shard: 0 for t in tasks}
        workers = min(self.workers, len(tasks))
        ctx = mp.get_context("spawn")
        while pending:
            # Model libraries (torch, CTranslate2, OpenMP) use every core by default; N workers each
            # doing so oversubscribe the machine (measured 7x slower captioning on 2 cores).
            threads = max(1, (os.cpu_count() or 1) // workers)
            pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_worker,
                                       initargs=(spec, os.getpid(), threads))
            in_flight: dict[Future[ShardSummary], ShardTask] = {}
            broken = False
            try:
                while pending or in_flight:
                    while pending and len(in_flight) < self.max_in_flight and not broken:
                        task = pending.pop()
                        attempts[task.shard] += 1
                        try:
                            in_flight[pool.submit(run_task, task)] = task
                        except BrokenProcessPool:
                            attempts[task.shard] -= 1
                            pending.append(task)
                            broken = True
                    if not in_flight:
                        break
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for fut in done:
                        task = in_flight.pop(fut)
                        try:
                            on_done(fut.result())
                        except BrokenProcessPool:
                            broken = True
                            retry_or_fail(task, attempts, pending, self.max_attempts, on_failed, "BrokenProcessPool",
                                          "a worker process died while this shard was in flight")
                        except BliftError:
                            broken = True  # stop the workers, then let the error end the run
                            raise
                        except Exception as exc:  # noqa: BLE001 - a shard's failure never stops the job
                            retry_or_fail(task, attempts, pending, self.max_attempts, on_failed, type(exc).__name__,
                                          str(exc))
                    if broken:
                        for fut, task in list(in_flight.items()):
                            in_flight.pop(fut)
                            retry_or_fail(task, attempts, pending, self.max_attempts, on_failed, "BrokenProcessPool",
                                          "a worker process died while this shard was in flight")
                        break
            finally:
                pool.shutdown(wait=not broken, cancel_futures=True)
            if broken:
                log.warning("%s: a worker process died; restarting the pool (%d shard(s) left)", spec.stage_name,
                            len(pending))
