"""NSFW vocabulary: the LDNOOBW English list, matched as whole words, case-insensitively.

The BLIFT paper removed NSFW posts and comments with the "List of Dirty, Naughty, Obscene and
Otherwise Bad Words" (LDNOOBW). No PyPI package ships it, so its English list is vendored next to
this file (``ldnoobw_en.txt``: source, licence CC BY 4.0 and attribution in its header).

An entry matches when it stands alone: not inside a longer word ("ass" never matches "class" or
"assassin"), with any letter case, and a phrase ("2 girls 1 cup") across any run of whitespace.
Word edges are Unicode-aware (letters, digits and ``_`` of any script are word characters), so
"anal" does not match "análisis" either. Plurals and other forms are matched only where the list
names them: the list is used as published.

One RE2 pass over a whole Arrow column (:meth:`WordList.match`) finds the texts that contain an entry;
Python's ``re`` then names the entry for those few (the drop detail).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from blift.errors import ConfigError
from blift.text_vectors import StrColumn, as_string_array

LDNOOBW_EN = Path(__file__).with_name("ldnoobw_en.txt")
LIST_NAME = "LDNOOBW (en)"

@dataclass(frozen=True)
class WordList:
    """A vocabulary list and the patterns that find its entries."""

    name: str
    entries: tuple[str, ...]
    re2: str  # for Arrow compute (RE2 syntax)
    py: re.Pattern[str]  # the same, for Python: names the entry that matched

    def match(self, texts: StrColumn) -> np.ndarray:
        """True per text holding an entry (null text: False)."""
        arr = as_string_array(texts)
        if not self.entries or len(arr) == 0:
            return np.zeros(len(arr), dtype=bool)
        hits = pc.fill_null(pc.match_substring_regex(arr, self.re2), False)
        return np.asarray(hits.to_numpy(zero_copy_only=False), dtype=bool)

    def found(self, text: str | None) -> str | None:
        """The first entry in ``text`` (lower case), or None."""
        m = self.py.search(text or "")
        return m.group(1).lower() if m else None


def read_entries(path: Path) -> tuple[str, ...]:
    """One entry per line; blank lines and ``#`` comment lines are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"clean: cannot read the NSFW word list {str(path)!r}: {exc}") from exc
    entries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return tuple(dict.fromkeys(e.lower() for e in entries))


def _alternation(entries: tuple[str, ...], edge_py: bool) -> str:
    # Longest first, so "2 girls 1 cup" wins over "2g1c"-like prefixes and the named entry is the
    # longest one present; whitespace inside a phrase matches any run of whitespace.
    parts = []
    for entry in sorted(entries, key=lambda e: (-len(e), e)):
        words = entry.split()
        parts.append(r"\s+".join(_escape(w, edge_py) for w in words))
    return "|".join(parts)


def _escape(word: str, for_python: bool) -> str:
    """Escape for RE2 and Python alike: letters and digits as they are, anything else as \\x{...}
    (RE2) or re.escape (Python)."""
    if for_python:
        return re.escape(word)
    return "".join(ch if ch.isalnum() else f"\\x{{{ord(ch):x}}}" for ch in word)


def build(entries: tuple[str, ...], name: str) -> WordList:
    # An entry must not touch a word character (letter, digit or _ of any script) on either side.
    re2 = f"(?i)(?:^|[^\\p{{L}}\\p{{N}}_])(?:{_alternation(entries, False)})(?:[^\\p{{L}}\\p{{N}}_]|$)"
    # Python's re has no \p{L}: a word character there is [^\W] (letters, digits, _ of any script).
    py = re.compile(f"(?<!\\w)({_alternation(entries, True)})(?!\\w)", re.IGNORECASE)
    return WordList(name=name, entries=entries, re2=re2, py=py)


@lru_cache(maxsize=8)
def load(path: str | None = None) -> WordList:
    """The shipped LDNOOBW English list, or the list in ``path`` (one entry per line)."""
    if path is None:
        return build(read_entries(LDNOOBW_EN), LIST_NAME)
    return build(read_entries(Path(path)), Path(path).name)

