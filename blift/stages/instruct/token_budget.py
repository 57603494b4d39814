"""A token budget for the turns that carry a video's verbalization, and how text is cut to fit.

LLaVA-style trainers cut every sample at the model's context (2048 tokens in the paper's
train.sh). A behavior record whose human turn is too long loses its *answer* to that cut, so
the instruct stage shortens the verbalization itself, in a fixed order, before rendering.

**Counting.** With ``tokenizer`` configured (a local folder or a name already in the HF cache,
loaded with ``AutoTokenizer.from_pretrained(..., local_files_only=True)``) tokens are counted
exactly, without special tokens. Without one, :func:`estimate_tokens` is used: it mimics a
LLaMA SentencePiece vocabulary and errs high. Rules: each run of ASCII letters counts
``ceil(len / 5)`` (common words are one token, long ones two or more); every digit counts one
(LLaMA splits numbers into digits, so ``0:05`` is four tokens); every other non-space character
(punctuation, symbols, any non-ASCII character) counts one; every newline counts one; spaces
and tabs are free (SentencePiece folds a space into the next word).

**Truncation policy** (:func:`fit`). The budget holds when every measured turn has at most
``limit`` tokens. While over budget, these steps are taken in order, each only as far as
needed, and each one that was taken is reported by name (the stage counts them in stats.json
as ``budget_<step>``):

1. ``transcript_shortened`` – every scene keeps only the first *N* words of its speech, the cut
   marked with ``…``; *N* is the largest value that fits, but not below ``min_speech_words``
   (the same *N* for all scenes, so short speech is never cut to pay for long speech).
2. ``ocr_dropped`` – on-screen text is removed from every scene.
3. ``keywords_dropped`` – keywords are removed from every scene.
4. ``scene_details_dropped`` – from the last scene backwards, scenes lose all their details
   (speech, caption, colours, tone, complexity) and keep only their timing line
   ``Scene k (m:ss-m:ss).``; as few scenes as possible.
5. ``scenes_collapsed`` – from the last scene backwards, timing lines are folded into one line
   ``Scenes k-n (m:ss-m:ss) are not described.``; as few as possible.

The header (length, orientation, pace) and the template's own words (title, question) are
never cut. If even step 5 leaves the turn over budget, :class:`Fitted` says ``fits=False`` and
the stage drops the video (reason ``over_budget``). The search in each step is a binary search
over a count (words, scenes), so the result is the same on every run and costs O(log n)
renderings. The same shortened text is used for a video's behavior and content records.
"""

from __future__ import annotations

import functools
import re
import string
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Protocol

from blift.errors import ConfigError
from blift.stages.instruct.video_verbalize import FULL, Shortening, VideoText, render

STEPS = ("transcript_shortened", "ocr_dropped", "keywords_dropped", "scene_details_dropped", "scenes_collapsed")
MIN_SPEECH_WORDS = 8
_LETTER_RUNS = re.compile(r"[A-Za-z]+")
_FREE = str.maketrans("", "", string.ascii_letters + " \t\r\f\v")  # what is left counts one each


def estimate_tokens(text: str) -> int:
    """Token count estimate for LLaMA-family tokenizers (rules in the module docstring)."""
    words = sum((len(run) + 4) // 5 for run in _LETTER_RUNS.findall(text))  # ceil(len / 5)
    return words + len(text.translate(_FREE))  # digits, punctuation, non-ASCII, newlines


class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int: ...


@functools.lru_cache(maxsize=8192)
def _line_tokens(line: str) -> int:
    return estimate_tokens(line)


class EstimateCounter:
    """The documented estimate; no files needed.

    The estimate is additive over lines (a letter run never spans a newline), so each line is
    estimated once and cached: the truncation search re-measures mostly the same scene lines.
    """

    name = "estimate"

    def count(self, text: str) -> int:
        return sum(map(_line_tokens, text.split("\n"))) + text.count("\n")


class TokenizerCounter:
    """Exact counts from a locally available Hugging Face tokenizer."""

    def __init__(self, ref: str) -> None:
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:  # pragma: no cover - transformers is a dependency
            raise ConfigError(f"tokenizer {ref!r}: transformers is not installed ({exc})") from None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(ref, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - any load failure is a configuration problem
            raise ConfigError(
                f"instruct: tokenizer {ref!r} could not be loaded from local files "
                f"(a folder with tokenizer files, or a name already in the HF cache): {type(exc).__name__}: {exc}"
            ) from None
        self.name = f"tokenizer:{ref}"

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def make_counter(tokenizer: str | None) -> TokenCounter:
    """The configured tokenizer, else the estimate."""
    return TokenizerCounter(tokenizer) if tokenizer else EstimateCounter()


def tokenizer_fingerprint(tokenizer: str | None) -> str | None:
    """What identifies a tokenizer's counts for the stage's config hash: the bytes of its
    vocabulary files when ``tokenizer`` is a local folder, else its name."""
    if not tokenizer:
        return None
    folder = Path(tokenizer)
    if not folder.is_dir():
        return tokenizer
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and ("token" in path.name or path.suffix in (".model", ".json", ".txt")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class Fitted:
    """The verbalization that fits (or the shortest one tried), with what was done to it."""

    text: str
    plan: Shortening
    tokens: int  # the measure of the final text
    fits: bool
    steps: list[str] = field(default_factory=list)


def _largest(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
    """Largest v in [lo, hi] with ok(v), assuming ok is true up to some point and false after."""
    if lo > hi or not ok(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def fit(video: VideoText, measure: Callable[[str], int], limit: int, *,
        min_speech_words: int = MIN_SPEECH_WORDS) -> Fitted:
    """Shorten ``video`` until ``measure(text) <= limit`` following the policy above.

    ``measure`` returns the token count that must stay within ``limit`` for a given
    verbalization, e.g. the longest of the template turns that hold it.
    """
    cache: dict[Shortening, int] = {}
    lines: dict[tuple[Any, ...], str] = {}  # scene lines shared between the plans tried

    def tokens(plan: Shortening) -> int:
        if plan not in cache:
            cache[plan] = measure(render(video, plan, lines))
        return cache[plan]

    def done(plan: Shortening, steps: list[str], fits: bool) -> Fitted:
        return Fitted(render(video, plan, lines), plan, tokens(plan), fits, steps)

    plan = FULL
    steps: list[str] = []
    if tokens(plan) <= limit:
        return done(plan, steps, True)
    scenes = video.scenes
    n = len(scenes)

    # 1. speech: the largest per-scene word cap that fits, not below min_speech_words
    longest = max((len(s.speech) for s in scenes), default=0)
    if longest > min_speech_words:
        steps.append(STEPS[0])
        best = _largest(min_speech_words, longest - 1, lambda w: tokens(replace(plan, speech_words=w)) <= limit)
        plan = replace(plan, speech_words=best if best is not None else min_speech_words)
        if best is not None:
            return done(plan, steps, True)

    # 2. on-screen text, 3. keywords: all scenes at once
    for step, knob, present in ((STEPS[1], "ocr", any(s.ocr for s in scenes)),
                                (STEPS[2], "keywords", any(s.keywords for s in scenes))):
        if present:
            steps.append(step)
            plan = replace(plan, **{knob: False})
            if tokens(plan) <= limit:
                return done(plan, steps, True)

    # 4. tail scenes keep only their timing line: the most scenes with details that fits
    if n:
        steps.append(STEPS[3])
        keep = _largest(0, n - 1, lambda d: tokens(replace(plan, details_until=d)) <= limit)
        plan = replace(plan, details_until=keep if keep is not None else 0)
        if keep is not None:
            return done(plan, steps, True)

        # 5. tail timing lines folded into one line
        steps.append(STEPS[4])
        keep = _largest(0, n - 1, lambda c: tokens(replace(plan, collapse_from=c)) <= limit)
        plan = replace(plan, collapse_from=keep if keep is not None else 0)
        if keep is not None:
            return done(plan, steps, True)
    return done(plan, steps, False)
