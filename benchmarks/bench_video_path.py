"""Minutes of video processed per wall minute by the whole video path, and where the time goes.

The path is the sample pipeline's YouTube half: ``youtube.list`` -> ``youtube.collect`` (real
yt-dlp, files from a loopback replay server) -> ``media.download`` (ffprobe) -> ``clean`` ->
``scenes`` (keyframes + 1 fps frames) -> ``attributes`` (per keyframe, OCR on) -> ``asr``
(faster-whisper tiny.en, int8, beam 5) -> ``caption`` (skipped: no model on a CPU box) ->
``instruct``, run by ``blift run`` exactly as users run it.

    .venv/bin/python benchmarks/bench_video_path.py                 # 6 synthetic videos of 60 s
    .venv/bin/python benchmarks/bench_video_path.py --videos 4 --seconds 120
    .venv/bin/python benchmarks/bench_video_path.py --quick         # the bundled 3-video sample

Synthetic videos are made like the bundled sample (ffmpeg test sources with a cut every
``--scene-s`` seconds, espeak-ng reading varied sentences throughout), 320x180 at 25 fps, which
is below the 360p the collector downloads by default. ``--quick`` prints ``name: value`` lines last.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "samples"))
import make_youtube_sample as mys  # noqa: E402

PORT = 38611
SOURCES = ["testsrc", "smptebars", "mandelbrot", "testsrc2", "red", "gray"]
WORDS = ("river mountain signal garden window engine market harbour lantern orchard bridge "
         "station museum canyon meadow glacier valley island forest desert").split()
STAGES = ["youtube.list", "youtube.collect", "media.download", "clean", "scenes", "attributes", "asr",
          "caption", "instruct"]


def sentences(rng: random.Random, count: int) -> list[str]:
    """Varied sentences (Whisper drops repeated text as a hallucination)."""
    out = []
    for _ in range(count):
        a, b, c = rng.sample(WORDS, 3)
        out.append(f"The {a} near the {b} looked different after the {c} closed for winter.")
    return out


def make_videos(folder: Path, count: int, seconds: float, scene_s: float) -> None:
    rng = random.Random(7)
    mys.BASE = f"http://127.0.0.1:{PORT}/youtube/media"
    (folder / "info").mkdir(parents=True)
    (folder / "media").mkdir()
    n_scenes = max(1, int(seconds // scene_s))
    for k in range(count):
        video = {
            "id": f"bench{k:04d}", "title": f"Benchmark video {k}", "channel": "Bench", "channel_id": "UCbench",
            "followers": 1000, "views": 50_000 + k, "likes": 900, "upload_date": "20240101",
            "categories": ["Education"], "tags": [], "peak": seconds / 2,
            "segments": [(SOURCES[(k + i) % len(SOURCES)], scene_s) for i in range(n_scenes)],
            "speech": sentences(rng, n_scenes),
            "comments": [(f"c{k}_{i}", f"Comment number {i} about the {rng.choice(WORDS)} in this video.",
                          100 - i, False, False) for i in range(5)],
        }
        path = folder / "media" / f"{video['id']}.mp4"
        mys.make_video(video, path)
        info = mys.info_dict(video, path.stat().st_size)
        (folder / "info" / f"{video['id']}.info.json").write_text(json.dumps(info))


def pipeline(youtube: Path, out: Path) -> Path:
    text = f"""
name: bench-video
out: {out}
replay: {{youtube: {youtube}, port: {PORT}}}
stages:
  - stage: youtube.list
    requests: [{{info_json_dir: {youtube / 'info'}}}]
  - stage: youtube.collect
    config: {{max_comments: 20, min_views: 10000}}
  - stage: media.download
    config: {{allow_private_addresses: true}}
  - stage: clean
  - stage: scenes
    config: {{frames: fps}}
  - stage: attributes
  - stage: asr
    config: {{model: tiny.en, beam_size: 5}}
  - stage: caption
  - stage: instruct
"""
    path = out.parent / "bench-video.yaml"
    path.write_text(text)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--scene-s", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quick", action="store_true", help="the bundled sample's videos")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="blift-bench-video-") as tmp_name:
        tmp = Path(tmp_name)
        if args.quick:
            youtube = tmp / "youtube"
            shutil.copytree(ROOT / "samples" / "youtube", youtube)
            for info in (youtube / "info").glob("*.json"):  # same files, served on this benchmark's port
                info.write_text(info.read_text().replace(":38517/", f":{PORT}/"))
        else:
            youtube = tmp / "youtube"
            make_videos(youtube, args.videos, args.seconds, args.scene_s)
        out = tmp / "run"
        cmd = [str(ROOT / ".venv" / "bin" / "blift"), "run", str(pipeline(youtube, out)), "--workers",
               str(args.workers), "--no-release", "--no-progress"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "BLIFT_AUTHOR_SALT": "bench"}
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if proc.returncode:
            sys.exit(f"blift run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        stats = json.loads((out / "stats.json").read_text())
        import pyarrow.dataset as pads

        media = pads.dataset(out / "media", format="parquet").to_table(columns=["duration_s", "status"]).to_pylist()
        video_s = sum(m["duration_s"] or 0 for m in media if m["status"] == "ok")
        records = pads.dataset(out / "instructions", format="parquet").count_rows()

    # seconds inside shards, summed over workers (process start-up and planning are outside)
    stage_s = {name: float(stats["stages"].get(name, {}).get("seconds") or 0.0) for name in STAGES}
    busy = sum(stage_s.values())
    print(f"{'stage':<18} {'shard s':>8} {'share':>7}")
    for name, secs in stage_s.items():
        print(f"{name:<18} {secs:8.2f} {secs / busy:7.1%}")
    print(f"{'blift run, wall':<18} {wall:8.2f}")
    rate = (video_s / 60) / (wall / 60)
    print(f"\n{len([m for m in media if m['status'] == 'ok'])} videos, {video_s:.0f} s of video, "
          f"{records} instruction records, {args.workers} workers: {rate:.2f} video minutes per wall minute")
    print(f"video_seconds: {video_s:.1f}")
    print(f"wall_seconds: {wall:.1f}")
    print(f"video_minutes_per_wall_minute: {rate:.2f}")


if __name__ == "__main__":
    main()
