"""Keywords of a caption: the content words a model used most, deterministically.

Why this and not a keyphrase model (KeyBERT, YAKE, spaCy noun chunks): the ``keywords`` column
must be a pure function of the caption text, identical on every machine and every rerun, fast
enough to run on millions of captions inside the caption stage, and free of model downloads
(runs are offline). Captions are short, plain English descriptions, so dropping function words
and caption boilerplate ("the image shows...") leaves mostly nouns, colours and actions, which is
what the paper's verbalization lists as keywords. No lemmatization: a caption's words are kept as
written, except that a plural merges into its singular when both occur (``tree``/``trees``).

Ranking: most frequent first; ties keep the order of first appearance, so the subject a caption
opens with outranks what it mentions in passing.
"""

from __future__ import annotations

import re
from collections import Counter

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

# Words captioning models use to talk about the picture rather than its content.
CAPTION_BOILERPLATE = frozenset("""
image images picture pictures photo photos photograph photographs shot snapshot frame scene scenes
shows show showing shown depicts depict depicting depicted features featuring feature appears appear
appearing seems seem visible displayed displays display captured capture captures includes include
including contains contain containing consists overall likely possibly perhaps probably various
different several many lot lots kind sort type view viewed looks look looking seen
describe description detail details detailed additionally also
""".split())

# scikit-learn's list (built for topic models of prose) holds a few words that are content in a
# picture: "a fire", "the front of a bus", "an empty room", "a mill", "a bill", "a thin man".
PICTURE_WORDS = frozenset("""
fire front back top bottom side empty full thick thin bill mill cry system name part
""".split())

STOP_WORDS = (frozenset(ENGLISH_STOP_WORDS) - PICTURE_WORDS) | CAPTION_BOILERPLATE

# Letters (any script), optionally with an apostrophe part; digits and underscores never start one.
_TOKEN = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")
_MIN_LEN = 3


def tokens(caption: str) -> list[str]:
    """Lower-cased candidate words of ``caption`` in order, possessives stripped (``man's`` -> ``man``)."""
    out = []
    for match in _TOKEN.finditer(caption.lower()):
        word = re.sub(r"['’](s|re|ve|ll|d|t|m)$", "", match.group(0))
        if len(word) >= _MIN_LEN and word not in STOP_WORDS and "'" not in word and "’" not in word:
            out.append(word)
    return out


def _singular(word: str, vocabulary: set[str]) -> str:
    """``word``'s singular when the caption also uses that singular; else ``word`` itself."""
    for suffix, replacement in (("ies", "y"), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            stem = word[: -len(suffix)] + replacement
            if stem in vocabulary:
                return stem
    return word


def extract_keywords(caption: str, k: int = 10) -> list[str]:
    """Up to ``k`` keywords of ``caption``: frequency first, then first appearance."""
    if k <= 0:
        return []
    words = tokens(caption)
    vocabulary = set(words)
    merged = [_singular(w, vocabulary) for w in words]
    counts = Counter(merged)
    first: dict[str, int] = {}
    for i, word in enumerate(merged):
        first.setdefault(word, i)
    ranked = sorted(counts, key=lambda w: (-counts[w], first[w]))
    return ranked[:k]
