"""Scene detection's view of a video: a PySceneDetect ``VideoStream`` over PyAV that hands the
detector the very pixels and timecodes ``scenedetect.detect()`` gives it.

``scenedetect.detect(path, detector)`` (PySceneDetect 0.7) reads the video with its OpenCV
backend: ``cv2.VideoCapture`` decodes with FFmpeg, converts each frame to full-size BGR with
swscale (``SWS_BICUBIC``), rotates it by the stream's display matrix
(``CAP_PROP_ORIENTATION_AUTO``), and the ``SceneManager`` shrinks it with ``cv2.resize``
(``INTER_LINEAR``) by ``compute_downscale_factor(max(width, height))`` (longest side to ~256 px,
a float factor, sizes rounded). Positions are ``CAP_PROP_POS_MSEC`` (the frame's timestamp)
in microseconds, and the nominal rate is ``CAP_PROP_FPS`` (the stream's average frame rate).

:class:`DetectionStream` does the same with PyAV: the same swscale conversion (checked
bit-identical to ``VideoCapture`` for 8-bit and 10-bit 4:2:0, 4:4:4, full-range and palette
inputs), the same rotation, the same downscale and the same timecodes. Same frames and timecodes
in, same detector state, same cuts out. (Shrinking the YUV planes before colour conversion, as
blift did before, was cheaper but fed the detector other pixels: an adaptive ratio of 2.18 where
PySceneDetect saw 3.13 on a real cut.)

The cheap exact case: when the factor is an odd integer k that divides both sides (1280x720 and
720x1280 by 5, 3840x2160 by 15, 768x432 by 3), ``INTER_LINEAR`` puts every output pixel exactly
on source pixel ``(k*y + k//2, k*x + k//2)`` (weights 1 and 0), and swscale's 4:2:0 -> BGR24
fast path converts each pixel from its own Y and its 2x2 block's U, V alone. So only those
pixels are converted (a small 4:2:0 frame holding each one with its chroma): the same bytes as
converting all and resizing, for less (0.51 against 0.64 ms per 720p frame; benchmarks/RESULTS.md).
Other sizes and pixel formats convert the whole frame and resize it with ``cv2.resize``, as
PySceneDetect does.

On top, it records every frame's presentation timestamp and key-frame flag
(:class:`blift.video.FrameIndex`) in decode order, so the stage numbers frames by decode order
and takes seconds from the decoder's timestamps, never from ``frame / fps``: exact in a
variable-frame-rate file too. :meth:`DetectionStream.frame_of` maps a detector's cut (a
timecode) back to that decode-order frame.
"""

from __future__ import annotations

from bisect import bisect_right
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter
from scenedetect import FrameTimecode, VideoStream
from scenedetect.common import Timecode, framerate_to_fraction
from scenedetect.scene_manager import compute_downscale_factor

from blift.video import FrameIndex, VideoReadError, decoded_frames, open_container

_MICROSECOND = Fraction(1, 1_000_000)
#: cv2.rotate codes for PyAV's ``VideoFrame.rotation`` (degrees counterclockwise), as OpenCV
#: applies them with ``CAP_PROP_ORIENTATION_AUTO``.
_ROTATIONS = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}


def downscale_factor(width: int, height: int, downscale: str | int) -> float:
    """PySceneDetect's downscale factor: ``auto`` is ``compute_downscale_factor`` of the longest
    side (to ~256 px, 1 for smaller frames), an integer is itself; 1 or less means no resize."""
    return float(compute_downscale_factor(max(width, height))) if downscale == "auto" else float(downscale)


def detection_size(width: int, height: int, downscale: str | int) -> tuple[int, int]:
    """Size of the frames the detector sees (``SceneManager``'s rule, ``round()`` included)."""
    factor = downscale_factor(width, height, downscale)
    if factor <= 1.0:
        return width, height
    return max(1, round(width / factor)), max(1, round(height / factor))


class FrameShrinker:
    """Decoded frames to the BGR arrays PySceneDetect's detector gets for them: converted as
    ``cv2.VideoCapture`` does, rotated, and shrunk by ``factor`` as ``SceneManager`` does (see
    the module doc, also for the cheap exact path of odd integer factors)."""

    FAST_FORMATS = ("yuv420p", "yuvj420p")

    def __init__(self, factor: float, rotation: int = 0) -> None:
        self.factor = factor
        self.rotation = rotation % 360
        self._reformatter = VideoReformatter()
        self._sample: _SampleFrame | None = None

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        factor = self.factor
        if factor <= 1.0:
            return self._rotate(self._full_bgr(frame))
        w, h = frame.width, frame.height
        size = (max(1, round(w / factor)), max(1, round(h / factor)))
        k = int(factor)
        if (k == factor and k % 2 == 1 and w == k * size[0] and h == k * size[1] and w % 2 == 0 and h % 2 == 0
                and frame.format.name in self.FAST_FORMATS):
            return self._rotate(self._sampled(frame, k, size))
        bgr = self._rotate(self._full_bgr(frame))
        return cv2.resize(bgr, (size[1], size[0]) if self.rotation in (90, 270) else size,
                          interpolation=cv2.INTER_LINEAR)

    def _full_bgr(self, frame: av.VideoFrame) -> np.ndarray:
        """Full-size BGR as OpenCV's FFmpeg backend makes it: swscale with SWS_BICUBIC (which
        decides chroma upsampling outside swscale's 4:2:0 fast path)."""
        return self._reformatter.reformat(frame, format="bgr24", interpolation="BICUBIC", threads=1).to_ndarray()

    def _rotate(self, bgr: np.ndarray) -> np.ndarray:
        code = _ROTATIONS.get(self.rotation)
        return cv2.rotate(bgr, code) if code is not None else bgr

    def _sampled(self, frame: av.VideoFrame, k: int, size: tuple[int, int]) -> np.ndarray:
        """``cv2.resize(full_bgr(frame), size, INTER_LINEAR)`` for an odd integer factor ``k``:
        pixel (y, x) of the result is full-size pixel (k*y + k//2, k*x + k//2). Each one goes to
        the top-left of its own 2x2 block of a small 4:2:0 frame, with its chroma, so swscale's
        fast path gives it the bytes it has in the full conversion."""
        w, h = size
        key = (w, h, k, frame.format.name)
        if self._sample is None or self._sample.key != key:
            self._sample = _SampleFrame(key)
        sample = self._sample
        src = _planes(frame)
        sample.y[: 2 * h : 2, : 2 * w : 2] = src[0][k // 2 :: k, k // 2 :: k][:h, :w]
        # Centre k*d + k//2 has chroma sample (k*d + k//2) >> 1: k*m + (k//2 >> 1) for d = 2m, and
        # k*m + ((k + k//2) >> 1) for d = 2m + 1: strided views, no gathering.
        first, second = (k // 2) >> 1, (k + k // 2) >> 1
        for dst, plane in ((sample.u, src[1]), (sample.v, src[2])):
            for dy, sy in ((0, first), (1, second)):
                for dx, sx in ((0, first), (1, second)):
                    part = dst[dy:h:2, dx:w:2]
                    part[:] = plane[sy::k, sx::k][: part.shape[0], : part.shape[1]]
        sample.frame.colorspace = frame.colorspace
        sample.frame.color_range = frame.color_range
        bgr = self._reformatter.reformat(sample.frame, format="bgr24", interpolation="BICUBIC", threads=1).to_ndarray()
        return np.ascontiguousarray(bgr[::2, ::2])


def _planes(frame: av.VideoFrame) -> list[np.ndarray]:
    """The frame's planes as (height, line size) uint8 arrays over its own buffers."""
    return [np.frombuffer(memoryview(p), np.uint8).reshape(p.height, p.line_size) for p in frame.planes]


class _SampleFrame:
    """The small 4:2:0 frame :meth:`FrameShrinker._sampled` fills, reused from frame to frame."""

    def __init__(self, key: tuple[int, int, int, str]) -> None:
        w, h, _, fmt = key
        self.key = key
        self.frame = av.VideoFrame(2 * w, 2 * h, fmt)
        self.y, self.u, self.v = _planes(self.frame)
        for plane in (self.y, self.u, self.v):
            plane[:] = 128  # the pixels no one reads: any value, a fixed one


class DetectionStream(VideoStream):
    """A PySceneDetect video stream over PyAV that feeds the detector what PySceneDetect's own
    OpenCV backend would, and records the exact timestamp of every frame (see the module doc).
    Forward-only: one pass, no seeking."""

    BACKEND_NAME = "blift-pyav"

    def __init__(self, path: Path, downscale: str | int = "auto") -> None:
        super().__init__()
        self._path = Path(path)
        self._container, self._stream = open_container(self._path)
        ctx = self._stream.codec_context
        if not ctx.width or not ctx.height:
            self._container.close()
            raise VideoReadError("the video stream has no frame size")
        # OpenCV's CAP_PROP_FPS: the average frame rate as a float, made a fraction as
        # PySceneDetect does (the rate decides frame_num and fade-cut frames of ThresholdDetector)
        rate = self._stream.average_rate or self._stream.guessed_rate
        self._rate = framerate_to_fraction(float(rate) if rate and rate > 0 else 25.0)
        tb = self._stream.time_base or Fraction(1, 90000)
        self.index = FrameIndex(time_base=Fraction(tb), start_pts=int(self._stream.start_time or 0))
        self._tb_float = tb.numerator / tb.denominator
        self._frames = decoded_frames(self._container, self._stream)
        # The first frame tells the rotation (the stream's display matrix, as OpenCV reads it).
        self._pending: av.VideoFrame | None = next(self._frames, None)
        self.rotation = int(self._pending.rotation) % 360 if self._pending is not None else 0
        w, h = int(ctx.width), int(ctx.height)
        self.full_size = (h, w) if self.rotation in (90, 270) else (w, h)  # as displayed
        self._shrink = FrameShrinker(downscale_factor(*self.full_size, downscale), self.rotation)
        self._size = detection_size(*self.full_size, downscale)
        self._count = 0
        self._position = FrameTimecode(0, self._rate)
        self.positions_us: list[int] = []  # each frame's detector timecode, in microseconds

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
        return self._size  # the size read() returns: the SceneManager must not shrink again

    @property
    def aspect_ratio(self) -> float:
        sar = self._stream.codec_context.sample_aspect_ratio
        return float(sar) if sar else 1.0

    # -- position: the frame's timestamp, as PySceneDetect's OpenCV backend reports it
    @property
    def position(self) -> FrameTimecode:
        return self._position

    @property
    def position_ms(self) -> float:
        return self._position.seconds * 1000.0

    @property
    def frame_number(self) -> int:
        return self._count

    def read(self, decode: bool = True) -> np.ndarray | bool:
        if self._pending is not None:
            frame: av.VideoFrame | None = self._pending
            self._pending = None
        else:
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
        position = self._timecode(pts)
        us = round(position.seconds * 1_000_000)
        if self.positions_us and us <= self.positions_us[-1]:
            # out-of-order or missing timestamps: keep positions increasing (OpenCV would not)
            us = max(round(t * 1_000_000), self.positions_us[-1] + 1)
            position = FrameTimecode(Timecode(pts=us, time_base=_MICROSECOND), self._rate)
        self._position = position
        self.positions_us.append(us)
        if not decode:
            return True
        return self._shrink(frame)

    def _timecode(self, pts: int | None) -> FrameTimecode:
        """The position VideoStreamCv2 gives the frame just read: CAP_PROP_POS_MSEC (its
        timestamp less the stream's start, in double precision) in microseconds; a non-positive
        one (the first frame, or no timestamp) counts frames at the nominal rate instead."""
        us = 0 if pts is None else round(float(pts - self.index.start_pts) * self._tb_float * 1000.0 * 1000)
        if us <= 0 and self._count > 0:
            n = (self._count - 1) * self._rate.denominator
            return FrameTimecode(Timecode(pts=n, time_base=Fraction(1, self._rate.numerator)), self._rate)
        return FrameTimecode(Timecode(pts=us, time_base=_MICROSECOND), self._rate)

    def frame_of(self, cut: FrameTimecode) -> int:
        """Decode-order number of the frame a detector's cut names: the frame whose timecode it
        is, or (a cut computed at nominal frame ``n``, as ThresholdDetector's fade middles are)
        the frame on screen at ``n / fps``."""
        us = round(cut.seconds * 1_000_000)
        return max(0, bisect_right(self.positions_us, us + 1) - 1)

    def reset(self) -> None:
        raise NotImplementedError("DetectionStream is forward-only")

    def seek(self, target: object) -> None:
        raise NotImplementedError("DetectionStream is forward-only")
