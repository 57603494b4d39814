"""CBC's replay graph (``replay_graphs.markers``) as blift's ``heatmap``: ``{start_s, end_s, value}``
with value in 0..1, as yt-dlp gives YouTube's "most replayed" graph.

The scale of ``replay_score`` is not documented (LCBM's paper and the dataset card say nothing;
``multiplier`` and the marker durations beside it are unexplained too). YouTube's own graph is
normalised so its highest point is 1, and yt-dlp passes that on. So:

* when every score of a video lies within 0..1, the scores are kept as they are;
* otherwise each score is divided by that video's highest score (the video's own maximum
  becomes 1, the shape is kept), counted as ``heatmap_rescaled``, and the original markers stay
  in the item's ``raw`` (``replay_graphs.markers``) so the published values are never lost.

Marker times are taken as seconds (as YouTube's graph and ``asr_raw`` give them). A marker that
cannot be a point of the graph is dropped and counted under its reason (``markers_dropped:<reason>``;
the originals stay in ``raw``): ``bad_number`` (a start, end or score that is missing, NaN,
infinite or not a number), ``end_not_after_start``, ``negative_time``, ``negative_score``. A
marker that is not a struct at all is a malformed row (an ``errors`` row). ``multiplier`` and the
marker durations are not applied to anything: they stay in ``raw``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from blift.collect.cbc.values import number, records
from blift.errors import InvalidRecord

COLUMN = "replay_graphs.markers"


@dataclass
class Heatmap:
    """The graph (None when no marker is usable), the divisor applied (None: kept as published)
    and the markers left out by reason."""

    points: list[dict[str, float]] | None
    rescaled_by: float | None = None
    dropped: Counter[str] = field(default_factory=Counter)

    @property
    def changed(self) -> bool:
        """Whether the graph differs from the published markers (beyond their order)."""
        return self.rescaled_by is not None or bool(self.dropped)


def heatmap(markers: Any, where: str) -> Heatmap:
    """The heatmap of one video's markers; raises InvalidRecord for a marker that is not a struct."""
    points: list[dict[str, float]] = []
    dropped: Counter[str] = Counter()
    for i, marker in enumerate(records(markers, where, COLUMN)):
        at = f"{COLUMN}[{i}]"
        try:
            start = number(marker.get("start"), where, f"{at}.start")
            end = number(marker.get("end"), where, f"{at}.end")
            score = number(marker.get("replay_score"), where, f"{at}.replay_score")
        except InvalidRecord:
            start = end = score = None
        if start is None or end is None or score is None:
            dropped["bad_number"] += 1
        elif start < 0:
            dropped["negative_time"] += 1
        elif end <= start:
            dropped["end_not_after_start"] += 1
        elif score < 0:
            dropped["negative_score"] += 1
        else:
            points.append({"start_s": start, "end_s": end, "value": score})
    if not points:
        return Heatmap(None, None, dropped)
    points.sort(key=lambda p: (p["start_s"], p["end_s"]))
    top = max(p["value"] for p in points)
    if top <= 1.0:
        return Heatmap(points, None, dropped)
    for p in points:
        p["value"] = p["value"] / top
    return Heatmap(points, top, dropped)
