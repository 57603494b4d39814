"""One row of LCBM's Content Behavior Corpus as blift rows.

A CBC row (``video_id``, ``asr_raw``, ``asr_grouped``, ``ocr``, ``blip2_annotations``,
``replay_graphs``, ``likes``, ``views``, ``metadata``, ``channel_data``) becomes:

* ``items``: uid ``youtube:<video_id>`` (the uid ``youtube.collect`` gives the same video),
  platform ``youtube``, source ``cbc``, media_kind ``video``, the watch URL as url, permalink and
  only media URL; title and text (description) from ``metadata``, community = the channel's
  ``company_name``, author_hash = the salted hash of ``channel_id`` (as ``youtube.collect``
  hashes it), created_at from ``metadata.date``, view_count / like_count / subscriber_count from
  ``views`` / ``likes`` / ``channel_data.subscribers`` as whole numbers
  (:mod:`~blift.collect.cbc.values`), heatmap from the replay markers
  (:mod:`~blift.collect.cbc.replay`);
* ``videos``: duration_s = ``metadata.length``, upload_date ``YYYYMMDD``, the channel's id, name
  and subscribers, ``file_status: skipped`` / ``file_reason: not_fetched`` (this source fetches
  nothing; ``media.download`` records the video as skipped) and ``source_info: cbc``;
* ``behavior``: ``likes`` and ``views`` as counts (null when the corpus has none);
* ``transcripts``: :mod:`~blift.collect.cbc.transcript`; ``captions`` and ``attributes``:
  :mod:`~blift.collect.cbc.scene_lists`; no ``scenes`` (their times are not published) and no
  ``comments`` (the corpus has none);
* ``video_refs``: the video as a reference (uid, watch URL, its row in the input as rank), so
  ``youtube.collect`` can fetch the videos themselves when a pipeline asks for it.

What ``raw`` keeps (``items.raw``, authors hashed): every column and struct field no table
holds as published, so nothing of the corpus is lost: ``asr_grouped``, ``replay_graphs`` without
its markers (``multiplier``, ``original_marker_duration``, ``processed_marker_duration``) and the
markers too when the heatmap differs from them (rescaled or a marker dropped),
``metadata.date`` as written, ``channel_data.channel_id``, ``blip2_annotations.objects`` and
``.actions`` (split into keywords, not kept whole anywhere else), the published ``likes`` /
``views`` / ``subscribers`` when they were not kept as they were (negative, fractional), the
per-scene lists (``blip2_annotations.captions``, ``ocr``) when they disagree in length, any
column or struct field the corpus does not document, and ``_source`` (the Hub dataset, split and
revision read).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from blift.collect.cbc.replay import heatmap
from blift.collect.cbc.scene_lists import scene_rows
from blift.collect.cbc.transcript import transcript_row
from blift.collect.cbc.values import count, day, seconds, struct, text
from blift.collect.table.mapping import MapContext, pack_columns, parse_id
from blift.errors import InvalidRecord
from blift.ids import author_hash

PLATFORM = "youtube"
SOURCE = "cbc"
WATCH_URL = "https://www.youtube.com/watch?v={}"
#: The corpus's columns, as published.
COLUMNS = ("video_id", "asr_raw", "asr_grouped", "ocr", "blip2_annotations", "replay_graphs", "likes", "views",
           "metadata", "channel_data")
#: Output tables, in the order a row's rows are handed on.
TABLES = ("items", "videos", "behavior", "transcripts", "captions", "attributes", "video_refs")
_VIDEO_ID = re.compile(r"[A-Za-z0-9_-]+")
# Struct fields a table holds as published; every other field stays in raw.
_HELD = {"metadata": ("title", "description", "length"), "channel_data": ("company_name", "subscribers"),
         "blip2_annotations": ("captions",), "replay_graphs": ("markers",)}


@dataclass
class CbcRecord:
    """One video's rows per output table, and what mapping it counted (added to the stream's
    counters only when the row is kept, not for a duplicate)."""

    uid: str
    video_id: str
    tables: dict[str, list[dict[str, Any]]]
    counts: Counter[str] = field(default_factory=Counter)


def video_id_of(row: dict[str, Any], where: str) -> str:
    video_id = parse_id(row.get("video_id"), where, "video_id")
    if not _VIDEO_ID.fullmatch(video_id):
        raise InvalidRecord(f"{where}: column 'video_id': {video_id!r:.60} is not a YouTube video id "
                            "(letters, digits, '-' and '_')", error_type="bad_id")
    return video_id


def cbc_rows(row: dict[str, Any], ctx: MapContext, where: str, *, request_id: str, rank: int,
             max_keywords: int) -> CbcRecord:
    """Map one CBC row; raises :class:`~blift.errors.InvalidRecord` naming ``where`` (the input and
    row) and the column of a value that cannot be read."""
    counts: Counter[str] = Counter()
    video_id = video_id_of(row, where)
    uid, url = f"{PLATFORM}:{video_id}", WATCH_URL.format(video_id)
    metadata = struct(row.get("metadata"), where, "metadata")
    channel = struct(row.get("channel_data"), where, "channel_data")
    blip2 = struct(row.get("blip2_annotations"), where, "blip2_annotations")
    replay = struct(row.get("replay_graphs"), where, "replay_graphs")

    likes = count(row.get("likes"), where, "likes", counts)
    views = count(row.get("views"), where, "views", counts)
    subscribers = count(channel.get("subscribers"), where, "channel_data.subscribers", counts)
    duration = seconds(metadata.get("length"), where, "metadata.length", counts)
    created = day(metadata.get("date"), where, "metadata.date", counts)
    channel_id = text(channel.get("channel_id"), where, "channel_data.channel_id")
    company = text(channel.get("company_name"), where, "channel_data.company_name")
    graph = heatmap(replay.get("markers"), where)
    transcript = transcript_row(uid, row.get("asr_raw"), duration, where)
    scenes = scene_rows(uid, blip2, row.get("ocr"), row.get("asr_grouped"), where, max_keywords)

    if graph.points is None:
        counts["no_heatmap"] += 1
    if graph.rescaled_by is not None:
        counts["heatmap_rescaled"] += 1
    for reason, n in graph.dropped.items():
        counts[f"markers_dropped:{reason}"] += n
    if graph.points and duration is not None and graph.points[-1]["end_s"] > duration + 1.0:
        counts["heatmap_past_duration"] += 1  # marker times beyond the video: a unit to check, kept as read
    if scenes.misaligned:
        counts["scene_lists_misaligned"] += 1
    if scenes.empty_captions:
        counts["empty_caption"] += scenes.empty_captions
    counts[f"transcript_{transcript['status']}"] += 1

    item: dict[str, Any] = {
        "uid": uid, "platform": PLATFORM, "item_id": video_id, "source": SOURCE, "url": url, "permalink": url,
        "title": text(metadata.get("title"), where, "metadata.title"),
        "text": text(metadata.get("description"), where, "metadata.description"),
        "community": company, "author_hash": author_hash(channel_id, ctx.salt) if channel_id else None,
        "created_at": created, "collected_at": ctx.collected_at, "media_kind": "video", "media_urls": [url],
        "post_hint": None, "flair": None, "over_18": None, "spoiler": None, "license": None,
        "score": None, "upvote_ratio": None, "num_comments": None, "view_count": views, "like_count": likes,
        "comment_count": None, "subscriber_count": subscribers, "heatmap": graph.points,
        "raw": pack_columns(_raw(row, ctx, metadata, channel, blip2, replay, graph.changed, scenes.misaligned,
                                 {"likes": likes, "views": views}, subscribers), ctx.salt),
    }
    video: dict[str, Any] = {
        "uid": uid, "duration_s": duration, "upload_date": created.strftime("%Y%m%d") if created else None,
        "channel_id": channel_id, "channel_name": company, "channel_follower_count": subscribers,
        "file_status": "skipped", "file_reason": "not_fetched", "source_info": SOURCE,
    }
    behavior = [{"uid": uid, "name": name, "value": None if value is None else float(value), "kind": "count",
                 "scale_min": None, "scale_max": None, "collected_at": ctx.collected_at}
                for name, value in (("likes", likes), ("views", views))]
    ref: dict[str, Any] = {"uid": uid, "platform": PLATFORM, "item_id": video_id, "request_id": request_id,
                           "rank": rank, "url": url}
    tables: dict[str, list[dict[str, Any]]] = {
        "items": [item], "videos": [video], "behavior": behavior, "transcripts": [transcript],
        "captions": scenes.captions, "attributes": scenes.attributes, "video_refs": [ref]}
    return CbcRecord(uid, video_id, tables, counts)


def _raw(row: dict[str, Any], ctx: MapContext, metadata: dict[str, Any], channel: dict[str, Any],
         blip2: dict[str, Any], replay: dict[str, Any], heatmap_changed: bool, misaligned: bool,
         counts_kept: dict[str, int | None], subscribers: int | None) -> dict[str, Any]:
    """What of the row no table holds as published (see the module docstring)."""
    raw: dict[str, Any] = {k: v for k, v in row.items() if k not in COLUMNS}  # undocumented columns
    if row.get("asr_grouped") is not None:
        raw["asr_grouped"] = row["asr_grouped"]
    for name, value in (("metadata", metadata), ("channel_data", channel), ("blip2_annotations", blip2),
                        ("replay_graphs", replay)):
        rest = {k: v for k, v in value.items() if k not in _HELD[name]}
        if rest:
            raw[name] = rest
    if heatmap_changed and replay.get("markers") is not None:
        raw.setdefault("replay_graphs", {})["markers"] = replay["markers"]
    if misaligned:
        raw.setdefault("blip2_annotations", {})["captions"] = blip2.get("captions")
        raw["ocr"] = row.get("ocr")
    for name, kept in counts_kept.items():
        if _altered(row.get(name), kept):
            raw[name] = row[name]
    if _altered(channel.get("subscribers"), subscribers):
        raw.setdefault("channel_data", {})["subscribers"] = channel["subscribers"]
    if ctx.raw_extra:
        for key, value in ctx.raw_extra.items():
            raw.setdefault(key, value)
    return raw


def _altered(published: Any, kept: int | None) -> bool:
    """Whether a published count was not kept as it was (negative, fractional); a missing or NaN
    one is null either way."""
    if kept is None:
        return published is not None and not (isinstance(published, float) and published != published)
    try:
        return float(published) != kept
    except (TypeError, ValueError):
        return True
