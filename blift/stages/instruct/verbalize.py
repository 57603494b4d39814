"""Words for an image and for behavior numbers: the text that instruction templates are filled with.

The paper verbalizes media as prose (orientation, named colours, tone, complexity, on-screen text
in quotes, caption and tags) so a language model reads them as words; its exact listing is not
public, so blift fixes its own wording here. Everything is a pure function of its input: the same
attributes row always gives the same sentence, which keeps the instruct stage reproducible.

The caption is used only when a captioning stage has filled it: nothing here ever invents one.

Number formats (documented in the templates too; the paper's own listing is unknown):

* counts (score, comments): the exact integer, no thousands separator: ``"1234"``, ``"-3"``.
  Digit groups would add tokens and vary by locale; Reddit scores are already fuzzed by Reddit.
* upvote ratio: a whole percentage, ``"92%"``. Reddit reports the ratio to two decimals, so the
  percentage loses nothing.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping

#: The media token LLaVA-style trainers replace with image features. User text must never carry
#: it, or a record would hold it twice.
IMAGE_TOKEN = "<image>"
_MEDIA_TOKENS = re.compile(r"<\s*(?:image|video)\s*>", re.IGNORECASE)

#: Caps that keep one record inside a LLaVA context (2048 tokens in the paper's train.sh).
MAX_OCR_CHARS = 300
MAX_CAPTION_CHARS = 1500
MAX_KEYWORDS = 15
MAX_COLOURS = 5


def tidy(text: Any) -> str:
    """One line of plain text: whitespace collapsed, media tokens (``<image>``) neutralised.

    Titles, comments, OCR text and captions are written by strangers; a literal ``<image>`` in
    one of them would give a record two image tokens, so it becomes ``(image)``.
    """
    if text is None:
        return ""
    text = str(text)
    if "<" in text:
        text = _MEDIA_TOKENS.sub(lambda m: "(" + m.group(0)[1:-1].strip().lower() + ")", text)
    return " ".join(text.split())


def shorten(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters at a word boundary, marking the cut with ``…``."""
    if len(text) <= limit:
        return text
    cut = text[: max(1, limit - 1)]
    space = cut.rfind(" ")
    if space >= limit // 2:  # cut at a word unless that throws away more than half
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + "…"


def format_count(value: int) -> str:
    """An exact count as digits: ``1234`` -> ``"1234"``."""
    return str(int(value))


def format_ratio(value: float) -> str:
    """A 0..1 ratio as a whole percentage, half rounded up: ``0.925`` -> ``"93%"``."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"ratio {value!r} is outside 0..1")
    return f"{math.floor(value * 100 + 0.5)}%"


def subreddit_name(community: Any) -> str | None:
    """A subreddit without its ``r/`` prefix: ``/r/pics`` -> ``pics``."""
    name = tidy(community)
    for prefix in ("/r/", "r/"):
        if name.lower().startswith(prefix):
            name = name[len(prefix):]
    return name or None


#: How the generic templates name a platform; a table or folder source's own name is said as given.
SOURCE_NAMES = {"reddit": "Reddit", "youtube": "YouTube", "local": "a local collection"}


def source_context(item: Mapping[str, Any], channel: Any = None) -> dict[str, Any]:
    """Where and under which title an item of any source was shared (the generic templates'
    ``source``, ``community`` and ``title``; a source without a title gives its text, if any)."""
    community = tidy(item.get("community") or channel) or None
    if community and item.get("platform") == "reddit":
        community = "r/" + (subreddit_name(community) or community)
    name = tidy(item.get("platform")) or "an unnamed source"
    return {"source": SOURCE_NAMES.get(name, name), "community": community,
            "title": tidy(item.get("title")) or tidy(item.get("text")) or None}


def colour_words(name: str) -> str:
    """A palette name as words: ``Dark_Blue`` -> ``dark blue``."""
    return tidy(str(name).replace("_", " ")).lower()


def _join(words: Iterable[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = [w for w in words if w]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def as_sentence(text: str) -> str:
    text = text.strip()
    if text and text[-1] not in ".!?…\"'":
        text += "."
    return text


def orientation_of(attrs: Mapping[str, Any]) -> str | None:
    found = attrs.get("orientation")
    if found:
        return str(found).lower()
    width, height = attrs.get("width"), attrs.get("height")
    if width and height:
        if abs(width - height) <= 0.05 * max(width, height):
            return "square"
        return "landscape" if width > height else "portrait"
    return None


def _shape_sentence(attrs: Mapping[str, Any]) -> str | None:
    orientation = orientation_of(attrs)
    width, height = attrs.get("width"), attrs.get("height")
    size = f"{int(width)}x{int(height)} pixels" if width and height else None
    if orientation and size:
        return f"A {orientation} image of {size}."
    if orientation:
        return f"A {orientation} image."
    if size:
        return f"An image of {size}."
    return None


def _colours_sentence(colours: Any) -> str | None:
    """Dominant colours, largest share first (ties by name, so the order is stable)."""
    entries = []
    for entry in colours or []:
        name = colour_words(entry.get("name") or "")
        fraction = entry.get("fraction")
        if name:
            entries.append((-(fraction or 0.0), name, fraction))
    entries.sort()
    parts = []
    for _, name, fraction in entries[:MAX_COLOURS]:
        share = math.floor(fraction * 100 + 0.5) if fraction is not None else None
        parts.append(f"{name} ({share}%)" if share else name)
    return f"Dominant colours: {_join(parts)}." if parts else None


def named_colours(label: str, names: Any) -> str | None:
    words = list(dict.fromkeys(colour_words(n) for n in names or [] if n))
    return f"{label} colours: {_join(words[:MAX_COLOURS])}." if words else None


def describe_image(attrs: Mapping[str, Any]) -> str:
    """Prose description of one image from its ``attributes`` row (missing fields are skipped).

    Order: shape and size, dominant colours, foreground and background colours, tone,
    complexity, on-screen text in quotes (only when OCR found some), then caption and keywords
    (only when a captioning stage filled them). Returns ``""`` when nothing is known.
    """
    out: list[str | None] = [
        _shape_sentence(attrs),
        _colours_sentence(attrs.get("colors")),
        named_colours("Foreground", attrs.get("foreground_colors")),
        named_colours("Background", attrs.get("background_colors")),
    ]
    tone, complexity = attrs.get("tone"), attrs.get("complexity")
    if tone:
        out.append(f"The overall tone is {tidy(tone).lower()}.")
    if complexity:
        out.append(f"The visual complexity is {tidy(complexity).lower()}.")
    ocr = tidy(attrs.get("ocr_text"))
    if ocr:
        out.append(f'On-screen text: "{shorten(ocr, MAX_OCR_CHARS)}".')
    caption = tidy(attrs.get("caption"))
    if caption:
        out.append("Caption: " + as_sentence(shorten(caption, MAX_CAPTION_CHARS)))
    keywords = list(dict.fromkeys(k for k in (tidy(k) for k in attrs.get("keywords") or []) if k))
    if keywords:
        out.append(f"Keywords: {', '.join(keywords[:MAX_KEYWORDS])}.")
    return " ".join(s for s in out if s)
