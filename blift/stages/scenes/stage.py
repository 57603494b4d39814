"""The ``scenes`` stage: shots of every downloaded video (PySceneDetect), one keyframe JPEG per
shot, and optionally the sampled-frame array LLaMA-VID reads.

Per video (media rows with status ok and a ``video/*`` MIME type):

1. Detection: PySceneDetect's ``SceneManager`` with one of its detectors (``content``, the
   default, ``adaptive``, ``threshold``, ``histogram``, ``hash``) runs over
   :class:`~blift.stages.scenes.detection.DetectionStream`, which decodes with PyAV and hands the
   detector the same frames and timecodes as ``scenedetect.detect()`` (its OpenCV backend and
   auto-downscale): the cuts are PySceneDetect's own. Scenes are numbered in decode-order frames;
   seconds come from the decoder's timestamps, so variable-frame-rate videos get true times. No
   frame is skipped: cuts must be exact.
2. Keyframes: the middle frame of each scene is decoded again (seeking) and stored as a JPEG under
   ``keyframes/``, named by the video's sha256, the scene number and a short hash of everything
   that decides the picture (frame, size, quality), written atomically.
3. Frames (``frames: fps|scenes``): one ``.npy`` per video under ``frames/``, uint8
   ``(N, 3, side, side)``, letterboxed to a square, sampled at ``frames_fps`` or one per scene.

A video with no cut is one scene covering it; so is a video shorter than ``min_scene_len_s``.
An unreadable video is a permanent error of its record; other media rows are counted and skipped.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any, ClassVar, Literal

import av
import numpy as np
from pydantic import Field, field_validator
from scenedetect import (
    AdaptiveDetector,
    ContentDetector,
    HashDetector,
    HistogramDetector,
    SceneDetector,
    SceneManager,
    ThresholdDetector,
)

from blift.errors import PermanentError
from blift.ids import file_sha256
from blift.stage import RecordOutput, RecordStage, ShardInput, StageConfig, run_file
from blift.stages.scenes.detection import DetectionStream
from blift.storage import commit_file, scratch_file
from blift.tables import atomic_write_bytes
from blift.video import (
    FrameIndex,
    VideoReadError,
    frame_image,
    grab_frames,
    letterbox,
    sample_times,
)

log = logging.getLogger(__name__)

KEYFRAMES_DIR = "keyframes"
FRAMES_DIR = "frames"
#: PySceneDetect's own default threshold of each detector.
DEFAULT_THRESHOLDS = {"content": 27.0, "adaptive": 3.0, "threshold": 12.0, "histogram": 0.2, "hash": 0.35}
#: Bumped when the bytes written for the same frame and settings change (encoder, resizing).
_FILE_FORMAT = 1


class ScenesConfig(StageConfig):
    """Settings of the scenes stage (keys of the pipeline YAML)."""

    detector: Literal["content", "adaptive", "threshold", "histogram", "hash"] = Field(
        "content", description="PySceneDetect detector: content (HSV change), adaptive (content change against "
        "its neighbours), threshold (fades to black), histogram (luma histogram), hash (perceptual hash)")
    threshold: float | None = Field(None, gt=0, description="detector threshold; default PySceneDetect's: 27.0 "
                                    "(content), 3.0 (adaptive), 12 (threshold), 0.2 (histogram), 0.35 (hash)")
    min_scene_len_s: float = Field(0.6, ge=0, description="shortest scene; closer cuts are merged")
    downscale: Literal["auto"] | int = Field("auto",
                                             description="detection frame shrink factor; auto (PySceneDetect's) "
                                             "brings the longest side to ~256 px")
    keyframe_max_side: int = Field(672, ge=16, le=8192, description="longest side of stored keyframe JPEGs")
    keyframe_quality: int = Field(90, ge=1, le=95, description="JPEG quality of keyframes")
    frames: Literal["none", "fps", "scenes"] = Field("none", description="also store sampled frames as .npy")
    frames_fps: float = Field(1.0, gt=0, le=60, description="sampling rate when frames is fps")
    frames_side: int = Field(224, ge=16, le=2048, description="frames are letterboxed to side x side")

    @field_validator("downscale")
    @classmethod
    def _positive_factor(cls, value: str | int) -> str | int:
        if isinstance(value, int) and value < 1:
            raise ValueError("downscale must be 'auto' or an integer >= 1")
        return value

    @property
    def effective_threshold(self) -> float:
        return float(self.threshold if self.threshold is not None else DEFAULT_THRESHOLDS[self.detector])

    @property
    def detector_label(self) -> str:
        """What the ``detector`` column says, e.g. ``content:27.0``."""
        return f"{self.detector}:{self.effective_threshold}"


def make_detector(config: ScenesConfig) -> SceneDetector:
    """A fresh detector (they keep per-video state) built from the config: PySceneDetect's
    defaults but for the threshold and the minimum scene length (in seconds)."""
    threshold, min_len = config.effective_threshold, config.min_scene_len_s
    if config.detector == "adaptive":
        return AdaptiveDetector(adaptive_threshold=threshold, min_scene_len=min_len)
    if config.detector == "threshold":
        return ThresholdDetector(threshold=threshold, min_scene_len=min_len)
    if config.detector == "histogram":
        return HistogramDetector(threshold=threshold, min_scene_len=min_len)
    if config.detector == "hash":
        return HashDetector(threshold=threshold, min_scene_len=min_len)
    return ContentDetector(threshold=threshold, min_scene_len=min_len)


def detect_scenes(path: Path, config: ScenesConfig) -> tuple[list[tuple[int, int]], FrameIndex, tuple[int, int]]:
    """Scenes of the video at ``path`` as ``(start_frame, end_frame_exclusive)``, the frame index
    (timestamps) and the full frame size. Raises VideoReadError when nothing decodes."""
    stream = DetectionStream(path, config.downscale)
    try:
        manager = SceneManager()
        manager.auto_downscale = False  # the stream shrinks frames itself, by the manager's rule
        manager.downscale = 1
        manager.add_detector(make_detector(config))
        manager.detect_scenes(video=stream)
        scene_list = manager.get_scene_list(start_in_scene=True)
    finally:
        stream.close()
    index = stream.index
    total = len(index)
    if total == 0:
        raise VideoReadError("no video frame could be decoded")
    # A cut is a timecode (PySceneDetect's frame_num is time x nominal fps): back to decode order.
    cuts = sorted({n for n in (stream.frame_of(start) for start, _ in scene_list[1:]) if 0 < n < total})
    bounds = [0, *cuts, total]
    return list(zip(bounds[:-1], bounds[1:])), index, stream.full_size


def middle_frame(start: int, end: int) -> int:
    """The frame that stands for scene [start, end): its middle one."""
    return start + (end - start) // 2


def short_hash(obj: Any, n: int = 10) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:n]


class ScenesStage(RecordStage):
    """Scene detection, keyframes and optional frame arrays for every downloaded video."""

    name: ClassVar[str] = "scenes"
    version: ClassVar[int] = 2  # 2: cuts equal scenedetect.detect() (its frames and timecodes)
    inputs: ClassVar[dict[str, str]] = {"media": "media"}
    outputs: ClassVar[dict[str, str]] = {"scenes": "scenes", "frames": "frames"}
    Config: ClassVar[type[StageConfig]] = ScenesConfig
    resources: ClassVar[str] = "cpu"

    config: ScenesConfig

    def describe(self) -> str:
        cfg = self.config
        frames = "no frame arrays" if cfg.frames == "none" else f"frames: {cfg.frames} at {cfg.frames_side}px"
        return f"scenes: PySceneDetect {cfg.detector_label} (min {cfg.min_scene_len_s:g}s), PyAV decoding, {frames}"

    def records(self, shard: ShardInput) -> list[tuple[str, Any]]:
        """One record per item uid: all its media rows (videos are processed, the rest counted)."""
        by_uid: dict[str, list[dict[str, Any]]] = {}
        for row in shard.rows("media"):
            by_uid.setdefault(row["uid"], []).append(row)
        return list(by_uid.items())

    def process_record(self, key: str, payload: list[dict[str, Any]]) -> RecordOutput:
        out = RecordOutput(tables={"scenes": [], "frames": []})
        counters = {"videos": 0, "scenes": 0, "not_video": 0, "media_not_ok": 0, "vfr": 0, "frames_files": 0}
        for row in sorted(payload, key=lambda r: r["index"]):
            if row.get("status") != "ok":
                counters["media_not_ok"] += 1
                continue
            if not str(row.get("mime") or "").startswith("video/"):
                counters["not_video"] += 1
                continue
            scenes, frames, vfr = self._video(row)
            out.tables["scenes"].extend(scenes)
            out.tables["frames"].extend(frames)
            counters["videos"] += 1
            counters["scenes"] += len(scenes)
            counters["frames_files"] += len(frames)
            counters["vfr"] += int(vfr)
        out.counters = {k: v for k, v in counters.items() if v}
        return out

    # ------------------------------------------------------------------ one video

    def _video(self, row: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
        uid, media_index = row["uid"], int(row["index"])
        where = f"{uid}#{media_index}"
        rel = row.get("path")
        path = run_file(self.run_dir, rel, f"{where}: video")
        sha = row.get("sha256") or file_sha256(path)
        cfg = self.config
        try:
            spans, index, _ = detect_scenes(path, cfg)
            keyframes = [middle_frame(s, e) for s, e in spans]
            samples = self._sample_frames(index, keyframes)
            keyframe_paths, frames_rel = self._decode_outputs(path, sha, index, keyframes, samples)
        except VideoReadError as exc:
            raise PermanentError(f"{where}: cannot read video {rel}: {exc}", error_type="bad_video") from exc
        except av.error.FFmpegError as exc:
            raise PermanentError(f"{where}: cannot read video {rel}: {type(exc).__name__}: {exc}",
                                 error_type="bad_video") from exc

        scene_rows = []
        for n, ((start, end), kf) in enumerate(zip(spans, keyframes)):
            scene_rows.append({
                "uid": uid,
                "media_index": media_index,
                "scene": n,
                "start_s": round(index.time_of(start), 6),
                "end_s": round(index.time_of(end), 6),
                "start_frame": start,
                "end_frame": end,
                "keyframe_frame": kf,
                "keyframe_path": keyframe_paths[kf],
                "detector": cfg.detector_label,
            })
        frame_rows = []
        if samples is not None:
            frame_rows.append({
                "uid": uid,
                "media_index": media_index,
                "path": frames_rel,
                "sampling": cfg.frames,
                "fps": cfg.frames_fps if cfg.frames == "fps" else None,
                "count": len(samples),
                "side": cfg.frames_side,
                "timestamps_s": [round(index.time_of(i), 6) for i in samples],
            })
        return scene_rows, frame_rows, index.is_vfr()

    def _sample_frames(self, index: FrameIndex, keyframes: list[int]) -> list[int] | None:
        """Frame numbers that go into the .npy array (None when frames are off)."""
        cfg = self.config
        if cfg.frames == "none":
            return None
        if cfg.frames == "scenes":
            return list(keyframes)
        return [index.frame_at(t) for t in sample_times(index.end_s, cfg.frames_fps)]

    def _decode_outputs(self, path: Path, sha: str, index: FrameIndex, keyframes: list[int],
                        samples: list[int] | None) -> tuple[dict[int, str], str | None]:
        """One decoding pass over the wanted frames: keyframe JPEGs written, sample frames
        letterboxed straight into the memory-mapped .npy (a long video's frames never sit in
        memory together). Returns ({keyframe frame: relative path}, .npy relative path)."""
        cfg = self.config
        kf_set = set(keyframes)
        scene_of = {kf: n for n, kf in enumerate(keyframes)}
        slots: dict[int, list[int]] = {}  # frame -> positions in the array (a frame may repeat)
        for pos, frame_no in enumerate(samples or ()):
            slots.setdefault(frame_no, []).append(pos)
        written: dict[int, str] = {}
        frames_rel = tmp = array = None
        if samples is not None:
            frames_rel = self._frames_rel(sha, samples)
            tmp = scratch_file(self.run_dir / frames_rel)  # next to it when local; committed below
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                              shape=(len(samples), 3, cfg.frames_side, cfg.frames_side))
        try:
            for frame_no, frame in grab_frames(path, index, kf_set | set(slots)):
                if frame_no in kf_set:
                    buf = io.BytesIO()
                    frame_image(frame, cfg.keyframe_max_side).save(buf, format="JPEG", quality=cfg.keyframe_quality)
                    rel = self._keyframe_rel(sha, scene_of[frame_no], frame_no, index)
                    atomic_write_bytes(self.run_dir / rel, buf.getvalue())
                    written[frame_no] = rel
                if frame_no in slots and array is not None:
                    # FFmpeg's area filter shrinks to twice the side first (cheap), PIL does the rest.
                    square = letterbox(frame_image(frame, cfg.frames_side * 2), cfg.frames_side)
                    for pos in slots.pop(frame_no):
                        array[pos] = square
            missing = sorted((kf_set - set(written)) | set(slots))
            if missing:
                raise VideoReadError(f"frames {missing} could not be decoded")
            if array is not None and tmp is not None and frames_rel is not None:
                array.flush()
                del array
                commit_file(tmp, self.run_dir / frames_rel)
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        return written, frames_rel

    # ------------------------------------------------------------------ file names

    def _keyframe_rel(self, sha: str, scene: int, frame_no: int, index: FrameIndex) -> str:
        cfg = self.config
        tag = short_hash({"v": _FILE_FORMAT, "frame": frame_no, "t": index.time_of(frame_no),
                          "side": cfg.keyframe_max_side, "q": cfg.keyframe_quality})
        return f"{KEYFRAMES_DIR}/{sha[:2]}/{sha}-s{scene:04d}-{tag}.jpg"

    def _frames_rel(self, sha: str, samples: list[int]) -> str:
        cfg = self.config
        tag = short_hash({"v": _FILE_FORMAT, "sampling": cfg.frames, "fps": cfg.frames_fps, "side": cfg.frames_side,
                          "frames": samples})
        return f"{FRAMES_DIR}/{sha[:2]}/{sha}-{cfg.frames}-{tag}.npy"
