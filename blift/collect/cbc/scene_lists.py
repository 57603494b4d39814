"""CBC's per-scene lists as ``captions`` and ``attributes`` rows.

LCBM cut each video into scenes and annotated every scene: ``blip2_annotations.captions``,
``.objects`` and ``.actions`` (BLIP-2), ``ocr`` (the on-screen text, a list of strings per
scene) and ``asr_grouped`` (the speech per scene). Entry *i* of each list is scene *i*; the scene
times are not published, so no ``scenes`` rows are written (none is ever invented) and the rows
here carry only the scene number.

* ``captions``: one row per scene with a caption (``media_index`` 0, ``scene`` i), its keywords
  the phrases of that scene's ``objects`` and ``actions`` entries (split at commas, semicolons,
  bars, line breaks and " and ", lower-cased, a leading article dropped, each phrase once, at most
  ``max_keywords``), model ``blip2 (CBC)``, ``prompt_sha`` ``cbc`` (LCBM's prompts are not
  published). A scene whose caption is empty gets no row (``empty_caption``).
* ``attributes``: one row per scene with on-screen text, ``ocr_text`` its strings joined by line
  breaks (the form the ``attributes`` stage writes tesseract's lines in); the measured columns
  (colours, tone, complexity...) need the frames, so they are null.

When the non-empty lists disagree in length (``scene_lists_misaligned``), each is still read by
its own index, as published: the scene numbers are the only alignment there is, and nothing is
moved or guessed. The caller keeps the original lists in ``raw`` for such a video.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from blift.collect.cbc.values import listing, strings, text

MODEL = "blip2 (CBC)"
PROMPT_SHA = "cbc"
_SPLIT = re.compile(r"[,;|\n]+|\s+and\s+", re.IGNORECASE)
_ARTICLE = re.compile(r"^(?:a|an|the)\s+", re.IGNORECASE)
_TRIM = " \t\r'\"`.:!?()[]{}"


@dataclass
class SceneRows:
    captions: list[dict[str, Any]]
    attributes: list[dict[str, Any]]
    lengths: dict[str, int]  # the length of each non-empty list, by column
    empty_captions: int

    @property
    def misaligned(self) -> bool:
        return len(set(self.lengths.values())) > 1


def phrases(entry: str) -> list[str]:
    """Keyword phrases of one objects/actions entry ("a man, two dogs and a ball" -> man, two dogs,
    ball); a list written as text ("['car', 'tree']") splits the same way."""
    out = []
    for part in _SPLIT.split(entry):
        phrase = _ARTICLE.sub("", " ".join(part.strip(_TRIM).split()).lower()).strip(_TRIM)
        if phrase:
            out.append(phrase)
    return out


def scene_rows(uid: str, blip2: dict[str, Any], ocr: Any, asr_grouped: Any, where: str,
               max_keywords: int) -> SceneRows:
    """Captions and attributes rows of one video; raises InvalidRecord naming the list and index
    of an entry that is not text."""
    captions = listing(blip2.get("captions"), where, "blip2_annotations.captions")
    objects = listing(blip2.get("objects"), where, "blip2_annotations.objects")
    actions = listing(blip2.get("actions"), where, "blip2_annotations.actions")
    ocr_scenes = listing(ocr, where, "ocr")
    lengths = {name: len(values) for name, values in (
        ("blip2_annotations.captions", captions), ("blip2_annotations.objects", objects),
        ("blip2_annotations.actions", actions), ("ocr", ocr_scenes),
        ("asr_grouped", listing(asr_grouped, where, "asr_grouped"))) if values}
    caption_rows, empty = [], 0
    for i, value in enumerate(captions):
        caption = text(value, where, f"blip2_annotations.captions[{i}]")
        if caption is None or not caption.strip():
            empty += 1
            continue
        keywords: dict[str, None] = {}
        for name, values in (("objects", objects), ("actions", actions)):
            if i < len(values):
                for entry in strings(values[i], where, f"blip2_annotations.{name}[{i}]"):
                    keywords.update(dict.fromkeys(phrases(entry)))
        caption_rows.append({"uid": uid, "media_index": 0, "scene": i, "caption": caption.strip(),
                             "keywords": list(keywords)[:max_keywords], "model": MODEL, "prompt_sha": PROMPT_SHA})
    attribute_rows = []
    for i, value in enumerate(ocr_scenes):
        lines = [s.strip() for s in strings(value, where, f"ocr[{i}]") if s.strip()]
        if lines:
            attribute_rows.append({"uid": uid, "media_index": 0, "scene": i, "ocr_text": "\n".join(lines)})
    return SceneRows(caption_rows, attribute_rows, lengths, empty)
