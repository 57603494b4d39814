"""Visual attributes that need no learned weights: orientation, tone, brightness, complexity.

Every function takes a PIL image (not a file row), so the same code serves downloaded images and
video keyframes. Images are normalised to 8-bit RGB first (:func:`blift.images.to_rgb`), and the statistics
that depend on scale (complexity) are computed on a copy resized to a fixed size, so a 4000 px
photo and its 400 px thumbnail get the same label.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

from blift.images import to_rgb

Orientation = Literal["landscape", "portrait", "square"]
Tone = Literal["warm", "cool", "neutral"]
Complexity = Literal["low", "medium", "high"]

#: Longest side of the copy that tone/brightness/colour statistics run on. 128 px keeps 16k
#: pixels: enough for stable fractions, cheap enough for every keyframe of a video.
ANALYSIS_SIDE = 128
#: Longest side of the copy complexity is measured on. Edge density depends on scale, so it is
#: fixed (not configurable per run) to keep scores comparable across images and runs.
COMPLEXITY_SIDE = 256


def downscaled(img: Image.Image, max_side: int) -> Image.Image:
    """An RGB copy whose longest side is at most ``max_side`` (box filter: area-averaging keeps
    colour fractions honest and is deterministic). Never upscales."""
    rgb = to_rgb(img)
    w, h = rgb.size
    longest = max(w, h)
    if longest <= max_side:
        return rgb
    scale = max_side / longest
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return rgb.resize(size, Image.Resampling.BOX)


def rgb_array(img: Image.Image, max_side: int = ANALYSIS_SIDE) -> np.ndarray:
    """``uint8`` array ``(H, W, 3)`` of a downscaled RGB copy."""
    return np.asarray(downscaled(img, max_side), dtype=np.uint8)


# --------------------------------------------------------------------------- orientation


def orientation(width: int, height: int, tolerance: float = 0.05) -> Orientation:
    """``square`` when the sides differ by at most ``tolerance`` of the longer one (a 1000x980
    image is square to a viewer), otherwise ``landscape`` or ``portrait``."""
    if width <= 0 or height <= 0:
        raise ValueError(f"orientation of a {width}x{height} image is undefined")
    if abs(width - height) <= tolerance * max(width, height):
        return "square"
    return "landscape" if width > height else "portrait"


# --------------------------------------------------------------------------- tone

# Hue sectors (HSV degrees) of the usual warm/cool split of the colour wheel. The two bands in
# between (yellow-green 75-90 and violet-magenta 270-330) are ambiguous and do not vote.
_WARM_SECTORS = ((0.0, 75.0), (330.0, 360.0))  # red, orange, yellow, red-magenta
_COOL_SECTORS = ((90.0, 270.0),)  # green, cyan, blue, blue-violet
_MIN_SATURATION = 0.25  # below this a pixel reads as grey, its hue is noise
_MIN_VALUE = 0.15  # in near-black pixels the hue is noise too
_MIN_CHROMATIC_FRACTION = 0.10  # fewer voting pixels than this: the image reads as neutral
_DOMINANCE = 1.5  # one side must outweigh the other by this factor


def _hsv(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in degrees [0, 360), saturation and value in [0, 1] of an ``(..., 3)`` uint8 array."""
    rgb = arr.astype(np.float64) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx = rgb.max(axis=-1)
    mn = rgb.min(axis=-1)
    delta = mx - mn
    safe = np.where(delta > 0, delta, 1.0)
    hue = np.where(
        mx == r,
        ((g - b) / safe) % 6.0,
        np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    hue = np.where(delta > 0, hue * 60.0, 0.0)
    sat = np.where(mx > 0, delta / np.where(mx > 0, mx, 1.0), 0.0)
    return hue, sat, mx


def tone_shares(img: Image.Image, max_side: int = ANALYSIS_SIDE) -> tuple[float, float]:
    """Fractions of all pixels that vote warm and cool (see :func:`tone`)."""
    arr = rgb_array(img, max_side).reshape(-1, 3)
    if arr.size == 0:
        return 0.0, 0.0
    hue, sat, val = _hsv(arr)
    chromatic = (sat >= _MIN_SATURATION) & (val >= _MIN_VALUE)

    def share(sectors: tuple[tuple[float, float], ...]) -> float:
        inside = np.zeros(hue.shape, dtype=bool)
        for lo, hi in sectors:
            inside |= (hue >= lo) & (hue < hi)
        return float(np.count_nonzero(chromatic & inside)) / len(hue)

    return share(_WARM_SECTORS), share(_COOL_SECTORS)


def tone(img: Image.Image, max_side: int = ANALYSIS_SIDE) -> Tone:
    """Dominant colour temperature: ``warm``, ``cool`` or ``neutral``.

    Rule: only *chromatic* pixels vote (HSV saturation >= 0.25 and value >= 0.15; greys, whites
    and near-blacks have no meaningful hue). A voting pixel is warm when its hue is red through
    yellow (0-75 deg, or 330-360 deg) and cool when green through blue (90-270 deg); yellow-green
    and violet are ambiguous and abstain. The image is ``neutral`` when fewer than 10% of its
    pixels vote (a grey or black-and-white picture with a small coloured spot) or when neither
    side outweighs the other 1.5 to 1; otherwise the larger side wins.
    """
    warm, cool = tone_shares(img, max_side)
    if warm + cool < _MIN_CHROMATIC_FRACTION:
        return "neutral"
    if warm >= _DOMINANCE * cool:
        return "warm"
    if cool >= _DOMINANCE * warm:
        return "cool"
    return "neutral"


# --------------------------------------------------------------------------- brightness


def luma(arr: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma in [0, 1] of an ``(..., 3)`` uint8 RGB array (Pillow's "L" weights)."""
    rgb = arr.astype(np.float64)
    return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0


def brightness(img: Image.Image, max_side: int = ANALYSIS_SIDE) -> float:
    """Mean luma in [0, 1] (0 black, 1 white) of a downscaled copy."""
    arr = rgb_array(img, max_side)
    if arr.size == 0:
        return 0.0
    return float(np.clip(luma(arr).mean(), 0.0, 1.0))


# --------------------------------------------------------------------------- complexity

#: A pixel is an edge when its Sobel gradient (normalised so that a sharp step of height d, in
#: luma 0..1, gives d) exceeds this: a step of about 25 grey levels out of 255. Mild sensor or
#: JPEG noise and smooth gradients stay below it; object outlines, texture and glyphs do not.
EDGE_THRESHOLD = 0.10
#: Edge density cut points, from reference images at COMPLEXITY_SIDE (benchmarks/
#: bench_attributes.py prints them; tests/test_attributes.py pins the ordering): flat colour and
#: a smooth gradient 0.0; a poster with two shapes 0.041; a title card 0.037; a one-line banner
#: 0.13; photos shipped with scikit-learn 0.12 (flower, shallow focus) and 0.25 (temple); a page of
#: text 0.38; a 32 px checkerboard 0.41; random noise 0.16 after shrinking, ~0.9 at full size.
#: The paper's Low/High sit either side of "medium": sparse graphics vs. busy photos and text.
LOW_BELOW = 0.05
HIGH_FROM = 0.15


def edge_density(img: Image.Image, threshold: float = EDGE_THRESHOLD) -> float:
    """Fraction of pixels (0..1) whose Sobel gradient magnitude exceeds ``threshold``, measured
    on a greyscale copy shrunk to at most :data:`COMPLEXITY_SIDE` on its longest side."""
    # Shrink only: an image already smaller than the reference size is what the large one would
    # look like after shrinking, while blowing it up would smear its edges into weak ramps.
    # Bilinear (not box) keeps edges crisp enough when shrinking.
    rgb = to_rgb(img)
    w, h = rgb.size
    if max(w, h) > COMPLEXITY_SIDE:
        scale = COMPLEXITY_SIDE / max(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    grey = luma(np.asarray(rgb, dtype=np.uint8))
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    p = np.pad(grey, 1, mode="edge")
    # Sobel: smoothing [1, 2, 1] across, difference [-1, 0, 1] along. A sharp step of height d
    # gives 4 * d, so dividing by 4 makes the magnitude read in luma units.
    gx = (
        (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    ) / 4.0
    gy = (
        (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    ) / 4.0
    mag = np.hypot(gx, gy)
    return float(np.count_nonzero(mag > threshold)) / mag.size


def complexity_label(score: float) -> Complexity:
    """Map an edge density to ``low`` / ``medium`` / ``high`` (cut points above)."""
    if score < LOW_BELOW:
        return "low"
    if score < HIGH_FROM:
        return "medium"
    return "high"


def complexity(img: Image.Image) -> tuple[Complexity, float]:
    """Visual complexity as ``(label, edge density)``: how much of the picture is edges."""
    score = edge_density(img)
    return complexity_label(score), score
