"""Release throughput: ``blift release`` and ``load_dataset`` on 100k instruction records,
images as paths vs images as bytes, side by side.

The run folder is synthesized with blift.tables the way the pipeline leaves it: 8 shards of
``instructions`` (a behavior and a content record per post, conversations of 2-4 KB of text,
typed targets), one small synthetic JPEG per post under ``media_files/`` and a ``stats.json``
whose instruct count the release checks against.

Measured per mode (``paths`` / ``bytes``):

* ``release s`` – ``release(..., check=False)``: reading the shards, placing (hard-linking) or
  embedding the images, writing the shards, ``release.json``, the card.
* ``load_dataset s`` – the self-check's normal ``load_dataset`` in a fresh child process with an
  empty cache (builds the Arrow cache: what a user's first load costs).
* ``streaming s`` – ``load_dataset(streaming=True)`` iterated to the end (Arrow batches, media not
  decoded: what the self-check does).
* ``check s`` – the whole self-check wall time (child start, imports, both loads).
* sizes of ``data/`` and ``media/``, shard and row-group counts.

Usage: ``python benchmarks/bench_release.py [--quick] [--records N] [--keep DIR]``. ``--quick``
runs 10k records. The last lines are ``name: value`` pairs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blift import tables  # noqa: E402
from blift.ids import split_of  # noqa: E402
from blift.release.check import check_release  # noqa: E402
from blift.release.writer import release  # noqa: E402

SHARDS = 8
T0 = datetime(2024, 6, 1, tzinfo=timezone.utc)
WORDS = ("the a photo of sunset over mountain lake people upvoted this comment said really beautiful colours "
         "light sky city street night dog cat art painting detail composition score ratio thread reply").split()


def _jpegs(n: int, rng: np.random.Generator) -> list[bytes]:
    """``n`` distinct small JPEGs (64x48 noise over a gradient, ~2-3 KB each)."""
    from PIL import Image

    out = []
    base = np.linspace(0, 255, 64 * 48 * 3).reshape(48, 64, 3)
    for _ in range(n):
        arr = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=80)
        out.append(buf.getvalue())
    return out


def _text(rng: np.random.Generator, lo: int, hi: int) -> str:
    n_words = int(rng.integers(lo, hi)) // 6
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n_words))


def make_run(run: Path, records: int, seed: int = 0) -> dict[str, Any]:
    """A run folder with ``records`` instruction records in 8 shards, one JPEG per post."""
    rng = np.random.default_rng(seed)
    posts = records // 2
    payloads = _jpegs(256, rng)  # files are distinct paths; their bytes cycle through 256 images
    conv_bytes = 0
    per_shard = -(-posts // SHARDS)
    for s in range(SHARDS):
        rows = []
        for p in range(s * per_shard, min(posts, (s + 1) * per_shard)):
            uid = f"reddit:b{p}"
            path = f"media_files/{p % 256:02x}/{p:08d}.jpg"
            file = run / path
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(payloads[p % 256])
            context = _text(rng, 1500, 3000)
            comments = [_text(rng, 60, 300) for _ in range(3)]
            for task in ("behavior", "content"):
                answer = ("It received 1,234 upvotes (ratio 0.93) and 56 comments. Top comments: "
                          + " | ".join(comments)
                          if task == "behavior" else "The image shows " + _text(rng, 300, 700))
                conv = [{"from": "human", "value": "<image>\n" + context}, {"from": "gpt", "value": answer}]
                conv_bytes += sum(len(t["value"]) for t in conv)
                rows.append({
                    "id": f"{uid}:{task}", "uid": uid, "platform": "reddit", "task": task,
                    "template": f"reddit_image_{task}", "template_version": 1, "media_kind": "image",
                    "media": [path], "conversations": conv,
                    "targets": {"score": 1234 + p, "upvote_ratio": 0.93, "num_comments": 56, "comments": comments,
                                "comment_scores": [30, 20, 10]} if task == "behavior" else None,
                    "split": split_of(uid), "collected_at": T0 + timedelta(seconds=p)})
        tables.write_rows(run / "instructions" / f"part-{s:05d}.parquet", rows, "instructions")
    n = posts * 2
    (run / "stats.json").write_text(json.dumps(
        {"pipeline": "bench", "stages": {"instruct": {"out": {"instructions": n}}}}))
    return {"records": n, "posts": posts, "mean_conversation_bytes": conv_bytes / max(n, 1)}


def _du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def bench_mode(run: Path, out: Path, images: str) -> dict[str, float]:
    t0 = time.perf_counter()
    report = release(run, out, configs={"instructions": "instructions"}, images=images, check=False)  # type: ignore[arg-type]
    t_release = time.perf_counter() - t0
    t0 = time.perf_counter()
    check = check_release(out, report.rows, streaming=True)
    t_check = time.perf_counter() - t0
    shards = [p for p in (out / "data").rglob("*.parquet")]
    groups = [pq.read_metadata(p).num_row_groups for p in shards]
    return {"release_s": t_release, "load_s": check.seconds_load, "stream_s": check.seconds_stream,
            "check_s": t_check, "data_mb": _du(out / "data") / 1e6, "media_mb": _du(out / "media") / 1e6,
            "media_files": report.media_files, "shards": len(shards), "row_groups": sum(groups),
            "records": sum(report.rows["instructions"].values())}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10k records")
    ap.add_argument("--records", type=int, default=None, help="instruction records (default 100k, quick 10k)")
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = ap.parse_args(argv)
    records = args.records or (10_000 if args.quick else 100_000)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-release-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HOME", str(work / "hf"))
    try:
        t0 = time.perf_counter()
        facts = make_run(work / "run", records)
        print(f"synthesized {facts['records']:,} records ({facts['posts']:,} posts, "
              f"{facts['mean_conversation_bytes'] / 1000:.1f} KB conversation text per record, {SHARDS} shards) "
              f"in {time.perf_counter() - t0:.1f} s", flush=True)
        results = {}
        for mode in ("paths", "bytes"):
            results[mode] = bench_mode(work / "run", work / f"release-{mode}", mode)
            print(f"  {mode}: done", flush=True)
        cols = [("release s", "release_s", "{:.1f}"), ("load_dataset s", "load_s", "{:.1f}"),
                ("streaming s", "stream_s", "{:.1f}"), ("check s", "check_s", "{:.1f}"),
                ("data MB", "data_mb", "{:.0f}"), ("media MB", "media_mb", "{:.0f}"),
                ("media files", "media_files", "{:,}"), ("shards", "shards", "{}"), ("row groups", "row_groups", "{}")]
        print()
        print(f"| images ({records:,} records) | " + " | ".join(c[0] for c in cols) + " |")
        print("|---|" + "---:|" * len(cols))
        for mode, r in results.items():
            print(f"| {mode} | " + " | ".join(fmt.format(r[key]) for _, key, fmt in cols) + " |")
        print()
        for mode, r in results.items():
            print(f"release_{mode}_records_per_s: {r['records'] / r['release_s']:.0f}")
            print(f"load_dataset_{mode}_s: {r['load_s']:.2f}")
            print(f"streaming_{mode}_s: {r['stream_s']:.2f}")
        print(f"release_paths_s: {results['paths']['release_s']:.2f}")
        print(f"release_bytes_s: {results['bytes']['release_s']:.2f}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
