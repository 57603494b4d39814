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
import pytest
import yaml

from blift import tables
from blift.replay.reddit_api import ReplayServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "reddit"


def blift(
    *args: str, env: dict[str, str] | None = None, wait: bool = True
) -> subprocess.Popen | subprocess.CompletedProcess:
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
    # the thresholds that decided those drops reach stats.json, and from there the card
    assert stats["clean"]["settings"]["toxicity"] == "off"
    assert stats["clean"]["settings"]["comment words (youtube)"].startswith("4 to 100 words")
    # every dropped row is in the dropped table under its reason, and counted
    dropped = tables.read_dataset(run_dir / "dropped", "dropped").to_pylist()
    for stage, st in stats.items():
        assert sum(st["dropped"].values()) == sum(1 for d in dropped if d["stage"] == stage)
    assert blift("validate", str(run_dir)).returncode == 0

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from datasets import load_dataset

    release = run_dir / "release"
    card = (release / "README.md").read_text()
    assert "| clean | NSFW word list | LDNOOBW (en), on comments and item titles |" in card
    ds = load_dataset(str(release), "instructions", cache_dir=str(tmp_path / "hf"))
    n = sum(len(ds[s]) for s in ds)
    assert n == stats["instruct"]["out"]["instructions"] and n > 0
    rec = next(iter(ds["train"]))
    assert rec["conversations"][0]["value"].startswith("<image>\n")
    assert sum(t["value"].count("<image>") for t in rec["conversations"]) == 1
    assert all((release / p).exists() for p in rec["media"])
    behavior = [r for r in ds["train"] if r["task"] == "behavior" and r["platform"] == "reddit"]
    assert behavior and all(isinstance(r["targets"]["score"], int) for r in behavior)
    _check_video_path(run_dir, stats, [r for s in ds for r in ds[s] if r["platform"] == "youtube"])

    again = blift("run", str(ROOT / "pipelines" / "sample.yaml"), "--out", str(run_dir), "--no-release")
    assert again.returncode == 0
    assert "0 shard(s) to run" in again.stderr  # every stage skipped: nothing collected twice


def _check_video_path(run_dir: Path, stats: dict, records: list[dict]) -> None:
    """The YouTube half of the sample: rules, exact cuts, speech, frames, records."""
    import numpy as np

    expected = json.loads((ROOT / "samples" / "youtube" / "expected.json").read_text())
    assert stats["youtube.collect"]["dropped"] == {"few_views": 1}  # ytsample003, never downloaded
    kept = sorted(v for v, e in expected.items() if e["views"] >= 10_000)
    scenes = tables.read_dataset(run_dir / "scenes", "scenes").to_pylist()
    for vid in kept:
        found = sorted((s["start_frame"], s["end_frame"]) for s in scenes if s["uid"] == f"youtube:{vid}")
        assert found == [(b["start_frame"], b["end_frame"]) for b in expected[vid]["scenes"]]
        assert all((run_dir / s["keyframe_path"]).is_file() for s in scenes if s["uid"] == f"youtube:{vid}")
    transcripts = {t["uid"]: t for t in tables.read_dataset(run_dir / "transcripts", "transcripts").to_pylist()}
    assert sorted(transcripts) == [f"youtube:{v}" for v in kept]
    assert all(t["status"] == "ok" and t["language"] == "en" for t in transcripts.values())
    assert {"workshop", "fractal"} <= set(transcripts["youtube:ytsample001"]["text"].lower().replace(".", " ").split())
    attrs = tables.read_dataset(run_dir / "attributes", "attributes").to_pylist()
    assert sum(1 for a in attrs if a["scene"] is not None) == len(scenes)
    assert stats["caption"]["out"].get("captions", 0) == 0 and stats["caption"]["counters"]["skipped_no_model"] > 0

    assert sorted({r["uid"] for r in records}) == [f"youtube:{v}" for v in kept]
    assert sorted(r["task"] for r in records) == ["behavior", "behavior", "content", "content"]
    for rec in records:
        assert rec["media_kind"] == "video" and rec["media"][0].endswith(".npy")
        frames = np.load(run_dir / "release" / rec["media"][0])
        assert frames.dtype == np.uint8 and frames.shape[1:] == (3, 224, 224)
        text = "\n".join(turn["value"] for turn in rec["conversations"])
        assert text.count("<image>") == 1 and "Scene 1 (0:00-0:04)" in text  # verbalized scene by scene
        if rec["task"] == "behavior":
            t = rec["targets"]
            n_scenes = len(expected[rec["uid"].split(":")[1]]["scenes"])
            assert t["view_count"] > 10_000 and len(t["scene_replay"]) == n_scenes
            assert t["like_ratio"] == t["like_count"] / t["view_count"]
            assert t["comment_scores"] == sorted(t["comment_scores"], reverse=True)
        else:
            assert rec["targets"] is None
    one = next(r for r in records if r["uid"] == "youtube:ytsample001" and r["task"] == "behavior")
    assert one["targets"]["most_replayed_scenes"][0] == 1  # the heatmap peaks in the colour-bars scene


def _pipeline(path: Path, url: str) -> Path:
    client = {"endpoint": url, "client_id": "sample-client", "client_secret": "sample-secret", "user_agent": "t/0"}
    path.write_text(yaml.safe_dump({"name": "resume", "stages": [
        {"stage": "reddit.list", "config": client,
         "requests": [{"subreddits": ["pics", "EarthPorn", "itookapicture", "Art"], "listings": ["top"],
                       "limit": 100}]},
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
