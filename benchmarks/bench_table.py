"""Importing the published BLIFT table: ``table.read`` vs ``datasets``, rows/s and peak memory.

The input is synthetic Parquet in the published schema of ``behavior-in-the-wild/BLIFT`` (url,
permalink ``/r/<sub>/comments/<id>/<slug>/``, comments list<string>, num_comments int64,
subreddit, title), made by this script with a fixed seed: 1-6 comments of 5-40 words per post
(Zipf-distributed vocabulary), titles of ~10 words, files of ``--file-rows`` rows. No media is
downloaded.

ours      ``blift run`` of a one-stage pipeline: ``table.read`` with the stage config of
          ``pipelines/blift-hub.yaml`` copied as it is (id from the permalink with
          ``id_pattern``, media url, comments list, num_comments as behavior, 64 buckets), only the
          request changed to ``{path: <the local folder>}``; output: co-partitioned items,
          comments and behavior shards in a run folder.
baseline  what a user does today: ``datasets.load_dataset("parquet", data_files=...,
          split="train", cache_dir=<fresh>)`` then ``.to_parquet(out)`` (a fresh cache folder
          each run: never a cache hit). It copies the rows; it does not split comments into
          rows, parse ids or check values.

Each run is a child process (interpreter start and imports included, both ways); the runs go
interleaved (ours, baseline, ours, ...) and the table shows the median of ``--repeats``. Peak
memory is polled every 50 ms with psutil over the child's whole process tree (the child and
every descendant, summed; descendants listed twice a second): "RSS" is resident memory
including mapped file pages (``datasets`` memory-maps its Arrow cache, blift maps its bucket
temporaries when finishing), "anon" is RSS minus the file-backed and shared pages (psutil's
``shared``), i.e. the processes' own heap. "max proc" is the largest RSS of one process in the
tree (same polling). CPU is user+sys of the child tree (RUSAGE_CHILDREN: every descendant that
was waited for); rows per CPU second is the figure that holds on a busy machine. The memory goal
(blift's peak at ``--scale`` x input within 15% of 1x) is read on the tree's RSS.

    .venv/bin/python benchmarks/bench_table.py                 # 600k rows and 10x, 3 repeats
    .venv/bin/python benchmarks/bench_table.py --scale 3       # 600k and 1.8M rows
    .venv/bin/python benchmarks/bench_table.py --scale-repeats 1 --data /tmp/blift-table-data  # 10x once
    .venv/bin/python benchmarks/bench_table.py --quick         # <1 min; last lines: name: value
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

SUBREDDITS = ["pics", "aww", "mildlyinteresting", "EarthPorn", "food", "itookapicture", "funny",
              "interestingasfuck", "OldSchoolCool", "gaming", "Art", "CityPorn", "natureisfuckinglit",
              "AnimalsBeingDerps", "FoodPorn", "wallpapers", "memes", "dataisbeautiful", "cats", "dogpictures"]
ENV = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
       "SOURCE_DATE_EPOCH": "1732406400", "BLIFT_AUTHOR_SALT": "bench", "PYTHONPATH": str(ROOT)}


# ------------------------------------------------------------------------------------ the input


def _vocabulary(rng) -> tuple[object, object]:  # type: ignore[no-untyped-def]
    """20,000 pseudo-words of 1-11 letters and their Zipf probabilities."""
    import numpy as np
    import pyarrow as pa

    n = 20_000
    lengths = np.clip(rng.poisson(4.5, n), 1, 11)
    letters = rng.integers(97, 123, int(lengths.sum()), dtype=np.uint8)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    words = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(letters.tobytes()))
    p = 1.0 / np.arange(1, n + 1) ** 1.05
    return words, p / p.sum()


def _texts(rng, words, p, counts):  # type: ignore[no-untyped-def]
    """One string per entry of ``counts``: that many Zipf-drawn words joined by spaces."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    picks = rng.choice(len(words), size=int(counts.sum()), p=p).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), words.take(pa.array(picks)))
    return pc.binary_join(lists, " "), lists


def _base36(values, width: int):  # type: ignore[no-untyped-def]
    import numpy as np
    import pyarrow as pa

    alphabet = np.frombuffer(b"0123456789abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    digits = np.empty((len(values), width), dtype=np.uint8)
    v = values.astype(np.uint64)
    for k in range(width - 1, -1, -1):
        digits[:, k] = alphabet[(v % np.uint64(36)).astype(np.int64)]
        v = v // np.uint64(36)
    offsets = np.arange(0, (len(values) + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(digits.tobytes()))


def make_chunk(first: int, n: int, seed: int):  # type: ignore[no-untyped-def]
    """Rows ``first .. first+n`` of the synthetic BLIFT table (the same rows whatever the file size)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng([seed, first])
    words, p = _vocabulary(np.random.default_rng(seed))
    # unique post ids: a bijection of the row number (odd multiplier mod 36^7), 7 base-36 digits
    rows = np.arange(first, first + n, dtype=np.uint64)
    ids = _base36((rows * np.uint64(2_654_435_761) + np.uint64(12_345)) % np.uint64(36**7), 7)
    title, title_words = _texts(rng, words, p, np.clip(rng.normal(10, 3, n).round(), 3, 25).astype(np.int64))
    slug = pc.binary_join(pc.list_slice(title_words, 0, 6), "_")
    sub = pa.array(SUBREDDITS).take(pa.array(rng.integers(0, len(SUBREDDITS), n)))
    permalink = pc.binary_join_element_wise("/r/", sub, "/comments/", ids, "/", slug, "/", "")
    url = pc.binary_join_element_wise("https://i.redd.it/", _base36(rng.integers(0, 36**10, n, dtype=np.int64), 13),
                                      pa.array(rng.choice(np.array([".jpg", ".png"]), n, p=[0.85, 0.15])), "")
    per_post = rng.integers(1, 7, n)
    comment_text, _ = _texts(rng, words, p, rng.integers(5, 41, int(per_post.sum())))
    comments = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(per_post)]).astype(np.int32)),
                                        comment_text)
    num_comments = pa.array(per_post + rng.geometric(0.02, n) - 1, pa.int64())
    return pa.table({"url": url, "permalink": permalink, "comments": comments, "num_comments": num_comments,
                     "subreddit": sub, "title": title})


def make_input(folder: Path, rows: int, file_rows: int, seed: int = 0) -> list[Path]:
    """Parquet files of ``file_rows`` rows in ``folder`` (reused when already there)."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    t0 = time.perf_counter()
    made = 0
    for k, first in enumerate(range(0, rows, file_rows)):
        path = folder / f"train-{k:05d}.parquet"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            pq.write_table(make_chunk(first, min(file_rows, rows - first), seed), tmp)
            tmp.rename(path)
            made += 1
        files.append(path)
    if made:
        mib = sum(f.stat().st_size for f in files) / 2**20
        print(f"# generated {rows:,} rows in {len(files)} files ({mib:,.0f} MiB) in "
              f"{time.perf_counter() - t0:.1f}s: {folder}", flush=True)
    return files


# ------------------------------------------------------------------------------------ the runs


def pipeline_file(data: Path, out: Path, buckets: int | None) -> Path:
    """pipelines/blift-hub.yaml's table.read stage, its request replaced by the local folder."""
    import yaml

    hub = yaml.safe_load((ROOT / "pipelines" / "blift-hub.yaml").read_text())
    stage = next(s for s in hub["stages"] if s["stage"] == "table.read")
    stage = {**stage, "requests": [{"path": str(data)}]}
    if buckets is not None:
        stage["config"] = {**stage["config"], "buckets": buckets}
    out.write_text(yaml.safe_dump({"name": "bench-table", "stages": [stage]}, sort_keys=False))
    return out


def child_datasets(files: list[str], out: str, cache: str) -> None:
    import datasets

    datasets.disable_progress_bars()
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=cache)
    ds.to_parquet(out)
    print(json.dumps({"rows": ds.num_rows}))


def run_child(cmd: list[str], env: dict[str, str], log: Path) -> dict:
    """Run ``cmd``, polling the memory of its process tree; wall, CPU and memory of the run."""
    import psutil

    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    top = psutil.Process(proc.pid)
    peak_rss = peak_anon = peak_proc = procs = 0
    tree, listed = [top], 0.0
    while proc.poll() is None:
        now = time.perf_counter()
        if now - listed > 0.5:  # listing descendants scans /proc: twice a second, not every sample
            try:
                tree, listed = [top, *top.children(recursive=True)], now
            except psutil.Error:
                pass
            procs = max(procs, len(tree))
        rss = anon = 0
        for p in tree:
            try:
                m = p.memory_info()
            except psutil.Error:
                continue
            rss += m.rss
            anon += m.rss - m.shared
            peak_proc = max(peak_proc, m.rss)
        peak_rss, peak_anon = max(peak_rss, rss), max(peak_anon, anon)
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    return {"seconds": wall, "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            "rss_mb": peak_rss / 2**20, "anon_mb": peak_anon / 2**20, "max_proc_mb": peak_proc / 2**20,
            "procs": procs, "load": load}


def parquet_rows(folder: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in folder.glob("*.parquet"))


def run_ours(data: Path, files: list[Path], tmp: Path, buckets: int | None, expect: dict[str, int]) -> dict:
    work = Path(tempfile.mkdtemp(prefix="ours-", dir=tmp))
    pipe = pipeline_file(data, work / "pipe.yaml", buckets)
    cmd = [sys.executable, "-m", "blift.cli", "run", str(pipe), "--out", str(work / "run"), "--no-progress"]
    r = run_child(cmd, {**os.environ, **ENV}, work / "log.txt")
    got = {"items": parquet_rows(work / "run" / "items"), "comments": parquet_rows(work / "run" / "comments")}
    if got != expect:
        sys.exit(f"blift wrote {got}, expected {expect}; log: {(work / 'log.txt').read_text()[-2000:]}")
    r["out_mb"] = sum(f.stat().st_size for d in ("items", "comments", "behavior")
                      for f in (work / "run" / d).glob("*.parquet")) / 2**20
    shutil.rmtree(work, ignore_errors=True)
    return r


def run_baseline(files: list[Path], tmp: Path, rows: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="datasets-", dir=tmp))
    listing = work / "files.json"
    listing.write_text(json.dumps([str(f) for f in files]))
    out = work / "out.parquet"
    cmd = [sys.executable, __file__, "--child-datasets", str(listing), str(out), str(work / "cache")]
    r = run_child(cmd, {**os.environ, **ENV}, work / "log.txt")
    got = parquet_rows(work) if out.exists() else 0
    if got != rows:
        sys.exit(f"datasets wrote {got} rows, expected {rows}")
    r["out_mb"] = out.stat().st_size / 2**20
    shutil.rmtree(work, ignore_errors=True)
    return r


def expected_counts(files: list[Path]) -> dict[str, int]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    items = comments = 0
    for f in files:
        t = pq.read_table(f, columns=["comments"])
        items += t.num_rows
        comments += int(pc.sum(pc.list_value_length(t["comments"])).as_py())
    return {"items": items, "comments": comments}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=None, help="rows at 1x (default 600,000; --quick 20,000)")
    ap.add_argument("--scale", type=int, default=None, help="the large input, as a multiple of --rows (default 10; "
                    "--quick 3); 1: only the 1x input")
    ap.add_argument("--repeats", type=int, default=None, help="runs of each, interleaved (default 3; --quick 1)")
    ap.add_argument("--scale-repeats", type=int, default=None,
                    help="runs of each at the large input (default: --repeats)")
    ap.add_argument("--file-rows", type=int, default=100_000, help="rows per input Parquet file")
    ap.add_argument("--buckets", type=int, default=None,
                    help="override blift-hub.yaml's buckets (64) for every blift run")
    ap.add_argument("--scale-buckets", action="store_true",
                    help="also run blift at the large input with buckets x scale (once)")
    ap.add_argument("--no-baseline-at-scale", action="store_true", help="skip datasets at the large input")
    ap.add_argument("--data", type=Path, default=None,
                    help="keep the generated input here and reuse it (default: a temporary folder, removed)")
    ap.add_argument("--tmp", type=Path, default=None, help="where run folders and caches go (default: TMPDIR)")
    ap.add_argument("--quick", action="store_true", help="20k and 60k rows, one run each: under a minute")
    ap.add_argument("--child-datasets", nargs=3, metavar=("FILES_JSON", "OUT", "CACHE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_datasets:
        listing, out, cache = args.child_datasets
        child_datasets(json.loads(Path(listing).read_text()), out, cache)
        return
    rows = args.rows or (20_000 if args.quick else 600_000)
    scale = args.scale or (3 if args.quick else 10)
    repeats = args.repeats or (1 if args.quick else 3)
    file_rows = min(args.file_rows, rows)

    tmp_root = Path(tempfile.mkdtemp(prefix="bench-table-", dir=args.tmp))
    data_root = args.data or tmp_root / "data"
    try:
        sizes = {"1x": rows} | ({f"{scale}x": rows * scale} if scale > 1 else {})
        inputs = {}
        for label, n in sizes.items():
            folder = data_root / f"blift-{n}"
            files = make_input(folder, n, file_rows)
            inputs[label] = (folder, files, expected_counts(files))
        load = os.getloadavg()
        print(f"# cpus={os.cpu_count()} load={load[0]:.2f},{load[1]:.2f},{load[2]:.2f} python={sys.version.split()[0]} "
              f"repeats={repeats} file_rows={file_rows} buckets={args.buckets or 'as blift-hub.yaml (64)'}",
              flush=True)
        print(f"{'impl':9s} {'input':6s} {'rows':>10s} {'seconds':>8s} {'rows/s':>9s} {'CPU s':>7s} "
              f"{'RSS MB':>7s} {'anon MB':>7s} {'max proc':>8s} {'procs':>5s} {'out MB':>7s} {'load':>5s}", flush=True)
        results: dict[tuple[str, str], list[dict]] = {}

        def show(impl: str, label: str, n: int, r: dict) -> None:
            print(f"{impl:9s} {label:6s} {n:10,d} {r['seconds']:8.2f} {n / r['seconds']:9,.0f} {r['cpu_s']:7.1f} "
                  f"{r['rss_mb']:7.0f} {r['anon_mb']:7.0f} {r['max_proc_mb']:8.0f} {r['procs']:5d} "
                  f"{r['out_mb']:7.0f} {r['load']:5.2f}", flush=True)

        for label, n in sizes.items():
            folder, files, expect = inputs[label]
            for _ in range(repeats if label == "1x" else (args.scale_repeats or repeats)):
                for impl in ("ours", "datasets"):
                    if impl == "datasets" and label != "1x" and args.no_baseline_at_scale:
                        continue
                    r = (run_ours(folder, files, tmp_root, args.buckets, expect) if impl == "ours"
                         else run_baseline(files, tmp_root, n))
                    results.setdefault((impl, label), []).append(r)
                    show(impl, label, n, r)
            if label != "1x" and args.scale_buckets:
                r = run_ours(folder, files, tmp_root, (args.buckets or 64) * scale, expect)
                results[("ours-scaled-buckets", label)] = [r]
                show(f"ours b*{scale}", label, n, r)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)

    def med(impl: str, label: str, key: str) -> float | None:
        runs = results.get((impl, label))
        return statistics.median(r[key] for r in runs) if runs else None

    print(f"\n# median of the runs ({repeats} at 1x, {args.scale_repeats or repeats} at {scale}x); "
          "rows/s on the wall time of the whole child (start-up included)")
    print("| impl | input | rows | rows/s | CPU s | rows per CPU s | peak RSS tree MB | anon MB | largest process MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for impl, label in results:
        n = sizes[label]
        print(f"| {impl} | {label} | {n:,} | {n / med(impl, label, 'seconds'):,.0f} | "
              f"{med(impl, label, 'cpu_s'):.1f} | {n / med(impl, label, 'cpu_s'):,.0f} | "
              f"{med(impl, label, 'rss_mb'):,.0f} | {med(impl, label, 'anon_mb'):,.0f} | "
              f"{med(impl, label, 'max_proc_mb'):,.0f} |")
    big = f"{scale}x"
    ours_rate = rows / med("ours", "1x", "seconds")
    base_rate = rows / med("datasets", "1x", "seconds")
    print(f"# at 1x: ours {ours_rate:,.0f} rows/s, datasets {base_rate:,.0f} rows/s ({ours_rate / base_rate:.2f}x); "
          f"per CPU second: ours {rows / med('ours', '1x', 'cpu_s'):,.0f}, "
          f"datasets {rows / med('datasets', '1x', 'cpu_s'):,.0f}")
    if scale > 1:
        for impl in ("ours", "datasets"):
            if med(impl, big, "rss_mb"):
                print(f"# memory {big}/1x, {impl}: tree RSS "
                      f"{med(impl, big, 'rss_mb') / med(impl, '1x', 'rss_mb'):.2f}, "
                      f"anon {med(impl, big, 'anon_mb') / med(impl, '1x', 'anon_mb'):.2f}, largest process "
                      f"{med(impl, big, 'max_proc_mb') / med(impl, '1x', 'max_proc_mb'):.2f}"
                      + (" (goal <= 1.15)" if impl == "ours" else ""))
    print(f"table_read_rows_per_s: {ours_rate:.0f}")
    print(f"table_read_rows_per_cpu_s: {rows / med('ours', '1x', 'cpu_s'):.0f}")
    print(f"datasets_rows_per_s: {base_rate:.0f}")
    if scale > 1:
        print(f"table_read_memory_ratio_{big}: {med('ours', big, 'rss_mb') / med('ours', '1x', 'rss_mb'):.3f}")


if __name__ == "__main__":
    main()
