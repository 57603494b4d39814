"""Progress: a rich bar per stage on a terminal, plain log lines otherwise (CI, nohup, files)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

log = logging.getLogger("blift")


class Reporter:
    """Receives runner events; subclasses draw them."""

    def stage_start(self, stage: str, total: int, skipped: int, describe: str = "") -> None: ...

    def shard_done(self, stage: str, summary: Any) -> None: ...

    def shard_failed(self, stage: str, failure: Any) -> None: ...

    def stage_end(self, stage: str, stats: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class LogReporter(Reporter):
    def __init__(self) -> None:
        self._t0: dict[str, float] = {}
        self._n: dict[str, list[int]] = {}

    def stage_start(self, stage: str, total: int, skipped: int, describe: str = "") -> None:
        self._t0[stage] = time.monotonic()
        self._n[stage] = [0, total, 0]
        log.info("stage %s: %d shard(s) to run, %d already done%s", stage, total, skipped,
                 f" ({describe})" if describe else "")

    def shard_done(self, stage: str, summary: Any) -> None:
        n = self._n[stage]
        n[0] += 1
        n[2] += summary.records_in
        rate = n[2] / max(time.monotonic() - self._t0[stage], 1e-9)
        out = ", ".join(f"{k}={v}" for k, v in summary.out_rows.items())
        log.info("stage %s: shard %s done [%d/%d] in=%d %s (%.1f records/s)", stage, summary.shard, n[0], n[1],
                 summary.records_in, out, rate)

    def shard_failed(self, stage: str, failure: Any) -> None:
        log.error("stage %s: shard %s failed after %d attempt(s): %s: %s", stage, failure.shard, failure.attempts,
                  failure.error_type, failure.message.splitlines()[0] if failure.message else "")

    def stage_end(self, stage: str, stats: dict[str, Any]) -> None:
        log.info("stage %s: finished: %d records in, out %s, dropped %d, errors %d", stage, stats["records_in"],
                 stats["out"], sum(stats["dropped"].values()), sum(stats["errors"].values()))


class RichReporter(LogReporter):
    """A bar per stage with shards done, records, rate and ETA."""

    def __init__(self, console: Console | None = None) -> None:
        super().__init__()
        self.progress = Progress(
            TextColumn("[bold]{task.fields[stage]:<16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("shards  {task.fields[records]} records  {task.fields[rate]}/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self.progress.start()
        self._tasks: dict[str, Any] = {}

    def stage_start(self, stage: str, total: int, skipped: int, describe: str = "") -> None:
        super().stage_start(stage, total, skipped, describe)
        self._tasks[stage] = self.progress.add_task(stage, total=max(total, 1) if total else 0, stage=stage, records=0,
                                                    rate="0")

    def shard_done(self, stage: str, summary: Any) -> None:
        n = self._n[stage]
        n[0] += 1
        n[2] += summary.records_in
        rate = n[2] / max(time.monotonic() - self._t0[stage], 1e-9)
        self.progress.update(self._tasks[stage], advance=1, records=n[2], rate=f"{rate:,.1f}")

    def stage_end(self, stage: str, stats: dict[str, Any]) -> None:
        task = self._tasks.get(stage)
        if task is not None:
            self.progress.update(task, completed=self.progress.tasks[task].total)

    def close(self) -> None:
        self.progress.stop()


def make_reporter(force: bool | None = None) -> Reporter:
    use_rich = sys.stderr.isatty() if force is None else force
    return RichReporter() if use_rich else LogReporter()
