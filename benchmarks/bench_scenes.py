"""Scene detection speed next to a bare FFmpeg decode of the same video at the same scale.

Run: ``.venv/bin/python benchmarks/bench_scenes.py [--quick] [--repeat N] [--video PATH]``

Goal (issue): scene detection at >= 0.7x the frames/s of ``ffmpeg -i X -vf scale=W:H -f null -``,
where W x H is the size the detector looks at. No frame is skipped (cuts must be exact).

Measured side by side, interleaved, best of ``--repeat`` runs each:

* ``ffmpeg decode``: the baseline above (FFmpeg's own threads, its scaler, nothing else);
* ``blift scenes (detect)``: what the stage runs, PySceneDetect's SceneManager + ContentDetector
  over blift's PyAV DetectionStream (the frames and timecodes PySceneDetect's OpenCV backend gives:
  full-size BGR through swscale, the SceneManager's own downscale; exact timestamps kept);
* ``blift scenes (stage)``: the whole record: detection plus keyframe JPEGs (seeking decode);
* ``scenedetect opencv`` / ``scenedetect pyav``: PySceneDetect's stock backends with its own
  auto-downscale, for reference (``opencv`` is what ``scenedetect.detect()`` uses: blift's cuts
  must equal its cuts, and the summary says whether they do).

The default video is synthetic (ffmpeg lavfi shots, H.264, cuts every 2 s): 1280x720 at 30 fps for
40 s, or 640x360 for 10 s with ``--quick``. ``--quick`` prints ``name: value`` lines last.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import scenedetect as sd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from blift.stages.scenes.detection import detection_size  # noqa: E402
from blift.stages.scenes.stage import ScenesConfig, ScenesStage, detect_scenes  # noqa: E402
from video_factory import SOURCES, Segment, make_video  # noqa: E402


def synthetic(folder: Path, size: tuple[int, int], seconds: int, fps: int = 30) -> Path:
    path = folder / f"bench_{size[0]}x{size[1]}_{seconds}s.mp4"
    if not path.exists():
        shots = [Segment(SOURCES[i % len(SOURCES)], 2 * fps) for i in range(seconds // 2)]
        make_video(path, shots, fps=fps, size=size, crf=23)
    return path


def count_frames(path: Path) -> tuple[int, tuple[int, int]]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        n = sum(1 for _ in c.decode(s))
        return n, (s.codec_context.width, s.codec_context.height)


def cpu_seconds() -> float:
    """CPU time of this process (all threads) plus its finished children (the ffmpeg runs)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(methods: list[tuple[str, Callable[[], None]]], repeat: int) -> dict[str, tuple[float, float]]:
    """Best wall-clock and best CPU seconds of each method over ``repeat`` interleaved rounds
    (interleaving spreads any background load evenly over the methods)."""
    wall: dict[str, list[float]] = {name: [] for name, _ in methods}
    cpu: dict[str, list[float]] = {name: [] for name, _ in methods}
    for _ in range(repeat):
        for name, fn in methods:
            c0, t0 = cpu_seconds(), time.perf_counter()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(cpu_seconds() - c0)
    return {name: (min(wall[name]), min(cpu[name])) for name, _ in methods}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short 640x360 video; name: value lines last")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each method; the best counts")
    ap.add_argument("--video", type=Path, help="benchmark this file instead of a synthetic one")
    ap.add_argument("--no-stock", action="store_true", help="skip PySceneDetect's stock backends")
    args = ap.parse_args()
    if shutil.which("ffmpeg") is None:
        sys.exit("needs ffmpeg on PATH")

    work = Path(tempfile.mkdtemp(prefix="bench_scenes_"))
    try:
        if args.video:
            video = args.video
        elif args.quick:
            video = synthetic(work, (640, 360), 10)
        else:
            video = synthetic(work, (1280, 720), 40)
        frames, (w, h) = count_frames(video)
        dw, dh = detection_size(w, h, "auto")
        config = ScenesConfig()
        cuts: dict[str, list[float]] = {}  # cut times (s) found by each method

        def ffmpeg_decode() -> None:
            subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-vf", f"scale={dw}:{dh}", "-f", "null", "-"],
                           check=True)

        def blift_detect() -> None:
            spans, index, _ = detect_scenes(video, config)
            assert len(index) == frames, (len(index), frames)
            cuts["blift"] = [round(index.time_of(start), 6) for start, _ in spans[1:]]

        run_dir = work / "run"
        (run_dir / "media_files").mkdir(parents=True, exist_ok=True)
        local = run_dir / "media_files" / "video.mp4"
        if not local.exists():
            local.symlink_to(video.resolve())
        stage = ScenesStage(config, run_dir)
        row = {"uid": "bench:1", "index": 0, "url": "-", "status": "ok", "mime": "video/mp4",
               "path": "media_files/video.mp4", "sha256": "0" * 64}

        def blift_stage() -> None:
            stage.process_record("bench:1", [row])

        def stock(backend: str) -> Callable[[], None]:
            def go() -> None:
                stream = sd.open_video(str(video), backend=backend)
                manager = sd.SceneManager()
                manager.add_detector(sd.ContentDetector(min_scene_len=config.min_scene_len_s))
                manager.detect_scenes(stream)
                scenes = manager.get_scene_list(start_in_scene=True)
                cuts[backend] = [round(start.seconds, 6) for start, _ in scenes[1:]]
            return go

        methods: list[tuple[str, Callable[[], None]]] = [
            ("ffmpeg decode (baseline)", ffmpeg_decode),
            ("blift scenes (detect)", blift_detect),
            ("blift scenes (stage: + keyframes)", blift_stage),
        ]
        if not args.no_stock:
            methods += [("scenedetect opencv backend", stock("opencv")), ("scenedetect pyav backend", stock("pyav"))]
        for _, fn in methods:  # warm-up: page cache, imports, codec init
            fn()
        results = measure(methods, args.repeat)

        base_wall, base_cpu = results["ffmpeg decode (baseline)"]
        print(f"\nvideo: {video.name}  {w}x{h}, {frames} frames; detector sees {dw}x{dh}; {os.cpu_count()} cores; "
              f"best of {args.repeat} interleaved rounds; load average {os.getloadavg()[0]:.1f}; cuts found: "
              f"{ {name: len(times) for name, times in cuts.items()} }"
              + (f"; blift's cuts equal scenedetect.detect()'s (OpenCV backend): {cuts['blift'] == cuts['opencv']}"
                 if "opencv" in cuts else ""))
        print(f"| {'method':36} | {'seconds':>8} | {'frames/s':>9} | {'vs decode':>9} | "
              f"{'CPU s':>7} | {'CPU vs decode':>13} |")
        print(f"|{'-' * 38}|{'-' * 9}:|{'-' * 10}:|{'-' * 10}:|{'-' * 8}:|{'-' * 14}:|")
        for name, (sec, cpu) in results.items():
            print(f"| {name:36} | {sec:8.3f} | {frames / sec:9.0f} | {base_wall / sec:8.2f}x | {cpu:7.2f} | "
                  f"{base_cpu / cpu:12.2f}x |")
        scene_fps = frames / results["blift scenes (detect)"][0]
        decode_fps = frames / base_wall
        print()
        print(f"scene_fps: {scene_fps:.0f}")
        print(f"stage_fps: {frames / results['blift scenes (stage: + keyframes)'][0]:.0f}")
        print(f"decode_fps: {decode_fps:.0f}")
        print(f"ratio: {scene_fps / decode_fps:.2f}")
        print(f"cpu_ratio: {base_cpu / results['blift scenes (detect)'][1]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
