"""YouTube's "most replayed" graph mapped onto a video's scenes: per-scene replay targets.

The heatmap is a list of bins ``{start_s, end_s, value}`` (value 0..1; YouTube sends about 100
evenly spaced bins and scales the busiest one to 1). Scenes are ``(start_s, end_s)`` intervals.
For each scene:

* **mean** – the time-weighted mean of the bin values over the part of the scene that the
  heatmap covers: ``sum(overlap_i * value_i) / sum(overlap_i)``. Time not covered by any bin (a
  gap between bins, or past the heatmap's end) is left out of both sums rather than counted as
  zero: a gap means "no data", not "nobody replayed it".
* **peak** – the largest value among the bins that overlap the scene.
* both are ``None`` when no bin overlaps the scene (the scene lies in a gap or past the end, or
  the heatmap is empty). A zero-length scene takes the value of the bin holding its start.

The **most replayed** scenes are the ``k`` scenes with the highest mean (``None`` never
qualifies), ties broken by the earlier scene; they are returned most replayed first.

Everything here is a pure function of plain numbers so the values can be checked by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence


@dataclass(frozen=True)
class Bin:
    """One heatmap bin."""

    start_s: float
    end_s: float
    value: float


@dataclass(frozen=True)
class SceneReplay:
    """Replay statistics of one scene (``None`` where the heatmap says nothing about it)."""

    mean: float | None
    peak: float | None
    covered_s: float  # seconds of the scene that the heatmap covers


def bins_of(heatmap: Iterable[Mapping[str, Any]] | None) -> list[Bin]:
    """Heatmap rows as sorted :class:`Bin` s; rows with a missing or non-finite field, or an
    end before the start, are skipped (they carry no usable time span)."""
    out = []
    for row in heatmap or []:
        try:
            start, end, value = float(row["start_s"]), float(row["end_s"]), float(row["value"])
        except (KeyError, TypeError, ValueError):
            continue
        if not (start == start and end == end and value == value) or end < start:  # NaN or reversed
            continue
        out.append(Bin(start, end, value))
    out.sort(key=lambda b: (b.start_s, b.end_s))
    return out


def scene_replay(heatmap: Iterable[Mapping[str, Any]] | None,
                 scenes: Sequence[tuple[float, float]]) -> list[SceneReplay]:
    """Mean and peak replay value of each scene (see the module docstring for the rules)."""
    bins = bins_of(heatmap)
    out = []
    for start, end in scenes:
        if end <= start:  # zero-length scene: the bin holding its start, if any
            hit = next((b for b in bins if b.start_s <= start < b.end_s or b.start_s == b.end_s == start), None)
            out.append(SceneReplay(hit.value, hit.value, 0.0) if hit else SceneReplay(None, None, 0.0))
            continue
        weighted = covered = 0.0
        peak: float | None = None
        for b in bins:
            if b.start_s >= end:
                break
            overlap = min(end, b.end_s) - max(start, b.start_s)
            if overlap <= 0:
                continue
            weighted += overlap * b.value
            covered += overlap
            peak = b.value if peak is None else max(peak, b.value)
        out.append(SceneReplay(weighted / covered, peak, covered) if covered > 0 else SceneReplay(None, None, 0.0))
    return out


def most_replayed(means: Sequence[float | None], k: int) -> list[int]:
    """Positions of the ``k`` highest means, highest first; ties go to the earlier position."""
    ranked = sorted((i for i, m in enumerate(means) if m is not None), key=lambda i: (-means[i], i))  # type: ignore[operator]
    return ranked[: max(0, k)]
