"""Scene-by-scene words for a video: the text a video's instruction records are built around.

The paper verbalizes a video as a header (length, orientation, pace) followed by its scenes,
each with what is said in it and what it shows (LLaVA caption, colours, tone, complexity,
on-screen text). Its exact listing is not public; blift's wording is fixed here. Example (each scene is
one line of the output, wrapped here)::

    A landscape video of 1280x720 pixels, 42 seconds long, in 3 scenes, at a moderate pace of 2.9 cuts per minute.
    Scene 1 (0:00-0:05): The audio says: "Welcome back to the channel". Caption: A man at a desk.
        Keywords: man, desk. Foreground colours: red. Background colours: dark blue. The tone is warm.
        The visual complexity is low. On-screen text: "SALE".
    Scene 2 (0:05-0:12): ...

Rules (all deterministic, nothing is invented):

* **Speech** comes from the ``transcripts`` row. Each word goes to the scene in which it
  *starts* (word times; a segment without word times goes whole to the scene where the segment
  starts). Speech before the first scene goes to the first scene, speech after the last scene
  to the last. A ``no_audio`` status (or a media row with ``has_audio`` false) says "It has no
  audio track."; ``no_speech`` says "No speech is heard."; no transcripts row says nothing.
* **Caption and keywords** appear only when a ``captions`` row exists for the scene
  (``attributes.caption`` is never used for scenes: the captioning stage writes ``captions``).
* **Colours, tone, complexity, on-screen text** come from the ``attributes`` row of the scene
  (column ``scene`` set); a scene without one simply has none of these.
* Times are shown as ``m:ss`` (``h:mm:ss`` past an hour), rounded down; scenes are numbered from
  1 in the text (``Scene 1`` is ``scenes.scene == 0``).
* Pace is the number of cuts (scenes minus one) per minute: below 10 slow, below 30 moderate,
  else fast.

The parts are kept apart (:class:`VideoText`) so :mod:`blift.stages.instruct.token_budget` can shorten
them in a stated order; :func:`render` writes the text for one :class:`Shortening`.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from blift.stages.instruct.verbalize import (
    MAX_KEYWORDS,
    MAX_OCR_CHARS,
    as_sentence,
    named_colours,
    orientation_of,
    shorten,
    tidy,
)

#: Per-scene caption cap (a video has many scenes; the image cap is per image).
MAX_SCENE_CAPTION_CHARS = 600
SLOW_CUTS_PER_MINUTE = 10.0
FAST_CUTS_PER_MINUTE = 30.0
ELLIPSIS = "…"


@dataclass
class SceneText:
    """What is known about one scene, before any shortening."""

    number: int  # scenes.scene (0-based)
    start_s: float | None  # None: a video known by its annotations alone (no scene times)
    end_s: float | None
    speech: list[str] = field(default_factory=list)  # words said in the scene, in order
    caption: str | None = None
    keywords: list[str] = field(default_factory=list)
    foreground: list[str] = field(default_factory=list)
    background: list[str] = field(default_factory=list)
    tone: str | None = None
    complexity: str | None = None
    ocr: str | None = None


@dataclass
class VideoText:
    """A video's verbalization in parts: a header that is never shortened, and its scenes."""

    header: str
    scenes: list[SceneText]


@dataclass(frozen=True)
class Shortening:
    """How much of a :class:`VideoText` to leave out (the default leaves nothing out).

    ``speech_words``: keep at most this many words of each scene's speech (``None``: all).
    ``ocr`` / ``keywords``: whether on-screen text / keywords are shown.
    ``details_until``: scenes at positions ``>= details_until`` show only their timing line.
    ``collapse_from``: scenes at positions ``>= collapse_from`` are folded into one line.
    """

    speech_words: int | None = None
    ocr: bool = True
    keywords: bool = True
    details_until: int | None = None
    collapse_from: int | None = None


FULL = Shortening()


# ---------------------------------------------------------------- small formats


def format_duration(seconds: float) -> str:
    """Whole seconds (half up, at least 1) in words: ``42.4`` -> ``"42 seconds"``,
    ``65`` -> ``"1 minute 5 seconds"``."""
    total = max(1, math.floor(seconds + 0.5))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n} {unit}{'' if n == 1 else 's'}" for n, unit in ((hours, "hour"), (minutes, "minute"),
                                                                   (secs, "second")) if n]
    return " ".join(parts)


def format_clock(seconds: float) -> str:
    """A time as ``m:ss`` (``h:mm:ss`` from an hour on), rounded down: ``65.9`` -> ``"1:05"``."""
    total = max(0, math.floor(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def pace_of(num_scenes: int, duration_s: float) -> tuple[str, float] | None:
    """(word, cuts per minute), or ``None`` for a single scene or an unknown duration."""
    if num_scenes < 2 or duration_s <= 0:
        return None
    cpm = (num_scenes - 1) / (duration_s / 60.0)
    word = "slow" if cpm < SLOW_CUTS_PER_MINUTE else "moderate" if cpm < FAST_CUTS_PER_MINUTE else "fast"
    return word, cpm


# ---------------------------------------------------------------- speech


def _words_of(segment: Mapping[str, Any]) -> list[tuple[float | None, str]]:
    """(start time, word) pairs of one segment; an untimed segment's text is split on spaces."""
    words = segment.get("words") or []
    seg_start = segment.get("start_s")
    out = []
    for w in words:
        text = tidy(w.get("word"))
        if text:
            start = w.get("start_s")
            out.append((start if start is not None else seg_start, text))
    if out:
        return out
    return [(seg_start, word) for word in tidy(segment.get("text")).split()]


def align_speech(segments: Iterable[Mapping[str, Any]] | None, scenes: Sequence[tuple[float, float]]
                 ) -> list[list[str]]:
    """Words per scene: each word goes to the scene in which it starts (see the module docstring)."""
    out: list[list[str]] = [[] for _ in scenes]
    if not scenes:
        return out
    starts = [s for s, _ in scenes]
    for segment in segments or []:
        for start, word in _words_of(segment):
            # the last scene starting at or before the word; earlier speech goes to the first scene
            position = 0 if start is None else max(0, bisect.bisect_right(starts, start) - 1)
            out[position].append(word)
    return out


# ---------------------------------------------------------------- building


def build_video_text(*, scenes: Sequence[Mapping[str, Any]], media: Mapping[str, Any] | None = None,
                     duration_s: float | None = None, transcript: Mapping[str, Any] | None = None,
                     captions: Iterable[Mapping[str, Any]] = (), attributes: Iterable[Mapping[str, Any]] = ()
                     ) -> VideoText:
    """Collect the parts of one video's verbalization from its table rows.

    ``scenes`` are the rows of one media file in scene order; ``captions`` and ``attributes``
    are that file's per-scene rows (rows with ``scene`` null are ignored). ``duration_s`` falls
    back to the end of the last scene.
    """
    media = media or {}
    spans = [(float(s["start_s"]), float(s["end_s"])) for s in scenes]
    duration = duration_s if duration_s and duration_s > 0 else (spans[-1][1] if spans else 0.0)
    caption_by = {c["scene"]: c for c in captions if c.get("scene") is not None}
    attrs_by = {a["scene"]: a for a in attributes if a.get("scene") is not None}
    status = (transcript or {}).get("status")
    speech = align_speech((transcript or {}).get("segments") if status == "ok" else None, spans)

    parts = [_scene_text(int(row["scene"]), start, end, words, caption_by, attrs_by)
             for row, (start, end), words in zip(scenes, spans, speech)]
    return VideoText(header=_header(media, duration, len(parts), status), scenes=parts)


def _scene_text(number: int, start: float | None, end: float | None, words: list[str],
                caption_by: Mapping[Any, Mapping[str, Any]], attrs_by: Mapping[Any, Mapping[str, Any]]) -> SceneText:
    """One scene's parts from its ``captions`` and ``attributes`` rows (none: those parts empty)."""
    cap, attrs = caption_by.get(number) or {}, attrs_by.get(number) or {}
    keywords = list(dict.fromkeys(k for k in (tidy(k) for k in cap.get("keywords") or []) if k))
    return SceneText(
        number=number, start_s=start, end_s=end, speech=words,
        caption=shorten(tidy(cap.get("caption")), MAX_SCENE_CAPTION_CHARS) or None,
        keywords=keywords[:MAX_KEYWORDS],
        foreground=list(attrs.get("foreground_colors") or []),
        background=list(attrs.get("background_colors") or []),
        tone=tidy(attrs.get("tone")).lower() or None,
        complexity=tidy(attrs.get("complexity")).lower() or None,
        ocr=shorten(tidy(attrs.get("ocr_text")), MAX_OCR_CHARS) or None,
    )


#: Words of a transcript said in the header of a video known by its annotations (its speech
#: cannot be put in scenes without scene times).
MAX_HEADER_SPEECH_WORDS = 150


def build_annotation_text(*, scene_numbers: Sequence[int], duration_s: float | None,
                          transcript: Mapping[str, Any] | None = None,
                          captions: Iterable[Mapping[str, Any]] = (),
                          attributes: Iterable[Mapping[str, Any]] = ()) -> VideoText:
    """The verbalization of a video known only by annotations a corpus published per scene
    (captions, keywords, on-screen text; LCBM's Content Behavior Corpus) and its transcript, with
    no scene times and no file: scenes are numbered, not timed, and the speech, which cannot be
    put in scenes, is said once after the header (up to ``MAX_HEADER_SPEECH_WORDS`` words)."""
    caption_by = {c["scene"]: c for c in captions if c.get("scene") is not None}
    attrs_by = {a["scene"]: a for a in attributes if a.get("scene") is not None}
    parts = [_scene_text(int(number), None, None, [], caption_by, attrs_by) for number in scene_numbers]
    status = (transcript or {}).get("status")
    header = _header({}, duration_s or 0.0, len(parts), status)
    if status == "ok":
        words = [w for seg in (transcript or {}).get("segments") or [] for _, w in _words_of(seg)]
        speech = _speech_text(words, MAX_HEADER_SPEECH_WORDS)
        if speech:
            header += f' The audio says: "{speech}".'
    return VideoText(header=header, scenes=parts)


def _header(media: Mapping[str, Any], duration: float, num_scenes: int, transcript_status: str | None) -> str:
    """``A landscape video of 1280x720 pixels, 42 seconds long, in 3 scenes, at a moderate pace of
    2.9 cuts per minute.`` plus a sentence on missing audio or speech; unknown parts are left out."""
    width, height = media.get("width"), media.get("height")
    orientation = orientation_of({"width": width, "height": height})
    parts = [f"A {orientation} video" if orientation else "A video"]
    if width and height:
        parts[0] += f" of {int(width)}x{int(height)} pixels"
    if duration > 0:
        parts.append(f"{format_duration(duration)} long")
    parts.append(f"in {num_scenes} scene{'' if num_scenes == 1 else 's'}")
    pace = pace_of(num_scenes, duration)
    if pace:
        parts.append(f"at a {pace[0]} pace of {pace[1]:.1f} cuts per minute")
    out = [", ".join(parts) + "."]
    if media.get("has_audio") is False or transcript_status == "no_audio":
        out.append("It has no audio track.")
    elif transcript_status == "no_speech":
        out.append("No speech is heard.")
    return " ".join(out)


# ---------------------------------------------------------------- rendering


def _speech_text(words: list[str], limit: int | None) -> str:
    """The scene's words; cut after ``limit`` words with ``…``; a dangling comma is dropped."""
    if limit is not None and len(words) > limit:
        return " ".join(words[:limit]).rstrip(" ,.;:-") + ELLIPSIS if limit > 0 else ""
    return " ".join(words).rstrip(" ,;:-")


def timing_line(scene: SceneText) -> str:
    if scene.start_s is None or scene.end_s is None:
        return f"Scene {scene.number + 1}"
    return f"Scene {scene.number + 1} ({format_clock(scene.start_s)}-{format_clock(scene.end_s)})"


def render_scene(scene: SceneText, plan: Shortening = FULL, *, details: bool = True) -> str:
    """One scene's line; only its timing when ``details`` is false."""
    head = timing_line(scene)
    if not details:
        return head + "."
    out = []
    speech = _speech_text(scene.speech, plan.speech_words)
    if speech:
        out.append(f'The audio says: "{speech}".')
    if scene.caption:
        out.append("Caption: " + as_sentence(scene.caption))
    if plan.keywords and scene.keywords:
        out.append(f"Keywords: {', '.join(scene.keywords)}.")
    for sentence in (named_colours("Foreground", scene.foreground), named_colours("Background", scene.background)):
        if sentence:
            out.append(sentence)
    if scene.tone:
        out.append(f"The tone is {scene.tone}.")
    if scene.complexity:
        out.append(f"The visual complexity is {scene.complexity}.")
    if plan.ocr and scene.ocr:
        out.append(f'On-screen text: "{scene.ocr}".')
    return f"{head}: {' '.join(out)}" if out else head + "."


def render(video: VideoText, plan: Shortening = FULL, cache: dict[tuple[Any, ...], str] | None = None) -> str:
    """The verbalization as text: the header, then one line per scene.

    ``cache`` (one dict per video) keeps scene lines between calls with different plans: a
    scene's line depends only on the scene and the knobs that affect it.
    """
    lines = [video.header]
    scenes = video.scenes
    cut = len(scenes) if plan.collapse_from is None else max(0, min(plan.collapse_from, len(scenes)))
    details_until = len(scenes) if plan.details_until is None else plan.details_until
    for i, scene in enumerate(scenes[:cut]):
        details = i < details_until
        if cache is None:
            lines.append(render_scene(scene, plan, details=details))
            continue
        key = (i, plan.speech_words, plan.ocr, plan.keywords) if details else (i,)
        if key not in cache:
            cache[key] = render_scene(scene, plan, details=details)
        lines.append(cache[key])
    if cut < len(scenes):
        first, last = scenes[cut], scenes[-1]
        label = f"Scene {first.number + 1}" if first is last else f"Scenes {first.number + 1}-{last.number + 1}"
        span = "" if first.start_s is None or last.end_s is None else \
            f" ({format_clock(first.start_s)}-{format_clock(last.end_s)})"
        lines.append(f"{label}{span} {'is' if first is last else 'are'} not described.")
    return "\n".join(lines)


__all__ = ["FULL", "SceneText", "Shortening", "VideoText", "align_speech", "build_annotation_text", "build_video_text",
           "format_clock",
           "format_duration", "pace_of", "render", "render_scene", "timing_line"]
