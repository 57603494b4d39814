"""Throughput of the attributes stage, and the reference scores behind the complexity cut points.

Run: ``.venv/bin/python benchmarks/bench_attributes.py [--repeat N] [--no-ocr]``

Prints (1) edge density and label of reference images (flat, gradient, posters, photos shipped
with scikit-learn, text, texture), the evidence for ``LOW_BELOW`` / ``HIGH_FROM``; (2) seconds
per image for decoding, the weight-free attributes and OCR, on small and 12-megapixel inputs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from blift.images import open_image
from blift.stages.attributes.measures import HIGH_FROM, LOW_BELOW, complexity
from blift.stages.attributes.stage import AttributesConfig, ImageAnalyzer

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype(FONT, size)
    except OSError:
        return ImageFont.load_default(size=size)


def references() -> dict[str, Image.Image]:
    import sklearn

    refs: dict[str, Image.Image] = {}
    refs["flat colour"] = Image.new("RGB", (640, 480), (20, 35, 130))
    refs["linear gradient"] = Image.fromarray(
        np.tile(np.linspace(0, 255, 640), (480, 1)).astype(np.uint8)
    ).convert("RGB")
    poster = Image.new("RGB", (640, 480), "white")
    draw = ImageDraw.Draw(poster)
    draw.ellipse((100, 100, 300, 300), fill="red")
    draw.rectangle((350, 150, 550, 400), fill="blue")
    refs["two shapes poster"] = poster
    title = Image.new("RGB", (1080, 1080), (240, 230, 200))
    ImageDraw.Draw(title).text((100, 450), "BIG SALE", fill="black", font=_font(150))
    refs["title card"] = title
    banner = Image.new("RGB", (700, 220), "white")
    ImageDraw.Draw(banner).text((30, 60), "HELLO WORLD", fill="black", font=_font(72))
    refs["one-line banner"] = banner
    for name in ("flower.jpg", "china.jpg"):
        path = Path(sklearn.__file__).parent / "datasets" / "images" / name
        if path.is_file():
            refs[f"photo {name}"] = Image.open(path).convert("RGB")
    page = Image.new("RGB", (800, 1000), "white")
    draw = ImageDraw.Draw(page)
    for i in range(35):
        draw.text((30, 20 + 27 * i), f"The quick brown fox jumps over the lazy dog {i}", fill="black", font=_font(18))
    refs["page of text"] = page
    rng = np.random.default_rng(0)
    refs["random noise"] = Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    cells = (np.indices((480, 640)) // 32).sum(axis=0) % 2
    refs["checkerboard 32px"] = Image.fromarray((cells * 255).astype(np.uint8)).convert("RGB")
    return refs


def _time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-ocr", action="store_true")
    args = ap.parse_args()

    refs = references()
    print(f"complexity cut points: low < {LOW_BELOW}, high >= {HIGH_FROM}")
    for name, img in refs.items():
        label, score = complexity(img)
        print(f"  {name:22s} {img.width:5d}x{img.height:<5d} edge density {score:.4f}  {label}")

    plain = ImageAnalyzer(AttributesConfig(ocr=False))
    with_ocr = ImageAnalyzer(AttributesConfig(ocr=not args.no_ocr))
    with_ocr.setup()
    print(f"\nseconds per image (median of {args.repeat})")
    print(f"  {'image':22s} {'attributes':>10s} {'+ OCR':>8s}")
    for name, img in refs.items():
        t_attr = _time(lambda img=img: plain.analyze(img), args.repeat)
        t_ocr = (_time(lambda img=img: with_ocr.analyze(img), max(1, args.repeat // 2))
                 if not args.no_ocr else float("nan"))
        print(f"  {name:22s} {t_attr:10.4f} {t_ocr:8.3f}")

    # A 12-megapixel JPEG: full decode vs DCT-scaled decode (what the stage does).
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photo.jpg"
        photo = refs.get("photo china.jpg", refs["random noise"]).resize((4000, 3000), Image.Resampling.BICUBIC)
        photo.save(path, quality=90)
        full = _time(lambda: open_image(path, None), args.repeat)
        print()
        for side in (256, 2000):
            reduced = _time(lambda side=side: open_image(path, side), args.repeat)
            print(f"12 MP JPEG decode: full {full:.3f}s, reduced to >= {side}px {reduced:.3f}s ({full / reduced:.1f}x)")
        print(f"12 MP photo, attributes only (decode >= {plain.decode_side()}px): "
              f"{_time(lambda: plain.analyze(open_image(path, plain.decode_side())[0]), args.repeat):.3f}s")
        if not args.no_ocr:
            print(f"12 MP photo, with OCR (decode >= {with_ocr.decode_side()}px): "
                  f"{_time(lambda: with_ocr.analyze(open_image(path, with_ocr.decode_side())[0]), 2):.3f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
