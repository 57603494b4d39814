"""Run folders on S3: what planning a rerun costs, and the sample on S3 vs on local disk.

    .venv/bin/python benchmarks/bench_remote.py              # 500 shards; latencies 0 and 20 ms; the sample
    .venv/bin/python benchmarks/bench_remote.py --quick      # 100 shards; latencies 0 and 20 ms

The S3 endpoint is moto's S3 app on loopback behind a werkzeug server that can add a fixed delay
to every request (``--latency-ms``: ~20 ms is a typical in-region S3 round trip; loopback is ~1 ms).

1. **Planning a rerun**: a toy stage (tests/toy_stages.py, one record per shard) runs over N
   shards into ``s3://``; then the plan of its rerun (every shard skipped) is timed two ways, both
   deciding the same: the runner's :func:`blift.runner.run.plan_stage` (one LIST per folder and
   concurrent manifest GETs, :class:`blift.storage.Listing`) and the obvious alternative, the
   per-file calls the local path makes (a HEAD per input fingerprint and per output, a GET per
   manifest).
2. **The sample pipeline** (full run only): ``blift run pipelines/sample.yaml --no-release`` into a
   local folder and into ``s3://`` on the loopback endpoint (no added latency), 2 workers.

``--quick`` prints ``name: value`` lines last.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
sys.path.insert(0, str(TESTS))

DELAY = {"s": 0.0}


def start_s3() -> str:
    """moto's S3 app behind a threaded werkzeug server whose every request waits DELAY["s"]."""
    import logging

    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = DomainDispatcherApplication(create_backend_app)

    def delayed(environ, start_response):  # type: ignore[no-untyped-def]
        if DELAY["s"]:
            time.sleep(DELAY["s"])
        return app(environ, start_response)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_server("127.0.0.1", port, delayed, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{port}"


def set_env(endpoint: str, scratch: Path) -> None:
    from toy_stages import TOY_STAGES

    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1", "BLIFT_SCRATCH": str(scratch), "BLIFT_STAGES": TOY_STAGES,
                       "SOURCE_DATE_EPOCH": "1732406400", "HF_HUB_OFFLINE": "1", "BLIFT_AUTHOR_SALT": "bench",
                       "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])})


def toy_run(url: str, shards: int, tmp: Path) -> tuple[object, object, list[str]]:
    """The toy fetch stage over ``shards`` one-record shards, run for real; returns what planning needs."""
    import yaml

    from blift import tables
    from blift.config import StageEntry, load_pipeline, stage_config_hash, validate_stage_config
    from blift.pipeline import RunOptions, run_pipeline
    from blift.registry import load_stage
    from blift.runner import layout
    from blift.runner.worker import StageSpec
    from blift.storage import run_path

    markers = tmp / "markers"
    markers.mkdir()
    run_dir = run_path(url)
    for k in range(shards):
        tables.write_rows(run_dir / "item_refs" / f"s{k:05d}.parquet", [{
            "uid": f"reddit:a{k}", "platform": "reddit", "item_id": f"a{k}",
            "request_id": "r", "rank": 0, "url": None}],
            "item_refs")
    pipe = tmp / "toy.yaml"
    pipe.write_text(yaml.safe_dump({"name": "toy", "stages": [
        {"stage": "toy.fetch", "config": {"marker_dir": str(markers)}}]}))
    report = run_pipeline(pipe, RunOptions(out=url, workers=2, progress=False))
    assert not report.failed, report.failed
    entry: StageEntry = load_pipeline(pipe).stages[0]
    cls = load_stage(entry.stage)
    config = validate_stage_config(cls, entry.config, "bench")
    spec = StageSpec(stage_name=cls.name, config=config.model_dump(mode="json"),
                     config_hash=stage_config_hash(cls, config), run_dir=url,
                     inputs={d: d for d in cls.inputs}, outputs={d: d for d in cls.outputs}, record_timeout_s=None)
    return cls, spec, layout.shard_ids(layout.dataset_dir(run_dir, "item_refs"))


def plan_per_file(cls, spec, shards: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
    """The obvious alternative: the local path's per-file calls (HEAD, GET, HEADs) for each shard."""
    from blift import storage
    from blift.runner import layout
    from blift.runner.manifest import matches, read_manifest
    from blift.runner.worker import input_path

    run_dir = storage.run_path(spec.run_dir)
    skipped = []
    for shard in shards:
        fps = {d: storage.fingerprint(input_path(run_dir, spec, d, shard)) for d in cls.inputs}
        manifest = read_manifest(layout.manifest_path(run_dir, spec.stage_name, shard))
        if matches(manifest, run_dir=run_dir, stage_version=cls.version, config_hash=spec.config_hash, inputs=fps):
            skipped.append(shard)
    return skipped


def sample_run(out: str) -> float:
    started = time.perf_counter()
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "blift"), "run", str(ROOT / "pipelines" / "sample.yaml"),
                           "--out", out, "--no-release", "--no-progress", "--workers", "2"],
                          env=os.environ.copy(), capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"sample run into {out} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=int, default=None)
    parser.add_argument("--latency-ms", type=float, nargs="*", default=[0.0, 20.0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = args.shards or (100 if args.quick else 500)

    import s3fs

    from blift.runner.run import plan_stage

    endpoint = start_s3()
    with tempfile.TemporaryDirectory(prefix="blift-bench-remote-") as tmp_name:
        tmp = Path(tmp_name)
        set_env(endpoint, tmp / "scratch")
        fs = s3fs.S3FileSystem(use_listings_cache=False)
        fs.mkdir("bench")
        t0 = time.perf_counter()
        cls, spec, shards = toy_run("s3://bench/toy", n, tmp)
        setup_s = time.perf_counter() - t0
        rows = []
        for latency in args.latency_ms:
            DELAY["s"] = latency / 1000
            t0 = time.perf_counter()
            plan = plan_stage(cls, spec, shards, retry_failed=False)
            listing_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            skipped = plan_per_file(cls, spec, shards)
            per_file_s = time.perf_counter() - t0
            assert plan.skipped == skipped == shards and not plan.todo, "the two plans disagree"
            rows.append((latency, listing_s, per_file_s))
        DELAY["s"] = 0.0
        sample = None
        if not args.quick:
            fs.mkdir("sample")
            sample = (sample_run(str(tmp / "sample-local")), sample_run("s3://sample/run"))

    print(f"planning the rerun of a {n}-shard stage (all skipped; first run took {setup_s:.1f} s), "
          "S3 on loopback with a fixed delay per request")
    print("| delay per request | listing (blift) s | per-file calls s | speed-up |")
    print("|---:|---:|---:|---:|")
    for latency, listing_s, per_file_s in rows:
        print(f"| {latency:.0f} ms | {listing_s:.2f} | {per_file_s:.2f} | {per_file_s / listing_s:.1f}x |")
    if sample:
        print("\nsample pipeline (no release), 2 workers")
        print("| run folder | wall s | vs local |")
        print("|---|---:|---:|")
        print(f"| local disk | {sample[0]:.1f} | 1.00x |")
        print(f"| s3:// (loopback) | {sample[1]:.1f} | {sample[1] / sample[0]:.2f}x |")
    if args.quick:
        for latency, listing_s, per_file_s in rows:
            print(f"plan_listing_s_{latency:.0f}ms: {listing_s:.3f}")
            print(f"plan_per_file_s_{latency:.0f}ms: {per_file_s:.3f}")


if __name__ == "__main__":
    main()
