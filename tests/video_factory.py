"""Synthetic test videos with known hard cuts (and optional audio or speech), made with ffmpeg.

Shared by every test that needs a video. The API is deliberately small:

* :class:`Segment` - one shot: an ffmpeg lavfi source (``"testsrc"``, ``"smptebars"``,
  ``"mandelbrot"``, ``"color=c=red"``, ...) shown for ``frames`` frames, optionally at its own
  frame rate (``fps``), which makes the file variable-frame-rate, and optionally through video
  filters (``vf``: ``"fade=t=out:st=1:d=0.5"``, ``"hue=h=90*t"``; their times count from the
  shot's start).
* :func:`make_video` - concatenate segments into an H.264 MP4 and return a :class:`Video`
  that knows the exact cut frames, every frame's timestamp and the duration.
* :func:`speech_wav` - varied English sentences spoken by ``espeak-ng`` into a WAV file
  (``make_video(..., audio=[...sentences])`` muxes it under the video).

Why segments are cut with ``trim=end_frame`` and joined with the ``concat`` filter (not the
concat demuxer): frame counts are then exact, so a test can assert cuts at exact frames.
Keep videos tiny (160x120, a few seconds) and build them in session-scoped fixtures.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Sequence

__all__ = ["Segment", "Video", "make_video", "speech_wav", "require_tools"]

#: Distinct, easily told-apart sources for hard cuts (each differs strongly from the others).
SOURCES = ("testsrc", "smptebars", "mandelbrot", "color=c=red", "color=c=blue", "rgbtestsrc")


@dataclass(frozen=True)
class Segment:
    """One shot of a synthetic video."""

    source: str  # lavfi source, with or without options: "testsrc", "color=c=red"
    frames: int
    fps: float | None = None  # None: the video's fps; a different value makes the file VFR
    vf: str = ""  # ffmpeg video filters applied to this shot (fade, hue, ...), "" for none

    def lavfi(self, size: tuple[int, int], fps: float) -> str:
        sep = ":" if "=" in self.source else "="
        src = f"{self.source}{sep}s={size[0]}x{size[1]}:r={_rate(self.fps or fps)}"
        return f"{src},{self.vf}" if self.vf else src


@dataclass(frozen=True)
class Video:
    """A video written by :func:`make_video` and the facts a test can assert on."""

    path: Path
    segments: tuple[Segment, ...]
    fps: float  # the nominal frame rate (segments may override it: see ``vfr``)
    size: tuple[int, int]
    has_audio: bool
    timestamps: tuple[float, ...] = field(repr=False)  # presentation time of every frame (s)

    @property
    def frame_count(self) -> int:
        return len(self.timestamps)

    @property
    def cuts(self) -> list[int]:
        """Frame numbers where a new segment starts (the first frame of every shot but the first)."""
        out, n = [], 0
        for seg in self.segments[:-1]:
            n += seg.frames
            out.append(n)
        return out

    @property
    def scene_frames(self) -> list[tuple[int, int]]:
        """(start_frame, end_frame exclusive) of every segment."""
        bounds = [0, *self.cuts, self.frame_count]
        return list(zip(bounds[:-1], bounds[1:]))

    @property
    def duration_s(self) -> float:
        """End of the last frame: its timestamp plus its own frame duration."""
        last = self.segments[-1]
        return self.timestamps[-1] + 1.0 / (last.fps or self.fps)

    @property
    def vfr(self) -> bool:
        return len({seg.fps or self.fps for seg in self.segments}) > 1


def require_tools(*names: str) -> None:
    """Skip the calling test when a binary it needs is missing (ffmpeg, espeak-ng)."""
    import pytest

    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install ffmpeg espeak-ng)")


def make_video(
    path: Path,
    segments: Sequence[Segment],
    *,
    fps: float = 25.0,
    size: tuple[int, int] = (160, 120),
    audio: None | str | Sequence[str] = None,
    crf: int = 18,
) -> Video:
    """Write an H.264/yuv420p MP4 of ``segments`` to ``path`` and describe it.

    ``audio``: None (no audio track), ``"tone"`` (a 440 Hz sine), or a list of sentences spoken
    by espeak-ng (padded with silence or cut to the video's length). Segments with their own
    ``fps`` produce a variable-frame-rate file (timestamps kept as they are, ``-fps_mode vfr``).
    """
    if not segments:
        raise ValueError("make_video: at least one segment is needed")
    if any(seg.frames < 1 for seg in segments):
        raise ValueError("make_video: every segment needs at least one frame")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    chains, labels = [], []
    for i, seg in enumerate(segments):
        chains.append(f"{seg.lavfi(size, fps)},trim=end_frame={seg.frames},setpts=PTS-STARTPTS,format=yuv420p[v{i}]")
        labels.append(f"[v{i}]")
    graph = ";".join(chains) + f";{''.join(labels)}concat=n={len(segments)}:v=1:a=0[v]"

    timestamps: list[float] = []
    t = Fraction(0)
    for seg in segments:
        step = 1 / Fraction(_rate(seg.fps or fps))
        for _ in range(seg.frames):
            timestamps.append(float(t))
            t += step
    duration = float(t)

    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-filter_complex", graph]
    speech: Path | None = None
    if audio == "tone":
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={duration:.6f}"]
    elif audio is not None:
        if isinstance(audio, str):
            raise ValueError("make_video: audio must be None, 'tone' or a list of sentences")
        speech = speech_wav(path.with_suffix(".speech.wav"), list(audio))
        cmd += ["-i", str(speech)]
    cmd += ["-map", "[v]"]
    if audio is not None:
        cmd += ["-map", "0:a" if audio == "tone" else "0:a:0", "-af", "apad", "-t", f"{duration:.6f}",
                "-c:a", "aac", "-b:a", "64k"]
    vfr = len({seg.fps or fps for seg in segments}) > 1
    cmd += ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p"]
    # ffmpeg 5's MP4 muxer drops the last frame of a VFR H.264 stream behind its edit list; without
    # the edit list every frame decodes (timestamps then start at the B-frame delay: players and
    # PyAV subtract the stream's start_time).
    cmd += ["-fps_mode", "vfr", "-use_editlist", "0"] if vfr else ["-r", _rate(fps)]
    cmd += ["-movflags", "+faststart", str(path)]
    _run(cmd)
    if speech is not None:
        speech.unlink(missing_ok=True)
    return Video(path, tuple(segments), float(fps), size, audio is not None, tuple(timestamps))


def speech_wav(path: Path, sentences: Sequence[str], *, voice: str = "en-us", words_per_minute: int = 150) -> Path:
    """Speak ``sentences`` (vary them: Whisper drops repeated text) into a 16 kHz mono WAV."""
    if not sentences:
        raise ValueError("speech_wav: no sentences")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_suffix(".raw.wav")
    _run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(raw), " ".join(sentences)])
    _run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(raw), "-ar", "16000", "-ac", "1", str(path)])
    raw.unlink(missing_ok=True)
    return path


def _rate(fps: float) -> str:
    """ffmpeg rate string; exact for the NTSC rates (29.97 -> 30000/1001)."""
    frac = Fraction(fps).limit_denominator(1001)
    return str(frac.numerator) if frac.denominator == 1 else f"{frac.numerator}/{frac.denominator}"


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
