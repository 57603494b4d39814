"""End to end through the CLI: the sample pipeline to a release, and kill -9 of a real collection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml

from blift import tables
from blift.replay.reddit_api import ReplayServer

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "reddit"


def blift(*args: str, env: dict[str, str] | None = None, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "blift.cli", *args]
    env = {**os.environ, **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_sample_pipeline_runs_to_a_release_that_load_dataset_reads(tmp_path):
    run_dir = tmp_path / "run"
    proc = blift("run", str(ROOT / "pipelines" / "sample.yaml"), "--out", str(run_dir), "--workers", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stats = json.loads((run_dir / "stats.json").read_text())["stages"]
    assert stats["reddit.collect"]["out"]["items"] == len(list((SAMPLE / "posts").glob("*.json")))
    assert stats["clean"]["dropped"]["nsfw"] >= 1 and stats["clean"]["dropped"]["language"] >= 1
    # every dropped row is in the dropped table under its reason, and counted
    dropped = tables.read_dataset(run_dir / "dropped", "dropped").to_pylist()
    for stage, st in stats.items():
        assert sum(st["dropped"].values()) == sum(1 for d in dropped if d["stage"] == stage)
    assert blift("validate", str(run_dir)).returncode == 0

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from datasets import load_dataset

    release = run_dir / "release"
    ds = load_dataset(str(release), "instructions", cache_dir=str(tmp_path / "hf"))
    n = sum(len(ds[s]) for s in ds)
    assert n == stats["instruct"]["out"]["instructions"] and n > 0
    rec = next(iter(ds["train"]))
    assert rec["conversations"][0]["value"].startswith("<image>\n")
    assert sum(t["value"].count("<image>") for t in rec["conversations"]) == 1
    assert all((release / p).exists() for p in rec["media"])
    behavior = [r for r in ds["train"] if r["task"] == "behavior"]
    assert behavior and all(isinstance(r["targets"]["score"], int) for r in behavior)

    again = blift("run", str(ROOT / "pipelines" / "sample.yaml"), "--out", str(run_dir), "--no-release")
    assert again.returncode == 0
    assert "0 shard(s) to run" in again.stderr  # every stage skipped: nothing collected twice


def _pipeline(path: Path, url: str) -> Path:
    client = {"endpoint": url, "client_id": "sample-client", "client_secret": "sample-secret", "user_agent": "t/0"}
    path.write_text(yaml.safe_dump({"name": "resume", "stages": [
        {"stage": "reddit.list", "config": client,
         "requests": [{"subreddits": ["pics", "EarthPorn", "itookapicture", "Art"], "listings": ["top"], "limit": 100}]},
        {"stage": "reddit.collect", "config": client},
    ]}))
    return path


def test_kill_9_during_collection_then_rerun(tmp_path):
    """kill -9 of `blift run` while reddit.collect is fetching: the rerun gives byte-identical
    shards to an uninterrupted run and fetches no successfully collected post twice."""
    env = {"SOURCE_DATE_EPOCH": "1732406400"}
    with ReplayServer(SAMPLE) as server:
        pipe = _pipeline(tmp_path / "p.yaml", server.url)
        ref = blift("run", str(pipe), "--out", str(tmp_path / "ref"), "--workers", "2", env=env)
        assert ref.returncode == 0, ref.stdout + ref.stderr

        server.faults.add("/comments/*", delay_s=0.15, count=None)  # slow answers: time to kill mid-stage
        before = dict(server.fetch_counts)
        run_dir = tmp_path / "run"
        proc = blift("run", str(pipe), "--out", str(run_dir), "--workers", "2", env=env, wait=False)
        deadline = time.monotonic() + 60
        while sum(server.fetch_counts.values()) - sum(before.values()) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, "worker processes outlived the killed run"
        assert len(list((run_dir / "items").glob("*.parquet"))) < 4, "killed too late: the stage had finished"

        server.faults.clear()
        rerun = blift("run", str(pipe), "--out", str(run_dir), "--workers", "2", env=env)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        fetched = {k: v - before.get(k, 0) for k, v in server.fetch_counts.items()}

    assert set(fetched) == set(before)  # every post collected
    twice = {k: v for k, v in fetched.items() if v > 1}
    assert len(twice) <= 2, f"posts fetched twice beyond the 2 in flight at the kill: {twice}"
    for dataset in ("item_refs", "items", "comments"):
        refs = sorted((tmp_path / "ref" / dataset).glob("*.parquet"))
        assert refs
        for ref in refs:
            assert (run_dir / dataset / ref.name).read_bytes() == ref.read_bytes(), f"{dataset}/{ref.name} differs"


def test_a_post_in_two_listings_is_fetched_once(tmp_path):
    client = {"client_id": "sample-client", "client_secret": "sample-secret", "user_agent": "t/0"}
    with ReplayServer(SAMPLE) as server:
        client["endpoint"] = server.url
        pipe = tmp_path / "p.yaml"
        pipe.write_text(yaml.safe_dump({"name": "twice", "stages": [
            {"stage": "reddit.list", "config": client,
             "requests": [{"subreddits": ["pics"], "listings": ["top", "new"], "limit": 100}]},
            {"stage": "reddit.collect", "config": client},
        ]}))
        proc = blift("run", str(pipe), "--out", str(tmp_path / "run"), "--workers", "1")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        counts = dict(server.fetch_counts)
    refs = tables.read_dataset(tmp_path / "run" / "item_refs", "item_refs")
    assert refs.num_rows == 2 * len(set(refs.column("uid").to_pylist()))  # both listings found every post
    assert counts and all(n == 1 for n in counts.values()), counts
    items = tables.read_dataset(tmp_path / "run" / "items", "items").column("uid").to_pylist()
    assert sorted(items) == sorted(set(refs.column("uid").to_pylist()))
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())["stages"]["reddit.collect"]
    assert stats["dropped"] == {"already_collected": len(items)}
