"""What a video file is, according to ffprobe: duration, frame rate, size, audio, MIME type.

Only the container and stream headers are read (``-show_format -show_streams``), so a probe
costs milliseconds whatever the file size. A file ffprobe cannot parse, an empty file, or one
without a video stream is rejected as ``bad_video``: later stages (scenes, ASR) would fail on it.
Width and height are reported as displayed: a phone video stored 1920x1080 with a 90° rotation
is 1080x1920.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from blift.errors import ConfigError

# ffprobe format_name -> (mime, ext)
_CONTAINERS: dict[str, tuple[str, str]] = {
    "matroska,webm": ("video/webm", "webm"),
    "flv": ("video/x-flv", "flv"),
    "mpegts": ("video/mp2t", "ts"),
    "avi": ("video/x-msvideo", "avi"),
    "mpeg": ("video/mpeg", "mpg"),
    "ogg": ("video/ogg", "ogv"),
    "gif": ("image/gif", "gif"),
}
_WEBM_CODECS = frozenset({"vp8", "vp9", "av1", "opus", "vorbis"})


class VideoRejected(Exception):
    """The file is not a usable video (``reason``: bad_video)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class VideoFacts:
    mime: str
    ext: str
    duration_s: float | None
    fps: float | None
    width: int
    height: int
    has_audio: bool
    vcodec: str | None
    acodec: str | None


def ffprobe_path() -> str:
    path = shutil.which("ffprobe")
    if path is None:
        raise ConfigError("ffprobe was not found on PATH; install ffmpeg (Debian: apt-get install ffmpeg)")
    return path


def _rate(value: Any) -> float | None:
    """``avg_frame_rate`` such as "30000/1001"; "0/0" (unknown) is None."""
    try:
        frac = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        return None
    return round(float(frac), 6) if frac > 0 else None


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out >= 0 else None


def _rotation(stream: dict[str, Any]) -> int:
    for side in stream.get("side_data_list") or []:
        if isinstance(side, dict) and "rotation" in side:
            try:
                return int(float(side["rotation"]))
            except (TypeError, ValueError):
                pass
    try:
        return int((stream.get("tags") or {}).get("rotate", 0))
    except (TypeError, ValueError):
        return 0


def _mime(fmt: dict[str, Any], vcodec: str | None, acodec: str | None) -> tuple[str, str]:
    name = str(fmt.get("format_name") or "")
    if name.startswith("mov,mp4"):
        brand = str((fmt.get("tags") or {}).get("major_brand") or "").strip()
        return ("video/quicktime", "mov") if brand == "qt" else ("video/mp4", "mp4")
    if name == "matroska,webm":
        codecs = {c for c in (vcodec, acodec) if c}
        return ("video/webm", "webm") if codecs <= _WEBM_CODECS else ("video/x-matroska", "mkv")
    return _CONTAINERS.get(name, ("application/octet-stream", "bin"))


def parse_probe(data: dict[str, Any]) -> VideoFacts:
    """Facts from ffprobe's JSON. Raises VideoRejected when there is no usable video stream."""
    streams = [s for s in data.get("streams") or [] if isinstance(s, dict)]
    fmt = data.get("format") or {}
    video = next((s for s in streams if s.get("codec_type") == "video"
                  and not (s.get("disposition") or {}).get("attached_pic")), None)
    if video is None:
        raise VideoRejected("bad_video", f"no video stream (container {fmt.get('format_name')!r})")
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    if width <= 0 or height <= 0:
        raise VideoRejected("bad_video", f"video stream has no size ({width}x{height})")
    if abs(_rotation(video)) % 180 == 90:
        width, height = height, width
    vcodec = video.get("codec_name")
    acodec = audio.get("codec_name") if audio else None
    mime, ext = _mime(fmt, vcodec, acodec)
    return VideoFacts(
        mime=mime,
        ext=ext,
        duration_s=_float(fmt.get("duration")) or _float(video.get("duration")),
        fps=_rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate")),
        width=width,
        height=height,
        has_audio=audio is not None,
        vcodec=vcodec,
        acodec=acodec,
    )


def probe_video(path: Path, timeout_s: float = 60.0) -> VideoFacts:
    """Run ffprobe on ``path``. Raises VideoRejected (bad_video) for an empty, unreadable or
    video-less file, ConfigError when ffprobe itself is missing."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise VideoRejected("bad_video", f"{path.name}: empty file (0 bytes)")
    cmd = [ffprobe_path(), "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise VideoRejected("bad_video", f"{path.name}: ffprobe took longer than {timeout_s:g}s") from None
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise VideoRejected("bad_video", f"{path.name}: ffprobe failed: {tail[0][:300]}")
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise VideoRejected("bad_video", f"{path.name}: ffprobe output is not JSON ({exc})") from None
    return parse_probe(data)
