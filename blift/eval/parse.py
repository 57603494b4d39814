"""Tolerant parsing of a model's behavior answer back into numbers and lists.

The answers follow the gpt turns of ``blift/stages/instruct/templates/*_behavior.yaml``::

    Upvotes: 1234                      Views: 52311
    Upvote ratio: 92%                  Likes: 1046
    Number of comments: 17             Like ratio: 2.0%
    Top comments, ranked by score:     Number of comments: 88
    1. first comment                   Replay value per scene: Scene 1: 0.06, Scene 2: 0.31
    2. second comment                  Most replayed scenes, most replayed first: 2, 1
                                       Top comments, ranked by likes:
                                       1. ...

A generated answer is noisy: fields reordered, left out or repeated, labels in another case or
in markdown (``**Upvotes:**``), several fields on one line, numbers written ``1,234``, ``1.2k``,
``3 million``, ``~500``, ratios as ``92%``, ``0.92`` or ``92``, an end-of-turn marker or a
hallucinated next ``USER:`` turn. :func:`parse_behavior` reads what it can and gives ``None``
for everything else; it never raises on any string.

Conventions (chosen so that a parsed answer compares directly with the record's ``targets``):

* Counts (``score``, ``num_comments``, ``view_count``, ``like_count``) are ``int``.
* Ratios (``upvote_ratio``, ``like_ratio``) are fractions in 0..1: ``"92%"`` -> 0.92. A bare
  number above 1 (and at most 100) is read as a percentage (``"92"`` -> 0.92; a fraction above
  1 is impossible); a bare number in 0..1 is read as a fraction (``"0.92"`` -> 0.92). A value
  outside 0..100 % is treated as unparsed (``None``).
* ``scene_replay`` is aligned with ``targets.scene_replay``: position ``k-1`` holds the value of
  "Scene k", ``None`` for a scene the answer does not list (the templates leave out scenes the
  heatmap does not cover). Values are 0..1 (``"6%"`` -> 0.06). Without "Scene k" labels the
  numbers are taken in order.
* ``most_replayed_scenes`` are **0-based** scene numbers, like ``targets.most_replayed_scenes``
  (the text numbers scenes from 1); duplicates and numbers below 1 are dropped.
* ``comments`` is the list of comment texts with the ``"k. "`` rank prefix removed, or ``None``
  when the answer has no comment section; an empty section gives ``[]``.

How labels are found: one regular expression of every known label (with synonyms such as
"score"/"points" for upvotes) is matched left to right, so ``Upvote ratio`` is never read as
``Upvotes`` and ``Top comments, ranked by score`` is never read as a score. A field's value is the
text between its label and the next label. Inside the comment section only labels that start a
line count, so a comment saying "my score: 10/10" neither ends the section nor sets the score.
The first occurrence of a field whose value parses wins.
"""

from __future__ import annotations

import math
import re
from typing import Any

#: Every key :func:`parse_behavior` returns.
FIELDS = ("score", "upvote_ratio", "num_comments", "view_count", "like_count", "like_ratio", "comments",
          "scene_replay", "most_replayed_scenes")
COUNT_FIELDS = ("score", "num_comments", "view_count", "like_count")
RATIO_FIELDS = ("upvote_ratio", "like_ratio")

# Order matters inside the alternation: at one position the first alternative that matches wins,
# so longer labels that start like shorter ones come first ("upvote ratio" before "upvotes").
_LABELS: tuple[tuple[str, str], ...] = (
    ("comments", r"top[ \t]+(?:\d+[ \t]+)?comments?(?:[ \t]*,?[ \t]*(?:ranked|sorted|ordered)[ \t]+by[ \t]+"
                 r"(?:score|upvotes?|likes?|points))?"
                 r"|comments(?=[ \t]*[*_]{0,2}[ \t]*[:=][*_]{0,2}[ \t]*(?:\n|$))"),  # a bare "Comments:" header
    ("most_replayed_scenes", r"most[ \t]+replayed(?:[ \t]+scenes?)?(?:[ \t]*,?[ \t]*most[ \t]+replayed[ \t]+first)?"),
    ("scene_replay", r"(?:scene[ \t]+)?replay[ \t]+values?(?:[ \t]+(?:per|of[ \t]+each|for[ \t]+each|by)[ \t]+scenes?)?"
                     r"|scene[ \t]+replays?(?:[ \t]+values?)?"),
    ("upvote_ratio", r"upvote[ \t_]*ratio|upvote[ \t]+percentage|ratio[ \t]+of[ \t]+upvotes"),
    ("like_ratio", r"like[ \t_]*ratio|like[ \t_]*to[ \t_]*views?[ \t_]*ratio|likes?[ \t]+per[ \t]+views?"),
    ("num_comments", r"(?:total[ \t]+)?number[ \t]+of[ \t]+comments|num[ \t_]*comments|comments?[ \t_]*count"),
    ("view_count", r"(?:number[ \t]+of[ \t]+)?views|view[ \t_]*count"),
    ("like_count", r"(?:number[ \t]+of[ \t]+)?likes|like[ \t_]*count"),
    ("score", r"(?:number[ \t]+of[ \t]+)?upvotes|upvote[ \t_]*count|score|points|karma"),
)
_GROUP = {f"f{i}": name for i, (name, _) in enumerate(_LABELS)}
# A label: at a word start (not "by score"), optional markdown, then a separator. The separator is
# required (":" "=" or a dash): a bare word "views" inside a sentence is not a label.
_LABEL_RE = re.compile(
    r"(?<![\w-])(?<!by )(?P<pre>[*_]{0,2})(?:"
    + "|".join(f"(?P<f{i}>{pattern})" for i, (_, pattern) in enumerate(_LABELS))
    + r")(?![\w])[*_]{0,2}[ \t]*(?:[:=]|[-–—](?![\d.]))[*_]{0,2}[ \t]*",
    re.IGNORECASE,
)
_LINE_PREFIX_RE = re.compile(r"[ \t>#*•\-]*")
# Where a generated answer ends: end-of-turn markers or a hallucinated next turn.
_STOP_RE = re.compile(r"</s>|<\|im_end\|>|<\|endoftext\|>|<\|eot_id\|>|<\|end\|>|(?:^|\n)[ \t]*(?:USER|HUMAN)[ \t]*:",
                      re.IGNORECASE)

_MULT = {"k": 1e3, "thousand": 1e3, "m": 1e6, "mn": 1e6, "mil": 1e6, "million": 1e6, "b": 1e9, "bn": 1e9,
         "billion": 1e9}
_NUMBER_RE = re.compile(
    r"(?P<sign>[-+−])?[ \t]*(?P<num>\d{1,3}(?:[,_' \u00a0\u202f]\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:[ \t]*(?P<mult>thousand|million|billion|mil|mn|bn|[kmb])(?![a-z]))?"
    r"(?:[ \t]*(?P<pct>%|percent|per[ \t]?cent))?",
    re.IGNORECASE,
)
_SCENE_PAIR_RE = re.compile(r"scene[ \t]*#?(?P<k>\d+)[ \t]*(?:\([^)]*\))?[ \t]*[:=\-–]?[ \t]*"
                            r"(?P<v>[-+]?(?:\d+(?:\.\d+)?|\.\d+)"
                            r"[ \t]*%?)", re.IGNORECASE)
_RANK_RE = re.compile(r"^\s*(?:(?:\d{1,3}[.):]|[-*•])\s+|\d{1,3}[.)](?=\S))")
_INLINE_RANK_RE = re.compile(r"(?:^|(?<=\s))(\d{1,3})[.)]\s+")


def _empty() -> dict[str, Any]:
    return {name: None for name in FIELDS}


def parse_number(text: str) -> tuple[float, bool] | None:
    """The first number in ``text`` as (value, was_percent); ``None`` without one.

    Reads ``1234``, ``-3``, ``1,234`` (also ``1 234``, ``1'234``, ``1_234``), ``1.2k``, ``3.4M``,
    ``2 million``, ``92%``, ``92 percent``. A leading ``~``/"about" is just skipped.
    """
    m = _NUMBER_RE.search(text or "")
    if m is None:
        return None
    digits = re.sub(r"[,_' \u00a0\u202f]", "", m.group("num"))
    try:
        value = float(digits)
    except ValueError:  # pragma: no cover - the regex only lets digits through
        return None
    if m.group("mult"):
        value *= _MULT[m.group("mult").lower()]
    if m.group("sign") in ("-", "−"):
        value = -value
    if not math.isfinite(value):
        return None
    return value, bool(m.group("pct"))


def parse_count(text: str) -> int | None:
    """A count (``"1.2k"`` -> 1200); a percentage is not a count (``None``)."""
    parsed = parse_number(text)
    if parsed is None or parsed[1]:
        return None
    return int(round(parsed[0]))


def parse_ratio(text: str) -> float | None:
    """A ratio as a 0..1 fraction: ``"92%"``, ``"92"`` -> 0.92; ``"0.92"`` -> 0.92; else ``None``."""
    parsed = parse_number(text)
    if parsed is None:
        return None
    value, percent = parsed
    if percent or value > 1.0:
        value /= 100.0
    return value if 0.0 <= value <= 1.0 else None


def _replay_value(text: str) -> float | None:
    parsed = parse_number(text)
    if parsed is None:
        return None
    value, percent = parsed
    if percent:
        value /= 100.0
    return value if 0.0 <= value <= 1.0 else None


def parse_scene_replay(text: str) -> list[float | None] | None:
    """``"Scene 1: 0.06, Scene 3: 0.5"`` -> ``[0.06, None, 0.5]``; plain ``"0.06, 0.31"`` in order."""
    pairs = list(_SCENE_PAIR_RE.finditer(text))
    out: list[float | None] = []
    if pairs:
        values: dict[int, float] = {}
        for m in pairs:
            k = int(m.group("k"))
            value = _replay_value(m.group("v"))
            if k < 1 or k > 10_000 or value is None or k in values:
                continue
            values[k] = value
        if not values:
            return None
        out = [None] * max(values)
        for k, value in values.items():
            out[k - 1] = value
        return out
    for m in _NUMBER_RE.finditer(text):
        value = _replay_value(m.group(0))
        out.append(value)
    return out if any(v is not None for v in out) else None


def parse_scene_numbers(text: str) -> list[int] | None:
    """``"3, 1, 4"`` (or ``"Scene 3, Scene 1"``) -> 0-based ``[2, 0, 3]``; ``None`` without any."""
    out: list[int] = []
    for m in re.finditer(r"\d+", text):
        k = int(m.group(0))
        if 1 <= k <= 10_000 and k - 1 not in out:
            out.append(k - 1)
    return out or None


def parse_comments(text: str) -> list[str]:
    """Comment texts of a ranked list, one per line (``"1. text"``) or all on one line."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if len(lines) == 1:
        # "1. first 2. second 3. third" on one line: split where the ranks count up from 1
        marks = [m for m in _INLINE_RANK_RE.finditer(lines[0])]
        expected, cuts = 1, []
        for m in marks:
            if int(m.group(1)) == expected:
                cuts.append(m)
                expected += 1
        if len(cuts) > 1:
            lines = [lines[0][a.end(): b.start() if b is not None else None].strip()
                     for a, b in zip(cuts, [*cuts[1:], None])]
    out = []
    for line in lines:
        body = _RANK_RE.sub("", line, count=1).strip()
        if len(body) >= 2 and body[0] == body[-1] and body[0] in "\"'":
            body = body[1:-1].strip()
        if body:
            out.append(body)
    return out


def _labels(text: str) -> list[tuple[str, int, int, bool]]:
    """(field, label start, value start, at line start) for every label, in order."""
    found = []
    for m in _LABEL_RE.finditer(text):
        name = next(_GROUP[g] for g, v in m.groupdict().items() if g != "pre" and v is not None)
        prefix = text[text.rfind("\n", 0, m.start()) + 1: m.start()]
        at_line_start = _LINE_PREFIX_RE.fullmatch(prefix) is not None
        found.append((name, m.start(), m.end(), at_line_start))
    # inside the comment section only labels that begin a line count (comments are free text)
    comment_start = next((value for name, _, value, _ in found if name == "comments"), None)
    if comment_start is not None:
        found = [f for f in found if f[0] == "comments" or f[1] < comment_start or f[3]]
    return found


def parse_behavior(text: str) -> dict[str, Any]:
    """Every behavior field of a generated answer; ``None`` for what is missing or unreadable.

    Keys: ``score, upvote_ratio, num_comments, view_count, like_count, like_ratio, comments,
    scene_replay, most_replayed_scenes`` (see the module docstring for units and conventions).
    Never raises: a non-string gives all ``None``.
    """
    out = _empty()
    if not isinstance(text, str) or not text.strip():
        return out
    stop = _STOP_RE.search(text)
    if stop is not None:
        text = text[: stop.start()]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    labels = _labels(text)
    for i, (name, _, value_start, _) in enumerate(labels):
        if out[name] is not None:
            continue
        end = labels[i + 1][1] if i + 1 < len(labels) else len(text)
        value = text[value_start:end]
        if name == "comments":
            out[name] = parse_comments(value)
            continue
        if name != "scene_replay":
            # one-line fields: the value is the first non-empty line after the label
            value = value.strip().split("\n", 1)[0]
        if name in COUNT_FIELDS:
            out[name] = parse_count(value)
        elif name in RATIO_FIELDS:
            out[name] = parse_ratio(value)
        elif name == "scene_replay":
            out[name] = parse_scene_replay(value.strip())
        elif name == "most_replayed_scenes":
            out[name] = parse_scene_numbers(value)
    return out
