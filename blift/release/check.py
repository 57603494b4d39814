"""The release self-check: load every config back with ``datasets`` (normal and streaming) and
compare what it reads with what was written, and with what the run says it produced.

``datasets`` reads ``HF_DATASETS_OFFLINE`` / ``HF_HUB_OFFLINE`` at import, so the loading runs in a
child process with those set (and a throw-away cache): the only reliable way to make the call
offline whatever the parent imported before.

Two checks, each naming what disagrees:

* **counts** – ``load_dataset(folder, name=config)`` rows per split, and the rows a
  ``streaming=True`` load yields when iterated to the end, must both equal the rows written.
* **stats** – the instructions config must hold the instruct stage's ``out`` count from the
  run's ``stats.json`` minus the duplicate rows the writer left out. A difference means the
  run folder holds shards the run did not account for (left over from an older run) or lost some.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blift.errors import BliftError, causes


class ReleaseError(BliftError):
    """The release cannot be written (missing dataset, missing media file, unsafe target...)."""


class ReleaseCheckError(ReleaseError):
    """The written release does not load back as written; names the config and split."""


@dataclass
class CheckResult:
    """What ``load_dataset`` read back: rows per config and split (normal and streaming), features, timings."""

    ok: bool
    rows: dict[str, dict[str, int]]
    features: dict[str, str]
    seconds: float
    streaming_rows: dict[str, dict[str, int]] | None = None
    seconds_load: float = 0.0  # inside the child: every config, normal load
    seconds_stream: float = 0.0  # inside the child: every config, streamed to the end
    stats_note: str | None = None  # the stats.json comparison, when one was made

    def __str__(self) -> str:
        total = sum(n for splits in self.rows.values() for n in splits.values())
        state = "ok" if self.ok else "FAILED"
        how = "normal and streaming" if self.streaming_rows is not None else "normal"
        text = (f"{state}: load_dataset ({how}) read {len(self.rows)} config(s), {total} rows, counts match "
                f"({self.seconds:.1f} s)")
        return f"{text}; {self.stats_note}" if self.stats_note else text


@dataclass
class StatsComparison:
    """Instruction rows the run's ``stats.json`` accounts for vs rows released."""

    stats_out: int | None  # instruct ``out.instructions`` (None: stats.json says nothing)
    duplicates: int
    released: int
    problems: list[str] = field(default_factory=list)

    @property
    def expected(self) -> int | None:
        return None if self.stats_out is None else self.stats_out - self.duplicates

    def note(self) -> str:
        if self.stats_out is None:
            return "stats.json: no instruct count to compare with"
        state = "matches" if not self.problems else "MISMATCH"
        return (f"stats.json {state}: instruct out {self.stats_out} - {self.duplicates} duplicate(s) = "
                f"{self.expected}, released {self.released}")


def compare_with_stats(stats: dict[str, Any] | None, released: int, duplicates: int, *,
                       stage: str = "instruct", table: str = "instructions") -> StatsComparison:
    """Compare the released instruction rows with ``stats.json`` (``stages.<stage>.out.<table>``)."""
    out = None
    if stats:
        value = ((stats.get("stages") or {}).get(stage) or {}).get("out", {}).get(table)
        out = int(value) if isinstance(value, (int, float)) else None
    cmp = StatsComparison(stats_out=out, duplicates=duplicates, released=released)
    expected = cmp.expected  # None exactly when out is None
    if expected is not None and expected != released:
        cmp.problems.append(
            f"config {table!r}: stats.json says the {stage} stage wrote {out} rows; the release left out "
            f"{duplicates} duplicate(s), so {expected} were expected, but {released} were released "
            f"({released - expected:+d}). The run folder holds shards the run did not account for "
            f"(an older run's?) or lacks some; re-run the stage or clean the folder")
    return cmp


def check_release(folder: Path, expected: dict[str, dict[str, int]], streaming: bool = True, *,
                  timeout_s: float = 3600.0) -> CheckResult:
    """Load every config of ``folder`` with ``datasets`` offline (child process) and compare row counts.

    With ``streaming`` each config is also loaded with ``streaming=True`` and iterated to the end.
    Raises :class:`ReleaseCheckError` naming the config and split on the first mismatch.
    """
    folder = Path(folder)
    start = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix=".blift-release-check-", dir=folder.parent))
    try:
        env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
                   HF_DATASETS_CACHE=str(scratch / "cache"), HF_HUB_DISABLE_TELEMETRY="1")
        result_file = scratch / "result.json"
        code = "import sys; from blift.release.check import _load_counts_main; _load_counts_main(sys.argv[1:])"
        args = [sys.executable, "-c", code, str(folder), json.dumps(sorted(expected)), str(scratch / "cache"),
                str(result_file), "1" if streaming else "0"]
        try:
            proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ReleaseCheckError(f"{folder}: load_dataset check did not finish in {timeout_s:.0f} s") from None
        if proc.returncode != 0 or not result_file.is_file():
            tail = (proc.stderr or proc.stdout or "").strip()[-2000:]
            raise ReleaseCheckError(f"{folder}: load_dataset failed (exit {proc.returncode}):\n{tail}")
        loaded = json.loads(result_file.read_text())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if "error" in loaded:
        how = "streaming load_dataset" if loaded.get("streaming") else "load_dataset"
        raise ReleaseCheckError(f"{folder}: config {loaded['config']!r}: {how} failed: {loaded['error']}")
    _compare(folder, expected, loaded["rows"], "load_dataset read")
    if streaming:
        _compare(folder, expected, loaded["streaming_rows"], "load_dataset(streaming=True) yielded")
    return CheckResult(ok=True, rows=loaded["rows"], features=loaded["features"],
                       seconds=round(time.monotonic() - start, 3),
                       streaming_rows=loaded.get("streaming_rows") if streaming else None,
                       seconds_load=loaded["seconds_load"], seconds_stream=loaded["seconds_stream"])


def _compare(folder: Path, expected: dict[str, dict[str, int]], got_all: dict[str, dict[str, int]], how: str) -> None:
    for config, splits in expected.items():
        got = got_all.get(config, {})
        for split in sorted(set(splits) | set(got)):
            if splits.get(split) != got.get(split):
                raise ReleaseCheckError(
                    f"{folder}: config {config!r}, split {split!r}: wrote {splits.get(split)} rows, "
                    f"{how} {got.get(split)}")


def _chain(exc: BaseException) -> str:
    """The failure and up to three exceptions under it, on one line."""
    return " <- ".join(f"{type(e).__name__}: {e}" for e in causes(exc, limit=4))


def _load_counts_main(argv: list[str]) -> None:
    """Child-process side of :func:`check_release` (offline variables are set before the import)."""
    folder, names, cache_dir, out = argv[0], json.loads(argv[1]), argv[2], Path(argv[3])
    streaming = len(argv) > 4 and argv[4] == "1"
    import datasets

    datasets.disable_progress_bars()
    rows: dict[str, dict[str, int]] = {}
    streamed: dict[str, dict[str, int]] = {}
    features: dict[str, str] = {}
    t_load = t_stream = 0.0
    for name in names:
        try:
            t0 = time.perf_counter()
            loaded = datasets.load_dataset(folder, name=name, cache_dir=cache_dir)
            t_load += time.perf_counter() - t0
        except Exception as exc:  # reported to the parent with the config named, causes included
            out.write_text(json.dumps({"config": name, "error": _chain(exc)}))
            return
        rows[name] = {split: ds.num_rows for split, ds in loaded.items()}
        features[name] = str(next(iter(loaded.values())).features)
        del loaded
        if not streaming:
            continue
        try:
            t0 = time.perf_counter()
            stream = datasets.load_dataset(folder, name=name, streaming=True)
            counts = {}
            for split, ids in stream.items():
                # count rows as Arrow batches, media left undecoded: the check is about the files
                counts[split] = sum(len(batch) for batch in ids.decode(False).with_format("arrow").iter(1000))
            streamed[name] = counts
            t_stream += time.perf_counter() - t0
        except Exception as exc:
            out.write_text(json.dumps({"config": name, "error": _chain(exc), "streaming": True}))
            return
    out.write_text(json.dumps({"rows": rows, "streaming_rows": streamed if streaming else None,
                               "features": features, "seconds_load": round(t_load, 3),
                               "seconds_stream": round(t_stream, 3)}))
