"""Rows of the ``scene_behavior`` table: each scene's replay values and the words said in it.

The video records already map the item's "most replayed" heatmap onto its scenes
(:func:`blift.stages.instruct.replay.scene_replay`) and the transcript onto its scenes
(:func:`blift.stages.instruct.video_verbalize.align_speech`). The same two functions fill this
table, one row per ``scenes`` row of every item the stage reads, whether or not the item gets
records (a video dropped for ``few_comments`` still has scenes, and the release's ``scenes``
config shows them): the release joins the table instead of recomputing it, so the per-scene
values a release holds are the ones the run computed.

Rules (those of the records):

* Scenes are grouped by ``media_index`` and taken in ``scene`` order; a media file's scenes are
  aligned together (a word goes to the scene in which it starts, see ``align_speech``).
* ``replay_mean`` / ``replay_peak`` follow :mod:`blift.stages.instruct.replay`; both are null
  without a heatmap bin over the scene.
* ``transcript`` is the scene's words joined by spaces when the media file's first
  ``transcripts`` row has status ``ok`` (``""`` for a scene where nothing was said), else null.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from blift.stages.instruct.replay import scene_replay
from blift.stages.instruct.video_verbalize import align_speech

DATASET = "scene_behavior"


def scene_spans(scenes: Sequence[Mapping[str, Any]]) -> list[tuple[float, float]]:
    """``(start_s, end_s)`` of each scene row, in the order given (what both helpers take)."""
    return [(float(s["start_s"]), float(s["end_s"])) for s in scenes]


def scene_words(transcript: Mapping[str, Any] | None, spans: Sequence[tuple[float, float]]) -> list[str | None]:
    """The words said in each scene, joined; all null unless the transcript's status is ``ok``."""
    if transcript is None or transcript.get("status") != "ok":
        return [None] * len(spans)
    return [" ".join(said) for said in align_speech(transcript.get("segments"), spans)]


def scene_behavior_rows(uid: str, heatmap: Sequence[Mapping[str, Any]] | None,
                        scenes: Sequence[Mapping[str, Any]], transcripts: Sequence[Mapping[str, Any]]
                        ) -> list[dict[str, Any]]:
    """One ``scene_behavior`` row per scene row of one item (its ``scenes`` and ``transcripts``
    rows, every media file), in ``(media_index, scene)`` order."""
    by_media: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for scene in scenes:
        by_media[scene["media_index"]].append(scene)
    rows = []
    for media_index in sorted(by_media):
        group = sorted(by_media[media_index], key=lambda s: s["scene"])
        spans = scene_spans(group)
        transcript = next((t for t in transcripts if t.get("media_index") == media_index), None)
        for scene, replay, words in zip(group, scene_replay(heatmap, spans), scene_words(transcript, spans)):
            rows.append({"uid": uid, "media_index": media_index, "scene": scene["scene"], "replay_mean": replay.mean,
                         "replay_peak": replay.peak, "transcript": words})
    return rows
