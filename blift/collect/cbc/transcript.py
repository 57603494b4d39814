"""CBC's ``asr_raw`` as one ``transcripts`` row, in the shape the ``asr`` stage writes.

``asr_raw`` is a list of Whisper-style segments ``{start, end, text, words: [{confidence, start,
end, text}]}``. A segment becomes ``{start_s, end_s, text, avg_logprob, no_speech_prob, words}``
(the two decoder scores are not published: null), a word ``{start_s, end_s, word, probability}``
with ``probability`` = the published ``confidence``. Times are seconds; a missing or NaN time or
confidence is null. ``text`` is the segments' texts joined by spaces. An empty (or missing)
``asr_raw`` is status ``no_speech``, as the ``asr`` stage writes for a video with no speech found.
``asr_grouped`` (the same speech grouped per scene by LCBM) is not read here: it stays in ``raw``.

Backend ``cbc`` and model ``cbc:asr_raw`` say where the text came from: LCBM's own ASR run, not
one of blift's.
"""

from __future__ import annotations

from typing import Any

from blift.collect.cbc.values import number, records, text

BACKEND = "cbc"
MODEL = "cbc:asr_raw"
COLUMN = "asr_raw"


def _word(word: dict[str, Any], where: str, at: str) -> dict[str, Any]:
    return {"start_s": number(word.get("start"), where, f"{at}.start"),
            "end_s": number(word.get("end"), where, f"{at}.end"),
            "word": text(word.get("text"), where, f"{at}.text"),
            "probability": number(word.get("confidence"), where, f"{at}.confidence")}


def _segment(segment: dict[str, Any], where: str, at: str) -> dict[str, Any]:
    words = records(segment.get("words"), where, f"{at}.words")
    return {"start_s": number(segment.get("start"), where, f"{at}.start"),
            "end_s": number(segment.get("end"), where, f"{at}.end"),
            "text": text(segment.get("text"), where, f"{at}.text"),
            "avg_logprob": None, "no_speech_prob": None,
            "words": [_word(w, where, f"{at}.words[{j}]") for j, w in enumerate(words)]}


def transcript_row(uid: str, asr_raw: Any, duration_s: float | None, where: str) -> dict[str, Any]:
    """The ``transcripts`` row (media 0) of one video; raises InvalidRecord naming the segment,
    word and field of a malformed entry."""
    segments = [_segment(s, where, f"{COLUMN}[{i}]") for i, s in enumerate(records(asr_raw, where, COLUMN))]
    joined = " ".join(t for t in ((s["text"] or "").strip() for s in segments) if t)
    return {
        "uid": uid, "media_index": 0, "status": "ok" if segments else "no_speech",
        "backend": BACKEND, "model": MODEL, "language": None, "language_probability": None,
        "duration_s": duration_s, "text": joined or None, "segments": segments,
    }
