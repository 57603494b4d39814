"""The scenes stage (PySceneDetect cuts, keyframes, frame arrays) and attributes of keyframes.

Synthetic videos with hard cuts at known frames (tests/video_factory.py) go through blift's
runner as a ``scenes`` -> ``attributes`` pipeline; smaller cases call the stage directly.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from blift import schemas, tables
from blift.pipeline import RunOptions, run_pipeline
from blift.registry import load_stage
from blift.stage import ShardInput
from blift.stages.attributes import AttributesConfig, AttributesStage
from blift.stages.scenes import ScenesConfig, ScenesStage
from blift.stages.scenes.detection import detection_size
from blift.video import FrameIndex, letterbox, sample_times
from video_factory import Segment, Video, make_video, require_tools

FPS = 25.0


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Video]:
    require_tools("ffmpeg")
    folder = tmp_path_factory.mktemp("videos")
    return {
        # 4 shots at 25 fps, cuts at 40, 70, 105; an audio track must not disturb anything.
        "cuts": make_video(folder / "cuts.mp4", [Segment("testsrc", 40), Segment("smptebars", 30),
                                                 Segment("mandelbrot", 35), Segment("color=c=red", 30)],
                           fps=FPS, audio="tone"),
        "nocut": make_video(folder / "nocut.mp4", [Segment("testsrc", 60)], fps=FPS),
        "short": make_video(folder / "short.mp4", [Segment("smptebars", 4), Segment("color=c=blue", 4)], fps=FPS),
        # Variable frame rate: the middle shot runs at 10 fps, so frame/avg_fps is wrong there.
        "vfr": make_video(folder / "vfr.mp4", [Segment("testsrc", 30), Segment("smptebars", 20, fps=10),
                                               Segment("mandelbrot", 25)], fps=FPS),
        "big": make_video(folder / "big.mp4", [Segment("rgbtestsrc", 20), Segment("color=c=red", 20),
                                               Segment("testsrc", 20)], fps=FPS, size=(320, 240)),
    }


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _media_row(uid: str, index: int, rel: str | None, mime: str, run_dir: Path, **kw) -> dict:
    row = {"uid": uid, "index": index, "url": f"https://www.youtube.com/watch?v={uid}", "status": "ok",
           "path": rel, "mime": mime}
    if rel and (run_dir / rel).is_file():
        row.update(sha256=_sha(run_dir / rel), bytes=(run_dir / rel).stat().st_size)
    row.update(kw)
    return row


def _place(run_dir: Path, src: Path, name: str) -> str:
    rel = f"media_files/{name}"
    (run_dir / "media_files").mkdir(parents=True, exist_ok=True)
    (run_dir / rel).write_bytes(src.read_bytes())
    return rel


@pytest.fixture(scope="session")
def run(videos: dict[str, Video], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A run folder with two media shards, processed by `scenes` (frames at 1 fps) then
    `attributes` through blift's runner."""
    base = tmp_path_factory.mktemp("scenes_run")
    run_dir = base / "run"
    rels = {name: _place(run_dir, v.path, f"{name}.mp4") for name, v in videos.items() if name != "big"}
    (run_dir / "media_files" / "noise.mp4").write_bytes(np.random.default_rng(1).bytes(4000))
    head = videos["cuts"].path.read_bytes()
    (run_dir / "media_files" / "cut_short.mp4").write_bytes(head[: len(head) // 30])  # header, then nothing
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac",
                    str(run_dir / "media_files" / "audio.m4a")], check=True)
    Image.new("RGB", (64, 48), (30, 80, 220)).save(run_dir / "media_files" / "blue.png")

    shard0 = [
        _media_row("youtube:cuts", 0, rels["cuts"], "video/mp4", run_dir, fps=FPS),
        _media_row("youtube:nocut", 0, rels["nocut"], "video/mp4", run_dir),
        _media_row("youtube:short", 0, rels["short"], "video/mp4", run_dir),
        _media_row("youtube:noise", 0, "media_files/noise.mp4", "video/mp4", run_dir),
        _media_row("youtube:trunc", 0, "media_files/cut_short.mp4", "video/mp4", run_dir),
        _media_row("youtube:audio", 0, "media_files/audio.m4a", "video/mp4", run_dir),
        _media_row("reddit:img", 0, "media_files/blue.png", "image/png", run_dir),
        _media_row("youtube:gone", 0, None, "video/mp4", run_dir, status="failed", reason="http_404", error="404"),
    ]
    shard1 = [_media_row("youtube:vfr", 0, rels["vfr"], "video/mp4", run_dir)]
    tables.write_rows(run_dir / "media" / "part-00000.parquet", shard0, "media")
    tables.write_rows(run_dir / "media" / "part-00001.parquet", shard1, "media")

    pipe = base / "pipeline.yaml"
    pipe.write_text(yaml.safe_dump({"name": "scenes-test", "stages": [
        {"stage": "scenes", "config": {"frames": "fps"}},
        {"stage": "attributes", "config": {"ocr": False}},
    ]}))
    report = run_pipeline(pipe, RunOptions(out=run_dir, workers=2, progress=False))
    scenes = tables.read_dataset(run_dir / "scenes", "scenes").to_pylist()
    return {
        "dir": run_dir,
        "pipe": pipe,
        "stats": report.stats["stages"],
        "scenes": {uid: [s for s in scenes if s["uid"] == uid] for uid in {s["uid"] for s in scenes}},
        "frames": {r["uid"]: r for r in tables.read_dataset(run_dir / "frames", "frames").to_pylist()},
        "attributes": tables.read_dataset(run_dir / "attributes", "attributes").to_pylist(),
        "errors": {r["record_key"]: r
                   for r in tables.read_dataset(run_dir / "errors" / "scenes", "errors").to_pylist()},
    }


def _spans(rows: list[dict]) -> list[tuple[int, int]]:
    return [(r["start_frame"], r["end_frame"]) for r in sorted(rows, key=lambda r: r["scene"])]


# ------------------------------------------------------------------------------------- cuts


@pytest.mark.slow
def test_cuts_are_found_at_the_exact_frames(run: dict, videos: dict[str, Video]) -> None:
    video = videos["cuts"]
    rows = run["scenes"]["youtube:cuts"]
    assert _spans(rows) == video.scene_frames == [(0, 40), (40, 70), (70, 105), (105, 135)]
    for row in rows:
        assert row["start_s"] == pytest.approx(row["start_frame"] / FPS, abs=1e-6)
        assert row["end_s"] == pytest.approx(row["end_frame"] / FPS, abs=1e-6)
        assert row["keyframe_frame"] == (row["start_frame"] + row["end_frame"]) // 2
        assert row["detector"] == "content:27.0" and row["media_index"] == 0
    assert [r["scene"] for r in rows] == [0, 1, 2, 3]
    assert rows[-1]["end_s"] == pytest.approx(video.duration_s)


def test_video_without_cut_is_one_scene(run: dict, videos: dict[str, Video]) -> None:
    [row] = run["scenes"]["youtube:nocut"]
    assert (row["start_frame"], row["end_frame"], row["start_s"]) == (0, 60, 0.0)
    assert row["end_s"] == pytest.approx(videos["nocut"].duration_s)


def test_video_shorter_than_min_scene_length_is_one_scene(run: dict) -> None:
    # 8 frames (0.32 s) with a hard cut at 4: below min_scene_len_s=0.6, so it is not split.
    assert _spans(run["scenes"]["youtube:short"]) == [(0, 8)]


def test_variable_frame_rate_times_come_from_timestamps(run: dict, videos: dict[str, Video]) -> None:
    video = videos["vfr"]
    assert video.vfr
    rows = run["scenes"]["youtube:vfr"]
    assert _spans(rows) == [(0, 30), (30, 50), (50, 75)]
    starts = [r["start_s"] for r in rows]
    assert starts == pytest.approx([video.timestamps[0], video.timestamps[30], video.timestamps[50]], abs=1e-6)
    assert starts == pytest.approx([0.0, 1.2, 3.2], abs=1e-6)
    avg_fps = video.frame_count / video.duration_s  # what frame/fps would use: 1.66 s, not 1.2 s
    assert abs(30 / avg_fps - starts[1]) > 0.3
    assert rows[-1]["end_s"] == pytest.approx(video.duration_s, abs=1e-6)
    assert run["stats"]["scenes"]["counters"]["vfr"] == 1


def test_unreadable_videos_are_permanent_errors_and_the_shard_goes_on(run: dict) -> None:
    errors = run["errors"]
    assert set(errors) == {"youtube:noise", "youtube:trunc", "youtube:audio"}
    for key, err in errors.items():
        assert err["error_class"] == "permanent" and err["error_type"] == "bad_video"
        assert key in err["message"]
    assert "media_files/noise.mp4" in errors["youtube:noise"]["message"]
    assert "no video stream" in errors["youtube:audio"]["message"]
    assert {"youtube:cuts", "youtube:nocut", "youtube:short"} <= set(run["scenes"])  # same shard, fine
    counters = run["stats"]["scenes"]["counters"]
    assert counters["videos"] == 4 and counters["not_video"] == 1 and counters["media_not_ok"] == 1
    assert counters["scenes"] == sum(len(v) for v in run["scenes"].values()) == 4 + 1 + 1 + 3


# ------------------------------------------------------------------------------- keyframes


def test_keyframes_are_jpegs_of_the_middle_frame(run: dict, videos: dict[str, Video]) -> None:
    sha = _sha(videos["cuts"].path)
    rows = run["scenes"]["youtube:cuts"]
    for row in rows:
        rel = row["keyframe_path"]
        assert rel.startswith(f"keyframes/{sha[:2]}/{sha}-s{row['scene']:04d}-") and rel.endswith(".jpg")
        path = run["dir"] / rel
        assert path.read_bytes()[:3] == b"\xff\xd8\xff"
        with Image.open(path) as img:
            assert img.format == "JPEG" and img.size == (160, 120)
    with Image.open(run["dir"] / rows[3]["keyframe_path"]) as img:  # the color=c=red shot
        r, g, b = np.asarray(img.convert("RGB"), dtype=float).reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 40 and b < 40
    assert not list(run["dir"].glob("keyframes/**/.*.tmp")), "temporary files left behind"


def test_keyframes_are_shrunk_to_max_side_and_content_addressed(videos: dict[str, Video], tmp_path: Path) -> None:
    rel = _place(tmp_path, videos["big"].path, "big.mp4")
    media = [_media_row("youtube:big", 0, rel, "video/mp4", tmp_path)]
    rows, _ = _direct(tmp_path, media, keyframe_max_side=100, keyframe_quality=80)
    assert _spans(rows) == [(0, 20), (20, 40), (40, 60)]
    for row in rows:
        with Image.open(tmp_path / row["keyframe_path"]) as img:
            assert img.size == (100, 75)
    again, _ = _direct(tmp_path, media, keyframe_max_side=100, keyframe_quality=80)
    assert again == rows  # same input and config: same names, same rows
    other, _ = _direct(tmp_path, media, keyframe_max_side=120, keyframe_quality=80)
    assert {r["keyframe_path"] for r in other}.isdisjoint(r["keyframe_path"] for r in rows)


def test_integer_downscale_and_adaptive_detector_find_the_same_cuts(videos: dict[str, Video], tmp_path: Path) -> None:
    rel = _place(tmp_path, videos["big"].path, "big.mp4")
    media = [_media_row("youtube:big", 0, rel, "video/mp4", tmp_path)]
    rows, _ = _direct(tmp_path, media, downscale=2)
    assert _spans(rows) == [(0, 20), (20, 40), (40, 60)]
    rows, _ = _direct(tmp_path, media, detector="adaptive")
    assert _spans(rows) == [(0, 20), (20, 40), (40, 60)]
    assert rows[0]["detector"] == "adaptive:3.0"


# ----------------------------------------------------------------------------------- frames


def test_frames_at_one_per_second(run: dict, videos: dict[str, Video]) -> None:
    row = run["frames"]["youtube:cuts"]
    assert row["sampling"] == "fps" and row["fps"] == 1.0 and row["side"] == 224
    assert row["count"] == 6  # 5.4 s of video: samples at 0, 1, ..., 5 s
    assert row["timestamps_s"] == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    arr = np.load(run["dir"] / row["path"])
    assert arr.dtype == np.uint8 and arr.shape == (6, 3, 224, 224)
    # 160x120 letterboxed into 224x224: 224x168 picture, 28 black rows above and below.
    assert arr[:, :, :28].max() == 0 and arr[:, :, -28:].max() == 0
    assert arr[:, :, 28:196].mean() > 20
    red = arr[5, :, 28:196]  # t=5 s lies in the red shot (4.2 s - 5.4 s)
    assert red[0].mean() > 200 and red[1].mean() < 40 and red[2].mean() < 40
    vfr = run["frames"]["youtube:vfr"]
    assert vfr["count"] == 5 and vfr["timestamps_s"] == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])


def test_frames_one_per_scene(videos: dict[str, Video], tmp_path: Path) -> None:
    rel = _place(tmp_path, videos["big"].path, "big.mp4")
    media = [_media_row("youtube:big", 0, rel, "video/mp4", tmp_path)]
    rows, frames = _direct(tmp_path, media, frames="scenes", frames_side=64)
    [row] = frames
    assert row["sampling"] == "scenes" and row["fps"] is None and row["count"] == len(rows) == 3
    assert row["timestamps_s"] == pytest.approx([r["keyframe_frame"] / FPS for r in rows])
    arr = np.load(tmp_path / row["path"])
    assert arr.shape == (3, 3, 64, 64) and arr.dtype == np.uint8
    assert arr[1, 0, 8:56].mean() > 200 and arr[1, 1, 8:56].mean() < 40  # the red scene


def test_sampling_faster_than_the_video_repeats_frames(videos: dict[str, Video], tmp_path: Path) -> None:
    rel = _place(tmp_path, videos["vfr"].path, "vfr.mp4")
    _, [row] = _direct(tmp_path, [_media_row("youtube:vfr", 0, rel, "video/mp4", tmp_path)], frames="fps",
                       frames_fps=20, frames_side=32)
    assert row["count"] == 84  # 4.2 s at 20 samples/s
    arr = np.load(tmp_path / row["path"])
    assert arr.shape == (84, 3, 32, 32)
    ts = row["timestamps_s"]
    # In the 10 fps shot (1.2 s - 3.2 s) two samples fall on each frame: same time, same pixels.
    assert ts[24] == ts[25] == pytest.approx(1.2) and np.array_equal(arr[24], arr[25])
    assert ts[23] == pytest.approx(1.12) and ts[26] == ts[27] == pytest.approx(1.3)
    assert not list(tmp_path.glob("frames/**/.*.tmp"))


def test_letterbox_keeps_aspect_and_pads_black() -> None:
    tall = Image.new("RGB", (50, 100), (255, 255, 255))
    arr = letterbox(tall, 40)
    assert arr.shape == (3, 40, 40)
    assert arr[:, :, :10].max() == 0 and arr[:, :, 30:].max() == 0 and arr[:, :, 10:30].min() == 255


def test_sampling_helpers() -> None:
    assert sample_times(5.4, 1.0) == [0, 1, 2, 3, 4, 5]
    assert sample_times(5.0, 1.0) == [0, 1, 2, 3, 4]
    assert sample_times(0.2, 1.0) == [0]
    assert sample_times(1.0, 2.0) == [0, 0.5]
    idx = FrameIndex(time_base=None, start_pts=0, times_s=[0.0, 0.5, 1.5, 1.6])  # type: ignore[arg-type]
    assert [idx.frame_at(t) for t in (0.0, 0.49, 0.5, 1.0, 1.55, 9.0)] == [0, 0, 1, 1, 2, 3]
    assert detection_size(1920, 1080, "auto") == (256, 144)
    assert detection_size(160, 120, "auto") == (160, 120)
    assert detection_size(641, 361, 2) == (320, 180)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="downscale"):
        ScenesConfig(downscale=0)
    with pytest.raises(ValueError, match="threshold"):
        ScenesConfig(threshold=-1)
    with pytest.raises(ValueError, match="detectr"):
        ScenesConfig(detectr="content")
    assert ScenesConfig(detector="adaptive").detector_label == "adaptive:3.0"
    assert load_stage("scenes") is ScenesStage


# ------------------------------------------------------------------------------ attributes


def test_attributes_rows_for_every_keyframe(run: dict) -> None:
    attrs = run["attributes"]
    video_rows = {(a["uid"], a["scene"]): a for a in attrs if a["uid"] == "youtube:cuts"}
    assert set(video_rows) == {("youtube:cuts", n) for n in range(4)}
    red = video_rows[("youtube:cuts", 3)]
    assert red["colors"][0]["name"] == "Red" and red["colors"][0]["fraction"] > 0.9
    assert red["tone"] == "warm" and red["complexity"] == "low"
    for row in video_rows.values():
        assert (row["width"], row["height"], row["orientation"]) == (160, 120, "landscape")
        assert row["media_index"] == 0 and row["ocr_text"] is None and row["caption"] is None
    assert video_rows[("youtube:cuts", 0)]["complexity_score"] > red["complexity_score"]  # testsrc vs flat red
    n_scenes = sum(len(v) for v in run["scenes"].values())
    assert sum(1 for a in attrs if a["scene"] is not None) == n_scenes
    [img] = [a for a in attrs if a["uid"] == "reddit:img"]  # images keep working, scene null
    assert img["scene"] is None and img["colors"][0]["name"] in ("Blue", "Dark_Blue")
    assert run["stats"]["attributes"]["counters"]["video_scenes"] == n_scenes


def test_missing_keyframe_is_an_error_naming_uid_scene_and_path(run: dict, tmp_path: Path) -> None:
    media = tables.read_shard(run["dir"] / "media" / "part-00000.parquet", "media")
    scenes = [dict(s) for s in run["scenes"]["youtube:cuts"]]
    scenes[2]["keyframe_path"] = "keyframes/zz/gone.jpg"
    stage = AttributesStage(AttributesConfig(ocr=False), run["dir"])
    shard = ShardInput("part-00000", {"media": media, "scenes": schemas.get("scenes").from_rows(scenes)}, run["dir"])
    result = stage.process(shard)
    [err] = result.errors
    assert err.record_key == "youtube:cuts#0#2" and err.error_type == "missing_file"
    assert "youtube:cuts" in err.message and "scene 2" in err.message and "keyframes/zz/gone.jpg" in err.message
    rows = result.tables["attributes"].to_pylist()
    assert sorted(r["scene"] for r in rows if r["uid"] == "youtube:cuts") == [0, 1, 3]


# -------------------------------------------------------------------------------- the run


def test_run_output_validates_and_rerun_skips(run: dict) -> None:
    proc = subprocess.run([sys.executable, "-m", "blift.cli", "validate", str(run["dir"])],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 invalid" in proc.stdout
    report = run_pipeline(run["pipe"], RunOptions(out=run["dir"], workers=1, progress=False))
    assert all(not plan.todo for plan in report.plans)


# ---------------------------------------------------------------------------------- helpers


def _direct(run_dir: Path, media: list[dict], **config) -> tuple[list[dict], list[dict]]:
    """Run the stage on one media shard in-process; returns (scene rows, frame rows)."""
    stage = ScenesStage(ScenesConfig(**config), run_dir)
    shard = ShardInput("part-00000", {"media": schemas.get("media").from_rows(media)}, run_dir)
    scenes: list[dict] = []
    frames: list[dict] = []
    for key, payload in stage.records(shard):
        out = stage.process_record(key, payload)
        scenes += out.tables["scenes"]
        frames += out.tables["frames"]
    schemas.get("scenes").from_rows(scenes)
    schemas.get("frames").from_rows(frames)
    return scenes, frames


def test_factory_speech_track(tmp_path: Path) -> None:
    require_tools("ffmpeg", "espeak-ng")
    import av

    video = make_video(tmp_path / "talk.mp4", [Segment("color=c=green", 50)], fps=FPS,
                       audio=["The weather is lovely today.", "Seven ships sailed north at dawn."])
    with av.open(str(video.path)) as container:
        assert len(container.streams.audio) == 1 and len(container.streams.video) == 1
        assert sum(1 for _ in container.decode(video=0)) == video.frame_count == 50
    assert video.has_audio and video.duration_s == pytest.approx(2.0)


def test_grabbed_frames_equal_a_plain_sequential_decode(videos: dict[str, Video]) -> None:
    """Seeking plus skipping non-reference packets must give the very pixels of a full decode."""
    import av

    from blift.stages.scenes.stage import detect_scenes
    from blift.video import grab_frames

    for name in ("cuts", "vfr"):
        path = videos[name].path
        _, index, _ = detect_scenes(path, ScenesConfig())
        # sparse targets, a dense run (several wanted frames in one decoder batch), the last frame
        wanted = [0, 3, 17, 18, *range(24, 44), 55, 56, len(index) - 1]
        got = {i: f.to_ndarray(format="rgb24") for i, f in grab_frames(path, index, wanted)}
        assert sorted(got) == sorted(set(wanted))
        with av.open(str(path)) as container:
            ref = {i: f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i in got}
        assert all(np.array_equal(got[i], ref[i]) for i in got), name
