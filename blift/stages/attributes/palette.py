"""A fixed named colour palette and the colours of an image in its names.

The paper's verbalization names colours from a palette (``Dark_Blue``, ``Off_White``...), not as
RGB triples, so a language model reads them as words. Pixels are assigned to the nearest palette
centre in CIELAB (Euclidean distance there roughly follows perceived difference, unlike RGB,
where e.g. dark blues and blacks sit much closer than they look), then counted per name on a
downscaled copy. Everything is integer counting over a fixed palette, so results are
deterministic for the same image.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from PIL import Image

from blift.stages.attributes.measures import ANALYSIS_SIDE, rgb_array

#: Name -> sRGB centre. Order matters only to break exact ties (earlier name wins).
PALETTE: Final[dict[str, tuple[int, int, int]]] = {
    "Black": (0, 0, 0),
    "Dark_Gray": (64, 64, 64),
    "Gray": (128, 128, 128),
    "Light_Gray": (192, 192, 192),
    "Off_White": (238, 234, 218),
    "White": (255, 255, 255),
    "Dark_Red": (128, 0, 0),
    "Red": (220, 20, 30),
    "Coral": (250, 128, 100),
    "Pink": (250, 170, 200),
    "Magenta": (210, 30, 170),
    "Dark_Brown": (70, 40, 20),
    "Brown": (140, 85, 40),
    "Tan": (200, 160, 110),
    "Beige": (230, 210, 170),
    "Orange": (245, 130, 20),
    "Gold": (215, 170, 30),
    "Yellow": (250, 225, 30),
    "Light_Yellow": (255, 245, 160),
    "Olive": (128, 128, 0),
    "Lime": (160, 220, 40),
    "Light_Green": (150, 220, 140),
    "Green": (30, 160, 60),
    "Dark_Green": (0, 80, 30),
    "Teal": (0, 128, 128),
    "Cyan": (0, 210, 220),
    "Light_Blue": (160, 200, 240),
    "Sky_Blue": (80, 170, 230),
    "Blue": (30, 80, 220),
    "Dark_Blue": (20, 35, 130),
    "Navy": (10, 15, 70),
    "Lavender": (190, 170, 230),
    "Purple": (120, 40, 160),
    "Dark_Purple": (60, 15, 80),
}
NAMES: Final[tuple[str, ...]] = tuple(PALETTE)

# D65 reference white and the sRGB -> XYZ matrix (IEC 61966-2-1).
_WHITE = np.array([0.95047, 1.0, 1.08883])
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of an ``(..., 3)`` array of 8-bit sRGB values; L in 0..100."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _WHITE
    eps = (6.0 / 29.0) ** 3
    f = np.where(xyz > eps, np.cbrt(xyz), xyz / (3.0 * (6.0 / 29.0) ** 2) + 4.0 / 29.0)
    L = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([L, a, b], axis=-1)


_CENTRES_LAB: Final[np.ndarray] = srgb_to_lab(np.array(list(PALETTE.values()), dtype=np.float64))


def nearest_index(rgb: np.ndarray) -> np.ndarray:
    """Palette index (into :data:`NAMES`) of each pixel of an ``(..., 3)`` uint8 array."""
    arr = np.asarray(rgb)
    lab = srgb_to_lab(arr.reshape(-1, 3))
    # Squared distances (N, P), summed channel by channel (4x faster than an (N, P, 3)
    # temporary); argmin picks the first of equal distances: deterministic.
    d = (lab[:, 0:1] - _CENTRES_LAB[:, 0]) ** 2
    d += (lab[:, 1:2] - _CENTRES_LAB[:, 1]) ** 2
    d += (lab[:, 2:3] - _CENTRES_LAB[:, 2]) ** 2
    return d.argmin(axis=1).reshape(arr.shape[:-1])


def nearest_name(rgb: tuple[int, int, int]) -> str:
    """The palette name of one colour."""
    return NAMES[int(nearest_index(np.array([rgb], dtype=np.uint8))[0])]


def ranked_colors(indices: np.ndarray, k: int, min_fraction: float) -> list[tuple[str, float]]:
    """Top-``k`` names of an index map (from :func:`nearest_index`) by pixel count (ties: palette
    order), with their fraction of all pixels."""
    total = indices.size
    if total == 0 or k <= 0:
        return []
    counts = np.bincount(indices.ravel(), minlength=len(NAMES))
    # Stable sort on -count keeps palette order among equal counts.
    order = np.argsort(-counts, kind="stable")
    out: list[tuple[str, float]] = []
    for idx in order[:k]:
        frac = counts[idx] / total
        if counts[idx] == 0 or frac < min_fraction:
            break
        out.append((NAMES[int(idx)], float(frac)))
    return out


def dominant_colors(
    img: Image.Image, k: int = 5, *, min_fraction: float = 0.0, max_side: int = ANALYSIS_SIDE
) -> list[tuple[str, float]]:
    """The ``k`` most common palette colours, largest first, as ``(name, fraction of pixels)``.

    Fractions are of all pixels of the downscaled copy, so they sum to 1 over all names; the
    returned ones sum to at most 1 (the rest is spread over names not returned). Names below
    ``min_fraction`` are left out (a stray 0.1% of pixels is not a colour of the image).
    """
    return ranked_colors(nearest_index(rgb_array(img, max_side)), k, min_fraction)


def region_colors(
    img: Image.Image,
    k: int = 3,
    *,
    min_fraction: float = 0.10,
    max_side: int = ANALYSIS_SIDE,
) -> tuple[list[str], list[str]]:
    """Foreground and background colour names, largest first.

    Without a segmentation model, composition is the cue: subjects are framed near the centre and
    the border is mostly background. Foreground = the central box (middle half of each side, a
    quarter of the area); background = the outer ring one eighth of each side deep (~44% of the
    area). A name must cover ``min_fraction`` of its region to be listed.
    """
    return split_regions(nearest_index(rgb_array(img, max_side)), k, min_fraction)


def split_regions(idx: np.ndarray, k: int = 3, min_fraction: float = 0.10) -> tuple[list[str], list[str]]:
    """:func:`region_colors` of an ``(H, W)`` index map from :func:`nearest_index`."""
    h, w = idx.shape
    if h == 0 or w == 0:
        return [], []
    centre = idx[h // 4 : h - h // 4, w // 4 : w - w // 4]
    dy, dx = max(1, h // 8), max(1, w // 8)
    ring_mask = np.ones((h, w), dtype=bool)
    ring_mask[dy : h - dy, dx : w - dx] = False
    ring = idx[ring_mask]
    fg = [name for name, _ in ranked_colors(centre, k, min_fraction)]
    bg = [name for name, _ in ranked_colors(ring, k, min_fraction)]
    return fg, bg
