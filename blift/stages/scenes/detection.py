"""Scene detection's view of a video: a PySceneDetect ``VideoStream`` over PyAV.

:class:`DetectionStream` hands the detector small BGR frames and remembers every frame's
presentation timestamp and key-frame flag (:class:`blift.video.FrameIndex`). Frame numbers it
reports are decode-order indices, so a cut's ``.frame_num`` is the exact frame even in a
variable-frame-rate file, and seconds come from the decoder's timestamps, never from
``frame / fps``.

Why the stream scales the YUV planes itself instead of asking FFmpeg for BGR: the detector only
looks at a ~256 px wide copy, and converting the full-size frame to BGR first costs a third of
decoding it. Shrinking the Y, U and V planes with OpenCV's bilinear resize (the interpolation
PySceneDetect itself uses for its downscale) and converting the small I420 picture to BGR costs
~0.25 ms per 720p frame against ~0.9 ms for full-size BGR plus resize, and keeps detection close
to the speed of a bare FFmpeg decode (benchmarks/bench_scenes.py). Other pixel formats (10-bit,
4:4:4) fall back to FFmpeg's scaler.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from scenedetect import FrameTimecode, VideoStream

from blift.video import FrameIndex, VideoReadError, decoded_frames, open_container

#: Width the detector sees when ``downscale`` is "auto" (PySceneDetect's own default target).
AUTO_DETECTION_WIDTH = 256


def detection_size(width: int, height: int, downscale: str | int) -> tuple[int, int]:
    """Size of the frames the detector sees: even sides (the chroma planes are half size)."""
    if downscale == "auto":
        factor = max(1.0, width / AUTO_DETECTION_WIDTH)
    else:
        factor = float(downscale)
    w = max(2, int(round(width / factor)) // 2 * 2)
    h = max(2, int(round(height / factor)) // 2 * 2)
    return w, h


def small_bgr(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    """``frame`` shrunk to ``size`` (w, h) as a BGR array, cheaply (see the module doc)."""
    w, h = size
    if frame.format.name in ("yuv420p", "yuvj420p") and frame.width >= w and frame.height >= h:
        planes = []
        for plane, (pw, ph) in zip(frame.planes, ((w, h), (w // 2, h // 2), (w // 2, h // 2))):
            full = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
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
        self._frames = decoded_frames(self._container, self._stream)
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
