"""Reading video frames, shared by every part that needs pixels from a video file.

* :func:`open_container` / :func:`decoded_frames`: PyAV (FFmpeg's libraries) with corrupt packets
  skipped rather than fatal.
* :class:`FrameIndex`: every frame's presentation timestamp and key-frame flag, learned in one
  pass (the scenes stage's detection stream builds it), so seconds come from the decoder's
  timestamps, never from ``frame / fps``, even in a variable-frame-rate file.
* :func:`grab_frames` decodes chosen frames (scene keyframes, 1 fps samples) at full size,
  seeking to the key frame before a target only when that skips decoding work, and yields them in
  order so a caller can write each one and forget it (a 10-minute 1080p video sampled at 1 fps is
  600 full frames: they never sit in memory together).
* :func:`decode_frames` samples a video at a fixed rate in one forward decode (the export's
  LLaMA-VID frames); :func:`write_frames` streams such frames into a ``.npy`` atomically.
* :func:`frame_image`, :func:`letterbox`, :func:`sample_times`: the one way frames are turned
  into square arrays and sampling instants are chosen, so the scenes stage and the export agree.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from bisect import bisect_right
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np
from PIL import Image

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


def open_container(path: Path,
                   thread_type: str = "FRAME") -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
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


def decoded_frames(container: av.container.InputContainer,
                   stream: av.video.stream.VideoStream) -> Generator[av.VideoFrame, None, None]:
    """Every decodable frame of ``stream``; a corrupt packet is skipped, not fatal (a retry of the
    decoder resumes after it), and a run of them ends the stream."""
    failures = 0
    while True:
        # PyAV's stub says Iterator; decode() returns a generator (closed in the finally below)
        decoder = cast("Generator[av.VideoFrame, None, None]", container.decode(stream))
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
        target: int | None = next(pending)
        for number, frame in enumerate(decoded_frames(container, stream)):
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


def decode_frames(path: Path, fps: float, side: int) -> Iterator[np.ndarray]:
    """Frames of ``path`` at ``fps`` (the frame on screen at 0, 1/fps, 2/fps ... s, up to the end
    of the video), each letterboxed to uint8 (3, side, side). One forward decode, no seeking; a
    frame shown at several sampling instants is converted once."""
    container, stream = open_container(path)
    start = stream.start_time or 0
    tb = stream.time_base
    rate = stream.average_rate or stream.guessed_rate
    nominal = 1.0 / float(rate) if rate else 1.0 / 25
    step = 1.0 / fps
    k = 0  # index of the next sampling instant
    prev = None  # the last decoded frame and its letterboxed array (made when first needed)
    prev_arr: np.ndarray | None = None
    end = 0.0
    count = 0

    def shown(frame: av.VideoFrame) -> np.ndarray:
        return letterbox(frame_image(frame, side * 2), side)

    try:
        try:
            for frame in container.decode(stream):
                t = float((frame.pts - start) * tb) if frame.pts is not None and tb else count * nominal
                count += 1
                while k * step < t - 1e-9:  # instants before this frame show the previous one
                    if prev is None:  # (or this one, when the stream starts late)
                        prev, prev_arr = frame, None
                    if prev_arr is None:
                        prev_arr = shown(prev)
                    yield prev_arr
                    k += 1
                prev, prev_arr = frame, None
                dur = float(frame.duration * tb) if frame.duration and tb else nominal
                end = max(end, t + dur)
        except av.error.FFmpegError as exc:
            if prev is None:
                raise VideoReadError(f"cannot decode: {exc}") from None
            # a corrupt tail: keep what decoded
        if prev is None:
            raise VideoReadError("no decodable video frame")
        while k == 0 or k * step < end - 1e-9:
            if prev_arr is None:
                prev_arr = shown(prev)
            yield prev_arr
            k += 1
    finally:
        container.close()


def write_frames(path: Path, frames: Iterator[np.ndarray], side: int) -> int:
    """Stream (3, side, side) uint8 frames into a ``.npy`` of shape (N, 3, side, side), atomically.

    N is not known before decoding ends, so frames go to a raw temporary file first and the
    ``.npy`` header is written in front of them at the end (one sequential copy).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    raw_fd, raw_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".raw", dir=path.parent)
    n = 0
    try:
        with os.fdopen(raw_fd, "wb") as raw:
            for frame in frames:
                if frame.shape != (3, side, side) or frame.dtype != np.uint8:
                    raise ValueError(f"frame {n}: expected uint8 (3, {side}, {side}), got {frame.dtype} {frame.shape}")
                raw.write(np.ascontiguousarray(frame).tobytes())
                n += 1
        if n == 0:
            raise VideoReadError("no frames")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out, open(raw_name, "rb") as raw:
                np.lib.format.write_array_header_1_0(
                    out, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                          "shape": (n, 3, side, side)})
                shutil.copyfileobj(raw, out, 1 << 20)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    finally:
        Path(raw_name).unlink(missing_ok=True)
    return n
