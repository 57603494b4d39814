"""Run folders on an object store (``--out s3://bucket/run``), local and Ray executors.

The S3 endpoint is moto's server on loopback (tests/servers/s3_server.py), reached through the
real s3fs client by ``AWS_ENDPOINT_URL``, as a user would point blift at MinIO. The bucket keeps
every object version, so "nothing written twice" is counted, not inferred from timestamps.
What is checked:

* the same toy pipeline gives the same Parquet bytes on S3 as the local reference run, and
  nothing is ever visible under a temporary name; a rerun skips every shard and writes nothing
  but ``stats.json``;
* ``kill -9`` of the driver, then a rerun: identical output, no finished shard uploaded twice;
* the Ray executor's workers (other processes, forwarded ``AWS_*``) write to the same bucket;
* ``reddit.dumps`` streams its buckets in local scratch and uploads the same shards as on disk;
* a failed upload leaves no object and no local temporary; files read by path are fetched once
  per object version; ``blift stats`` and a changed upstream shard work on S3;
* the bundled sample (real praw, yt-dlp, ffprobe, scene split, Whisper) runs onto S3 and
  ``blift release`` builds a release that ``datasets`` loads from a local copy of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from blift import tables
from blift.errors import ConfigError
from blift.pipeline import RunOptions, run_pipeline
from blift.storage import local_dir, mirror, run_path
from servers.s3_server import Bucket
from toy_runs import SHARDS, calls, digests, kill_9_mid_run, make_refs
from toy_runs import write_model_pipeline as toy_pipeline

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("toy_env")]
RECORDS = sum(len(ids) for ids in SHARDS.values())


def s3_digests(bucket: Bucket, run: str) -> dict[str, str]:
    """Like test_faults.digests, for a run folder on the bucket."""
    return {k: hashlib.sha256(bucket.read(f"{run}/{k}")).hexdigest()
            for k in sorted(bucket.keys(run)) if k.endswith(".parquet")}


def versions(bucket: Bucket, run: str) -> Counter[str]:
    """How many times each object under ``run/`` was written (the bucket is versioned)."""
    import boto3

    client = boto3.client("s3")
    counts: Counter[str] = Counter()
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket.name, Prefix=f"{run}/"):
        for v in page.get("Versions", []):
            counts[v["Key"][len(run) + 1:]] += 1
    return counts


@pytest.fixture
def versioned(s3: Bucket) -> Bucket:
    import boto3

    boto3.client("s3").put_bucket_versioning(Bucket=s3.name, VersioningConfiguration={"Status": "Enabled"})
    return s3


def toy_run_on_s3(tmp_path: Path, bucket: Bucket, name: str = "toy") -> tuple[str, Path, Path]:
    url, markers = bucket.url(name), tmp_path / f"{name}-m"
    markers.mkdir()
    make_refs(run_path(url), SHARDS)  # the inputs written through the same storage layer
    return url, markers, toy_pipeline(tmp_path / f"{name}.yaml", markers)


def finished_shards(bucket: Bucket, run: str) -> list[str]:
    """Output files of every shard with a manifest (its commit record)."""
    return sorted({rel for key in bucket.keys(run) if key.startswith("_blift/manifests/")
                   for rel in json.loads(bucket.read(f"{run}/{key}"))["output_files"]})


def test_toy_pipeline_on_s3_equals_the_local_run_and_a_rerun_writes_nothing(tmp_path, versioned, reference):
    url, markers, pipe = toy_run_on_s3(tmp_path, versioned)
    report = run_pipeline(pipe, RunOptions(out=url, workers=2, progress=False))
    assert not report.failed
    assert str(report.run_dir) == url
    assert s3_digests(versioned, "toy") == digests(reference)
    keys = versioned.keys("toy")
    assert not [k for k in keys if Path(k).name.startswith(".") or k.endswith(".tmp")], "a temporary name on S3"
    assert not [k for k in keys if k.startswith("_blift/journal")], "journals stay on the worker's disk"
    stats = json.loads(versioned.read("toy/stats.json"))["stages"]
    assert stats["toy.fetch"]["records_in"] == RECORDS and stats["toy.model"]["shards_done"] == len(SHARDS)
    assert sum(calls(markers).values()) == RECORDS
    written = versions(versioned, "toy")
    assert set(written.values()) == {1}, "an object was written twice in one run"

    again = run_pipeline(pipe, RunOptions(out=url, workers=2, progress=False))
    assert all(not plan.todo and plan.skipped for plan in again.plans)
    assert sum(calls(markers).values()) == RECORDS, "a finished record was processed again"
    rewritten = {k for k, n in versions(versioned, "toy").items() if n != written.get(k)}
    assert rewritten == {"stats.json"}


def test_stats_command_and_a_changed_input_on_s3(tmp_path, s3):
    url, markers, pipe = toy_run_on_s3(tmp_path, s3)
    run_pipeline(pipe, RunOptions(out=url, workers=1, progress=False))
    proc = subprocess.run([sys.executable, "-m", "blift.cli", "stats", url, "--json"], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["stages"]["toy.filter"]["records_in"] == RECORDS - len(SHARDS)  # bad* failed
    # An upstream shard rewritten with other content (a new ETag) redoes exactly its downstream shard.
    make_refs(run_path(url), {"part-0": SHARDS["part-0"][:-2]})
    report = run_pipeline(pipe, RunOptions(out=url, workers=1, progress=False))
    assert [plan.todo and [t.shard for t in plan.todo] for plan in report.plans] == [["part-0"]] * 3


def test_kill_9_of_the_driver_then_rerun_on_s3_uploads_no_finished_shard_twice(tmp_path, versioned, reference):
    url, markers, pipe = toy_run_on_s3(tmp_path, versioned)
    env = {**os.environ, "TOY_SLEEP": "0.25"}
    args = [sys.executable, "-m", "blift.cli", "run", str(pipe), "--out", url, "--workers", "2"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    kill_9_mid_run(proc, lambda: any(k.startswith("items/") for k in versioned.keys("toy")))
    finished = finished_shards(versioned, "toy")
    assert finished, "the kill came before any shard finished"
    assert len([k for k in versioned.keys("toy") if k.startswith("captions/")]) < len(SHARDS), "the run had ended"

    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = versions(versioned, "toy")
    assert {rel: counts[rel] for rel in finished} == {rel: 1 for rel in finished}, \
        "a shard finished before the kill was uploaded again"
    redone = {k: n for k, n in calls(markers).items() if n > 1}
    assert sum(n - 1 for n in redone.values()) <= 4, f"finished records processed again: {redone}"
    assert s3_digests(versioned, "toy") == digests(reference)
    assert not list((local_dir(run_path(url)) / "_blift" / "journal").rglob("*.journal")), "journals left behind"


def test_ray_workers_write_the_run_to_s3(tmp_path, s3, ray_head, reference):
    """A fresh driver process, as a user runs it: Ray workers get AWS_* through the runtime env."""
    url, _, pipe = toy_run_on_s3(tmp_path, s3)
    proc = subprocess.run([sys.executable, "-m", "blift.cli", "run", str(pipe), "--out", url, "--workers", "2",
                           "--executor", "ray", "--ray-address", ray_head],
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert s3_digests(s3, "toy") == digests(reference)


def test_reddit_dumps_stream_onto_s3_as_on_local_disk(tmp_path, versioned, dump_pair):
    """The stream stage's buckets are appended locally (scratch) and only finished shards are
    uploaded: the same bytes as a local run, nothing temporary on S3, nothing left in scratch."""
    import yaml

    rs, rc, _ = dump_pair
    pipe = tmp_path / "dumps.yaml"
    pipe.write_text(yaml.safe_dump({"name": "dumps", "stages": [{
        "stage": "reddit.dumps", "requests": [{"submissions": [str(rs)], "comments": [str(rc)]}],
        "config": {"buckets": 3, "workers": 2}}]}))
    local = tmp_path / "local"
    assert not run_pipeline(pipe, RunOptions(out=local, progress=False)).failed
    url = versioned.url("dumps")
    report = run_pipeline(pipe, RunOptions(out=url, progress=False))
    assert not report.failed and report.stats["stages"]["reddit.dumps"]["out"]["comments"] > 0
    assert s3_digests(versioned, "dumps") == digests(local)
    assert not [k for k in versioned.keys("dumps") if Path(k).name.startswith(".") or "tmp" in k]
    work = local_dir(run_path(url))
    assert not [p for p in work.rglob("*") if p.is_file()], "temporaries left in the scratch folder"
    written = versions(versioned, "dumps")
    run_pipeline(pipe, RunOptions(out=url, progress=False))  # a rerun: skipped, nothing uploaded again
    assert {k for k, n in versions(versioned, "dumps").items() if n != written.get(k)} == {"stats.json"}


def test_a_failed_upload_leaves_no_object_and_no_local_temporary(tmp_path, s3):
    """The store refuses the upload (here: no such bucket): the write raises, nothing appears,
    and the local temporary file it was uploading from is gone."""
    make_refs(tmp_path / "refs", {"part-0": ["x1", "x2", "x3"]})
    table = tables.read_shard(tmp_path / "refs" / "item_refs" / "part-0.parquet", "item_refs")
    dest = run_path(f"s3://{s3.name}-missing/r/item_refs/part-0.parquet")
    with pytest.raises(OSError):
        tables.write_shard(dest, table, "item_refs")
    assert not dest.exists()
    assert not [p for p in (Path(os.environ["BLIFT_SCRATCH"]) / "tmp").rglob("*") if p.is_file()]
    ok = run_path(s3.url("r", "item_refs", "part-0.parquet"))
    tables.write_shard(ok, table, "item_refs")
    assert tables.read_shard(ok, "item_refs").equals(table)


def test_files_read_by_path_are_fetched_once_per_object_version(tmp_path, s3):
    from blift import storage
    from blift.errors import PermanentError
    from blift.stage import run_file

    run_dir = run_path(s3.url("r"))
    storage.write_bytes(run_dir / "media_files" / "ab" / "clip.mp4", b"first")
    local = run_file(run_dir, "media_files/ab/clip.mp4", "u#0: media")
    assert local.read_bytes() == b"first" and local.is_relative_to(storage.cache_dir())
    stamp = local.stat().st_mtime_ns
    assert run_file(run_dir, "media_files/ab/clip.mp4", "u#0: media").stat().st_mtime_ns == stamp  # not fetched again
    storage.write_bytes(run_dir / "media_files" / "ab" / "clip.mp4", b"other")  # same size, new content
    assert run_file(run_dir, "media_files/ab/clip.mp4", "u#0: media").read_bytes() == b"other"
    with pytest.raises(PermanentError, match="u#1: media file media_files/x.mp4 is missing") as exc:
        run_file(run_dir, "media_files/x.mp4", "u#1: media")
    assert exc.value.error_type == "missing_file"

    folder, fetched, size = mirror(run_dir)
    assert (fetched, size) == (1, 5) and (folder / "media_files" / "ab" / "clip.mp4").read_bytes() == b"other"
    storage.write_bytes(run_dir / "stats.json", b"{}")
    s3.fs.rm(f"{s3.name}/r/media_files/ab/clip.mp4")
    folder, fetched, _ = mirror(run_dir)  # new files come, files the run no longer has go
    assert fetched == 1 and sorted(p.name for p in folder.rglob("*") if p.is_file()) == ["stats.json"]


def test_run_folder_urls_are_checked(tmp_path, s3):
    assert run_path("file:///tmp/x") == Path("/tmp/x")
    assert str(run_path(Path(s3.url("run")))) == s3.url("run")  # pathlib's s3:/b/x is understood
    with pytest.raises(ConfigError, match="hdfs:// is not supported"):
        run_path("hdfs://namenode/run")


@pytest.mark.timeout(600)
def test_sample_pipeline_on_s3_then_release_from_it(tmp_path, s3, monkeypatch):
    """The bundled sample with --out s3://: collectors, downloads, ffprobe, scene split, Whisper
    and the instruct stage all read and write through the object store; the release is built
    from a local mirror of it, and `datasets` loads it."""
    monkeypatch.chdir(tmp_path)  # a remote run's relative release.out is written here
    url = s3.url("sample")
    proc = subprocess.run([sys.executable, "-m", "blift.cli", "run", str(ROOT / "pipelines" / "sample.yaml"),
                           "--out", url, "--workers", "2"], capture_output=True, text=True, timeout=540,
                          env=os.environ.copy())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stats = json.loads(s3.read("sample/stats.json"))["stages"]
    assert all(st["shards_done"] == st["shards"] for st in stats.values())
    keys = s3.keys("sample")
    assert any(k.startswith("media_files/") and k.endswith(".mp4") for k in keys)  # yt-dlp's file, uploaded
    assert any(k.endswith(".npy") for k in keys) and any(k.endswith(".jpg") for k in keys)  # frames, keyframes
    transcripts = tables.read_dataset(run_path(url) / "transcripts", "transcripts").to_pylist()
    assert transcripts and all(t["status"] == "ok" for t in transcripts)
    assert "workshop" in " ".join(t["text"].lower() for t in transcripts)
    assert stats["instruct"]["out"]["instructions"] > 0

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from datasets import load_dataset

    release = tmp_path / "release"
    ds = load_dataset(str(release), "instructions", cache_dir=str(tmp_path / "hf"))
    assert sum(len(ds[s]) for s in ds) == stats["instruct"]["out"]["instructions"]
    assert all((release / p).is_file() for s in ds for r in ds[s] for p in r["media"])
    folder, fetched, _ = mirror(run_path(url))  # the release's mirror is current: nothing to fetch
    assert fetched == 0 and (folder / "stats.json").is_file()

    again = subprocess.run([sys.executable, "-m", "blift.cli", "run", str(ROOT / "pipelines" / "sample.yaml"),
                            "--out", url, "--no-release"], capture_output=True, text=True, timeout=300,
                           env=os.environ.copy())
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 shard(s) to run" in again.stderr
