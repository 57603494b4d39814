"""Whatever behavior an item has, as named values with their meaning, and their words.

Sources differ in what they record: a Reddit post has a score and an upvote ratio, a YouTube
video views and likes, a table of ads a click-through rate, a memorability study a recall score
on its own scale, the published BLIFT corpus only comment counts. The generic templates
(``generic_image_behavior``, ``generic_video_behavior``) phrase any of them, driven by the
meaning the source mapping gave each value (``schemas/behavior.yaml``):

* ``count`` (people or events): the exact integer, ``"1234"`` (as every blift template writes
  counts; a fractional count is rounded half up);
* ``ratio`` (0..1): a percentage with one decimal, half up, ``"3.2%"`` (the paper's like-ratio
  format; an item with views and likes also gets its like ratio, likes / views);
* ``score``: up to four significant digits, with its scale when the mapping gave one,
  ``"0.81 on a scale of 0 to 1"``.

Where the values come from: the item's ``behavior`` rows when it has any (a table or folder
source names every value it read there, including those it also copied into an items column
with ``to:``, so each value is said once); otherwise the platform columns of the ``items`` row
(score, upvote ratio, comment count, views, likes) under fixed names. Values that are null are
left out: a record says what is known, nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from blift.stages.instruct.verbalize import format_count

#: items columns used when an item has no behavior rows: (column, name, kind, scale).
ITEM_COLUMNS: tuple[tuple[str, str, str, tuple[float, float] | None], ...] = (
    ("score", "score", "count", None),
    ("upvote_ratio", "upvote_ratio", "ratio", None),
    ("view_count", "views", "count", None),
    ("like_count", "likes", "count", None),
    ("num_comments", "num_comments", "count", None),
    ("comment_count", "num_comments", "count", None),  # YouTube's; the first one known wins
)

#: How known names are said; any other name is said as written, underscores as spaces.
LABELS = {
    "score": "Upvotes", "upvotes": "Upvotes", "upvote_ratio": "Upvote ratio", "views": "Views",
    "view_count": "Views", "likes": "Likes", "like_count": "Likes", "num_comments": "Number of comments",
    "comment_count": "Number of comments", "ctr": "Click-through rate", "like_ratio": "Like ratio",
    "shares": "Shares", "retweets": "Retweets", "memorability": "Memorability",
}


@dataclass(frozen=True)
class NamedValue:
    """One behavior value of an item, with its meaning."""

    name: str
    kind: str  # count | ratio | score
    value: float
    scale_min: float | None = None
    scale_max: float | None = None

    @property
    def label(self) -> str:
        return label_of(self.name)

    def words(self) -> str:
        return format_value(self.kind, self.value, self.scale_min, self.scale_max)

    def target(self) -> dict[str, Any]:
        """The typed row of ``instructions.behavior`` behind the words."""
        return {"name": self.name, "kind": self.kind, "value": self.value,
                "scale_min": self.scale_min, "scale_max": self.scale_max}


def label_of(name: str) -> str:
    known = LABELS.get(name.lower())
    if known:
        return known
    words = " ".join(name.replace("_", " ").split())
    return words[:1].upper() + words[1:] if words else name


def _significant(value: float) -> str:
    """Up to four significant digits, no exponent for everyday magnitudes: 0.8125 -> 0.8125,
    81.46 -> 81.46, 1234.5 -> 1235 (rounded half away from zero via the decimal repr)."""
    if value == 0:
        return "0"
    digits = max(0, 4 - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_value(kind: str, value: float, scale_min: float | None = None, scale_max: float | None = None) -> str:
    """Words for one value by its meaning (see the module docstring)."""
    if kind == "count":
        return format_count(math.floor(value + 0.5))
    if kind == "ratio":
        return f"{math.floor(value * 1000 + 0.5) / 10:.1f}%"
    if kind == "score":
        text = _significant(value)
        if scale_min is not None and scale_max is not None:
            text += f" on a scale of {_significant(scale_min)} to {_significant(scale_max)}"
        return text
    raise ValueError(f"unknown behavior kind {kind!r} (count, ratio or score)")


def named_values(item: Mapping[str, Any], behavior: Iterable[Mapping[str, Any]]) -> list[NamedValue]:
    """The item's known behavior values, in the source's order (see the module docstring), and
    its like ratio (likes / views, the paper's "percentage of viewers who liked it") when the
    items row has both counts and no value of that name was given."""
    out = _given_values(item, behavior)
    views, likes = item.get("view_count"), item.get("like_count")
    if views and views > 0 and likes is not None and likes >= 0 and not any(v.name == "like_ratio" for v in out):
        out.append(NamedValue("like_ratio", "ratio", likes / views))
    return out


def _given_values(item: Mapping[str, Any], behavior: Iterable[Mapping[str, Any]]) -> list[NamedValue]:
    out: list[NamedValue] = []
    rows = list(behavior)
    if rows:
        seen: set[str] = set()
        for row in rows:
            value, name = row.get("value"), str(row.get("name") or "")
            if value is None or not name or name in seen or not math.isfinite(float(value)):
                continue
            seen.add(name)
            out.append(NamedValue(name, str(row.get("kind") or "score"), float(value),
                                  row.get("scale_min"), row.get("scale_max")))
        return out
    names: set[str] = set()
    for column, name, kind, _ in ITEM_COLUMNS:
        value = item.get(column)
        if value is None or name in names or not math.isfinite(float(value)):
            continue
        names.add(name)
        out.append(NamedValue(name, kind, float(value)))
    return out


def behavior_lines(values: Iterable[NamedValue]) -> str:
    """``Likes: 1234`` lines, one per value."""
    return "\n".join(f"{v.label}: {v.words()}" for v in values)


def asked_for(values: Iterable[NamedValue], with_comments: bool, with_replay: bool = False) -> str:
    """What the question asks for: ``the likes, the click-through rate and the top comments``."""
    parts = [f"the {v.label[:1].lower() + v.label[1:]}" if not v.label.isupper() else f"the {v.label}"
             for v in values]
    if with_replay:
        parts.append("the replay value of each scene")
    if with_comments:
        parts.append("the top comments")
    if not parts:
        return "how the audience reacted"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
