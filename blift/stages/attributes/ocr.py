"""On-screen text with Tesseract (through pytesseract).

The paper's verbalization quotes the text visible in each scene (memes, ads, title cards).
Tesseract is a CPU program run once per image as a subprocess, so it is the slow part of the
attributes stage; the engine bounds its cost (size cap, timeout, one OpenMP thread per call so
parallel workers do not oversubscribe the cores) and drops low-confidence words, which on photos
are mostly texture mistaken for letters.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import pytesseract
from PIL import Image

from blift.errors import ConfigError
from blift.stages.attributes.measures import to_rgb

log = logging.getLogger(__name__)

INSTALL_HINT = "install it with `apt-get install tesseract-ocr` (Debian/Ubuntu) or `brew install tesseract`"


class OcrError(RuntimeError):
    """Tesseract failed or timed out on one image (the image's other attributes are still good)."""


@dataclass
class OcrEngine:
    """Reads the text of a PIL image.

    ``min_confidence``: Tesseract's per-word confidence (0-100) below which a word is dropped.
    ``min_side`` / ``max_upscale``: images whose longest side is below ``min_side`` are upscaled
    (at most ``max_upscale`` times) because Tesseract misses glyphs under ~20 px high.
    ``max_side``: larger images are shrunk to this, bounding the time per image.
    ``psm``: Tesseract page segmentation mode; 11 ("sparse text") finds scattered text anywhere
    in a picture, where the default (3) expects a page layout.
    ``min_contrast``: a prepared (greyscale) image whose darkest and lightest pixels differ by
    fewer grey levels than this holds no legible glyphs, so Tesseract is not started (black or
    blank frames are common among video keyframes; each call costs ~0.1 s of process start). The
    complexity score is *not* used to skip: small low-contrast captions on large images have an
    edge density of 0 at the analysis scale yet read perfectly (measured: 16 px grey-on-grey text
    on a 2000x1500 image).
    ``min_line_chars``: lines with fewer letters/digits than this are dropped; on photos, texture
    read as text comes out as isolated one- or two-letter "words" ("he", "ae").
    ``tesseract_cmd``: path of the binary when it is not on ``PATH``. pytesseract keeps this in
    a module-wide setting, so it applies to the whole worker process.
    """

    lang: str = "eng"
    min_confidence: float = 60.0
    min_side: int = 1000
    max_upscale: float = 3.0
    max_side: int = 2000
    psm: int = 11
    timeout_s: float = 30.0
    min_contrast: int = 8
    min_line_chars: int = 3
    threads: int = 1
    tesseract_cmd: str | None = None

    def setup(self) -> None:
        """Check once per worker that the binary and the languages are there."""
        if self.tesseract_cmd:
            pytesseract.pytesseract.tesseract_cmd = self.tesseract_cmd
        cmd = pytesseract.pytesseract.tesseract_cmd
        try:
            version = pytesseract.get_tesseract_version()
            available = set(pytesseract.get_languages(config=""))
        except (pytesseract.TesseractNotFoundError, OSError) as exc:
            raise ConfigError(
                f"attributes: OCR is on but the tesseract binary {cmd!r} was not found or did not run "
                f"({exc}); {INSTALL_HINT}, set `tesseract_cmd`, or turn OCR off with `ocr: false`"
            ) from None
        except SystemExit as exc:  # pytesseract exits on a version string it cannot parse
            raise ConfigError(f"attributes: tesseract {cmd!r} is unusable: {exc}") from None
        wanted = [part for part in self.lang.split("+") if part]
        missing = [part for part in wanted if part not in available]
        if not wanted or missing:
            raise ConfigError(
                f"attributes: ocr_lang={self.lang!r}: tesseract {version} has no language data for "
                f"{missing or [self.lang]} (installed: {sorted(available)}); install e.g. "
                f"`apt-get install tesseract-ocr-{(missing or ['eng'])[0]}`"
            )
        if self.threads > 0:
            # Tesseract reads this from its environment; pytesseract passes os.environ on. This is
            # the worker's environment (stage workers are processes of their own, one pool per
            # stage): never call setup() in a process that later starts CTranslate2 workers,
            # which transcribe garbage with more threads than OMP_THREAD_LIMIT.
            os.environ["OMP_THREAD_LIMIT"] = str(self.threads)
        log.debug("tesseract %s, languages %s", version, self.lang)

    def prepare(self, img: Image.Image) -> Image.Image:
        """Greyscale copy scaled into the size range Tesseract reads well and fast."""
        grey = to_rgb(img).convert("L")
        w, h = grey.size
        longest = max(w, h)
        scale = 1.0
        if longest > self.max_side:
            scale = self.max_side / longest
        elif longest < self.min_side:
            scale = min(self.max_upscale, self.min_side / longest)
        if scale != 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            grey = grey.resize(size, Image.Resampling.LANCZOS)
        return grey

    def read(self, img: Image.Image) -> str:
        """Words above the confidence threshold in Tesseract's reading order; words of one line
        joined by spaces, lines by newlines; "" when there is no text."""
        prepared = self.prepare(img)
        lo, hi = prepared.getextrema()
        assert not isinstance(lo, tuple) and not isinstance(hi, tuple)  # mode "L": one band, (min, max)
        if hi - lo < self.min_contrast:
            return ""
        try:
            data = pytesseract.image_to_data(
                prepared,
                lang=self.lang,
                config=f"--psm {self.psm}",
                output_type=pytesseract.Output.DICT,
                timeout=self.timeout_s,
            )
        except pytesseract.TesseractNotFoundError as exc:
            raise ConfigError(f"attributes: tesseract disappeared during the run ({exc}); {INSTALL_HINT}") from None
        except RuntimeError as exc:  # TesseractError, or pytesseract's timeout
            raise OcrError(f"tesseract failed on a {prepared.width}x{prepared.height} image: {exc}") from exc
        return words_to_text(data, self.min_confidence, self.min_line_chars)


def words_to_text(data: dict[str, list], min_confidence: float, min_line_chars: int = 0) -> str:
    """Join the confident words of an ``image_to_data`` dict, keeping Tesseract's line order.
    Words without any letter or digit (stray punctuation) are dropped, and so are lines with
    fewer than ``min_line_chars`` letters/digits in all."""
    lines: list[list[str]] = []
    current: tuple[int, int, int, int] | None = None
    for i, word in enumerate(data.get("text", [])):
        word = (word or "").strip()
        try:
            conf = float(data["conf"][i])
        except (TypeError, ValueError):
            continue
        if conf < min_confidence or not any(ch.isalnum() for ch in word):
            continue
        key = (int(data["page_num"][i]), int(data["block_num"][i]), int(data["par_num"][i]), int(data["line_num"][i]))
        if key != current:
            lines.append([])
            current = key
        lines[-1].append(word)
    kept = [line for line in lines if sum(ch.isalnum() for word in line for ch in word) >= min_line_chars]
    return "\n".join(" ".join(line) for line in kept)
