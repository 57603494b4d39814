"""Decoding video frames for the scenes stage: a fast stream for detection, exact frame grabs.

Two passes over a video, both through PyAV (FFmpeg's libraries):

1. :class:`DetectionStream` is a PySceneDetect ``VideoStream`` that hands the detector small BGR
   frames and remembers every frame's presentation timestamp and key-frame flag
   (:class:`FrameIndex`). Frame numbers it reports are decode-order indices, so a cut's
   ``.frame_num`` is the exact frame even in a variable-frame-rate file, and seconds come from the
   decoder's timestamps, never from ``frame / fps``.
2. :func:`grab_frames` decodes chosen frames (scene keyframes, 1 fps samples) at full size,
   seeking to the key frame before a target only when that skips decoding work, and yields them in
   order so a caller can write each one and forget it (a 10-minute 1080p video sampled at 1 fps is
   600 full frames: they never sit in memory together).

Why the detection stream scales the YUV planes itself instead of asking FFmpeg for BGR: the
detector only looks at a ~256 px wide copy, and converting the full-size frame to BGR first costs
a third of decoding it. Shrinking the Y, U and V planes with OpenCV's bilinear resize (the
interpolation PySceneDetect itself uses for its downscale) and converting the small I420 picture
to BGR costs ~0.25 ms per 720p frame against ~0.9 ms for full-size BGR plus resize, and keeps
detection close to the speed of a bare FFmpeg decode (benchmarks/bench_scenes.py). Other pixel
formats (10-bit, 4:4:4) fall back to FFmpeg's scaler.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image
from scenedetect import FrameTimecode, VideoStream

#: Width the detector sees when ``downscale`` is "auto" (PySceneDetect's own default target).
AUTO_DETECTION_WIDTH = 256
#: Consecutive undecodable packets after which a stream is treated as ended.
MAX_CONSECUTIVE_FAILURES = 16


class VideoReadError(Exception):
    """The file cannot be opened as a video, or has no decodable video frame."""


@dataclass
class FrameIndex:
    """What the detection pass learned about every decoded frame, in decode (display) order."""

    time_base: Fraction
    start_pts: int
    pts: list[int | None] = field(default_factory=list)
    key: list[bool] = field(default_factory=list)
    times_s: list[float] = field(default_factory=list)
    last_duration_s: float | None = None  # display duration of the last frame, when known

    def __len__(self) -> int:
        return len(self.times_s)

    @property
    def end_s(self) -> float:
        """End of the video: the last frame's timestamp plus its display duration."""
        if not self.times_s:
            return 0.0
        if self.last_duration_s:
            return self.times_s[-1] + self.last_duration_s
        if len(self.times_s) > 1:
            return self.times_s[-1] + (self.times_s[-1] - self.times_s[0]) / (len(self.times_s) - 1)
        return self.times_s[-1]

    def time_of(self, index: int) -> float:
        """Start time of frame ``index``; ``len(self)`` means the end of the video."""
        return self.end_s if index >= len(self.times_s) else self.times_s[index]

    def frame_at(self, t: float) -> int:
        """The frame on screen at time ``t`` (the last one whose timestamp is <= t)."""
        return max(0, bisect_right(self.times_s, t + 1e-9) - 1)

    def is_vfr(self, tolerance: float = 0.01) -> bool:
        """True when frame durations differ by more than ``tolerance`` (relative)."""
        if len(self.times_s) < 3:
            return False
        deltas = np.diff(np.asarray(self.times_s))
        mean = float(deltas.mean())
        return mean > 0 and float(np.abs(deltas - mean).max()) > tolerance * mean


def detection_size(width: int, height: int, downscale: str | int) -> tuple[int, int]:
    """Size of the frames the detector sees: even sides (the chroma planes are half size)."""
    if downscale == "auto":
        factor = max(1.0, width / AUTO_DETECTION_WIDTH)
    else:
        factor = float(downscale)
    w = max(2, int(round(width / factor)) // 2 * 2)
    h = max(2, int(round(height / factor)) // 2 * 2)
    return w, h


def open_container(path: Path, thread_type: str = "FRAME") -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open ``path`` and its first video stream. Frame threading by default: it measured faster
    than "AUTO" for the detection pass on 2 cores (benchmarks/bench_scenes.py)."""
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise VideoReadError(f"cannot open video: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise VideoReadError("the file has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = thread_type
    return container, stream


def _decoded(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Iterator[av.VideoFrame]:
    """Every decodable frame of ``stream``; a corrupt packet is skipped, not fatal (a retry of the
    decoder resumes after it), and a run of them ends the stream."""
    failures = 0
    while True:
        decoder = container.decode(stream)
        try:
            for frame in decoder:
                failures = 0
                yield frame
            return
        except av.error.EOFError:
            return
        except av.error.FFmpegError:
            failures += 1
            if failures >= MAX_CONSECUTIVE_FAILURES:
                return
        finally:
            decoder.close()


def small_bgr(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    """``frame`` shrunk to ``size`` (w, h) as a BGR array, cheaply (see the module doc)."""
    w, h = size
    if frame.format.name in ("yuv420p", "yuvj420p") and frame.width >= w and frame.height >= h:
        planes = []
        for plane, (pw, ph) in zip(frame.planes, ((w, h), (w // 2, h // 2), (w // 2, h // 2))):
            full = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
            planes.append(cv2.resize(full, (pw, ph), interpolation=cv2.INTER_LINEAR).ravel())
        i420 = np.concatenate(planes).reshape(h * 3 // 2, w)
        return cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)
    return frame.to_ndarray(format="bgr24", width=w, height=h, interpolation="AREA")


class DetectionStream(VideoStream):
    """A PySceneDetect video stream over PyAV that feeds the detector small frames and records
    the exact timestamp of every frame (see the module doc). Forward-only: one pass, no seeking."""

    BACKEND_NAME = "blift-pyav"

    def __init__(self, path: Path, downscale: str | int = "auto") -> None:
        super().__init__()
        self._path = Path(path)
        self._container, self._stream = open_container(self._path)
        ctx = self._stream.codec_context
        if not ctx.width or not ctx.height:
            self._container.close()
            raise VideoReadError("the video stream has no frame size")
        self.full_size = (int(ctx.width), int(ctx.height))
        self._size = detection_size(ctx.width, ctx.height, downscale)
        rate = self._stream.average_rate or self._stream.guessed_rate
        self._rate = Fraction(rate) if rate and rate > 0 else Fraction(25)
        tb = self._stream.time_base or Fraction(1, 90000)
        self.index = FrameIndex(time_base=Fraction(tb), start_pts=int(self._stream.start_time or 0))
        self._frames = _decoded(self._container, self._stream)
        self._count = 0

    def close(self) -> None:
        self._frames.close()
        self._container.close()

    # -- identification and facts
    @property
    def path(self) -> str:
        return str(self._path)

    @property
    def name(self) -> str:
        return self._path.stem

    @property
    def is_seekable(self) -> bool:
        return False

    @property
    def frame_rate(self) -> Fraction:
        return self._rate

    @property
    def duration(self) -> FrameTimecode | None:
        frames = self._stream.frames
        return FrameTimecode(int(frames), self._rate) if frames else None

    @property
    def frame_size(self) -> tuple[int, int]:
        return self._size  # the size read() returns

    @property
    def aspect_ratio(self) -> float:
        sar = self._stream.codec_context.sample_aspect_ratio
        return float(sar) if sar else 1.0

    # -- position: decode-order frame numbers, so `.frame_num` of a cut is the exact frame
    @property
    def position(self) -> FrameTimecode:
        return FrameTimecode(max(0, self._count - 1), self._rate)

    @property
    def position_ms(self) -> float:
        return self.index.times_s[-1] * 1000.0 if self.index.times_s else 0.0

    @property
    def frame_number(self) -> int:
        return self._count

    def read(self, decode: bool = True) -> np.ndarray | bool:
        frame = next(self._frames, None)
        if frame is None:
            return False
        idx = self.index
        pts = frame.pts
        idx.pts.append(pts)
        idx.key.append(bool(frame.key_frame))
        if pts is not None:
            t = float((pts - idx.start_pts) * idx.time_base)
        else:  # no timestamps at all: fall back to the nominal rate
            t = float(self._count / self._rate)
        if idx.times_s and t <= idx.times_s[-1]:  # broken or repeated timestamps stay ordered
            t = idx.times_s[-1] + float(1 / self._rate)
        idx.times_s.append(t)
        if frame.duration:
            idx.last_duration_s = float(frame.duration * (frame.time_base or idx.time_base))
        else:
            idx.last_duration_s = None
        self._count += 1
        return small_bgr(frame, self._size) if decode else True

    def reset(self) -> None:
        raise NotImplementedError("DetectionStream is forward-only")

    def seek(self, target: object) -> None:
        raise NotImplementedError("DetectionStream is forward-only")


# --------------------------------------------------------------------------- exact frame grabs


def grab_frames(path: Path, index: FrameIndex, wanted: Iterable[int]) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield ``(frame_number, frame)`` for every wanted frame number, in increasing order.

    Frames are matched by the timestamps the detection pass recorded, so the grabbed frame is the
    one the detector numbered. The demuxer seeks to the key frame at or before a target only when
    that key frame lies beyond what has been decoded already; otherwise decoding goes on forward.
    Packets that are not a target are decoded with ``skip_frame=NONREF``: a frame no other frame
    refers to can be dropped without changing any picture, which roughly halves the work of
    reaching a mid-GOP target in streams with B-frames. (Frame threading is off here: it would
    apply the per-packet setting to packets already in flight.)
    Without timestamps (rare raw streams) it decodes from the start and counts frames.
    """
    targets = sorted({i for i in wanted if 0 <= i < len(index)})
    if not targets:
        return
    if not all(p is not None for p in index.pts):
        yield from _grab_by_counting(path, targets)
        return
    by_pts: dict[int, int] = {p: i for i, p in enumerate(index.pts)}  # type: ignore[misc]
    wanted_pts = {index.pts[i] for i in targets}
    wanted_set = set(targets)
    key_frames = [i for i, k in enumerate(index.key) if k] or [0]
    container, stream = open_container(path, thread_type="SLICE")
    ctx = stream.codec_context
    try:
        packets: Iterator[av.Packet] | None = None
        current = -1  # highest frame number out of the decoder since the last seek
        ready: dict[int, av.VideoFrame] = {}  # wanted frames the decoder delivered early
        for target in targets:
            if target not in ready:
                gop_start = key_frames[max(0, bisect_right(key_frames, target) - 1)]
                if packets is None or current >= target or gop_start > current + 1:
                    container.seek(int(index.pts[gop_start]), stream=stream, backward=True, any_frame=False)  # type: ignore[arg-type]
                    packets = container.demux(stream)
                    current = -1
            while target not in ready:
                packet = next(packets, None)  # type: ignore[arg-type]
                if packet is None:
                    break
                # Every wanted frame's packet is decoded in full (a later target may be fed to the
                # decoder while an earlier one is awaited); the others may be dropped if unreferenced.
                ctx.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in wanted_pts else "NONREF"
                try:
                    frames = ctx.decode(packet)
                except av.error.FFmpegError:
                    continue  # a corrupt packet: the target may still decode
                for frame in frames:
                    number = by_pts.get(frame.pts, -1)  # type: ignore[arg-type]
                    current = max(current, number)
                    if number >= target and number in wanted_set:
                        ready[number] = frame
            if target not in ready:
                raise VideoReadError(f"frame {target} (t={index.time_of(target):.3f}s) could not be decoded again")
            yield target, ready.pop(target)
    finally:
        container.close()


def _grab_by_counting(path: Path, targets: list[int]) -> Iterator[tuple[int, av.VideoFrame]]:
    """:func:`grab_frames` for streams without timestamps: one forward pass, frames counted."""
    container, stream = open_container(path)
    try:
        pending = iter(targets)
        target = next(pending)
        for number, frame in enumerate(_decoded(container, stream)):
            if number == target:
                yield number, frame
                target = next(pending, None)
                if target is None:
                    return
        raise VideoReadError(f"frame {target} could not be decoded again")
    finally:
        container.close()


def frame_image(frame: av.VideoFrame, max_side: int | None = None) -> Image.Image:
    """A decoded frame as an RGB PIL image, shrunk so its longest side is at most ``max_side``
    (area filter; never enlarged)."""
    w, h = frame.width, frame.height
    if max_side and max(w, h) > max_side:
        scale = max_side / max(w, h)
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
        return frame.to_image(width=w, height=h, interpolation="AREA")
    return frame.to_image()


def letterbox(img: Image.Image, side: int) -> np.ndarray:
    """``img`` fitted into a black ``side`` x ``side`` square, aspect kept, as uint8 (3, side, side)."""
    w, h = img.size
    scale = side / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = img.convert("RGB").resize((nw, nh), Image.Resampling.BICUBIC)
    canvas = np.zeros((side, side, 3), dtype=np.uint8)
    top, left = (side - nh) // 2, (side - nw) // 2
    canvas[top : top + nh, left : left + nw] = np.asarray(resized, dtype=np.uint8)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1))


def sample_times(end_s: float, fps: float) -> list[float]:
    """Sampling instants ``0, 1/fps, 2/fps, ...`` strictly before ``end_s`` (at least one)."""
    n = max(1, math.ceil(end_s * fps - 1e-9))
    return [k / fps for k in range(n)]
