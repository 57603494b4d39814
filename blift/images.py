"""Opening images the way every stage should see them: as displayed (first frame, EXIF rotation
applied) and as 8-bit RGB whatever the file's mode. Shared by the stages that read pixels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# EXIF orientations 5-8 rotate by 90 degrees: the displayed width is the stored height.
_EXIF_ORIENTATION = 0x0112
_SWAPS_SIDES = {5, 6, 7, 8}


def open_image(path: Path, decode_side: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """Open an image file as displayed: first frame of an animation, EXIF rotation applied.

    Returns the image (possibly decoded at reduced size, see below) and the full displayed size.
    ``decode_side``: JPEGs are decoded with libjpeg's DCT scaling (1/2, 1/4, 1/8) down to no less
    than this on the longest side, which makes decoding a 12-megapixel photo several times
    faster; nothing the stage measures needs more pixels than that. Colour fractions, brightness
    and complexity moved by at most 0.003 between a full decode and a 1/8 decode of a 4000 px
    photo, so the result barely depends on whether OCR (which needs the larger decode) is on.
    """
    # Pillow's own decompression-bomb limit stays in force (an error above 2x MAX_IMAGE_PIXELS).
    with Image.open(path) as src:
        width, height = src.size
        if decode_side and src.format == "JPEG" and max(width, height) > decode_side:
            scale = decode_side / max(width, height)
            src.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
        if getattr(src, "is_animated", False):
            src.seek(0)
        tag = src.getexif().get(_EXIF_ORIENTATION)
        src.load()
        img = ImageOps.exif_transpose(src)  # a copy, so the file can close here
    if tag in _SWAPS_SIDES:
        width, height = height, width
    return img, (width, height)


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """An 8-bit RGB version of ``img`` whatever its mode.

    Why not just ``img.convert("RGB")``: transparent pixels would come out as whatever colour
    they happen to store (often black), so alpha is composited over ``background`` (white, as a
    browser shows it); and Pillow clips 16/32-bit integer greys to 255 instead of scaling them,
    which would turn most 16-bit PNGs white.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = float(arr.max()) if arr.size else 0.0
        if mode == "F" and top <= 1.0:
            scale = 255.0  # float images stored as 0..1
        elif top > 255.0:
            scale = 255.0 / 65535.0  # 16-bit range (mode "I" is how Pillow opens 16-bit PNGs)
        else:
            scale = 1.0
        grey = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    elif mode in ("L", "1") and "transparency" in img.info:
        img = img.convert("LA")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
