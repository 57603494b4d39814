"""yt-dlp info dicts to table rows (items, videos, comments), the paper's selection rules, and
subtitle tracks to plain text.

One mapping for both sources: a live extraction and a saved ``.info.json`` give the same dict.
Channel and comment author ids are hashed here and never leave this module in clear; the info
dict is kept in ``raw`` without what expires or is large (format URLs, thumbnails, subtitle URLs,
HTTP headers) and without the comments (each comment keeps its own ``raw``).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from blift.collect.fields import int_field
from blift.errors import InvalidRecord
from blift.ids import author_hash, author_kind, author_salt, pack_raw, utc_from_epoch

YOUTUBE = "youtube"
PUBLIC_AVAILABILITY = frozenset({"public", "unlisted"})
_RAW_DROP = ("formats", "requested_formats", "requested_downloads", "thumbnails", "http_headers", "url",
             "manifest_url", "fragments", "fragment_base_url", "comments", "requested_subtitles", "filepath",
             "_filename", "filename", "downloader_options", "cookies")  # fmt: skip


# --------------------------------------------------------------------------------------------
# The paper's rules


@dataclass(frozen=True)
class Rules:
    """Selection applied to the metadata before any file is fetched."""

    min_views: int | None = 10_000  # keep videos with at least this many views (the paper: >10k)
    exclude_categories: tuple[str, ...] = ()  # none by default, so nothing is dropped silently
    drop_age_limited: bool = True  # age_limit >= 18
    drop_not_public: bool = True  # availability private / needs_auth / subscriber_only / premium_only
    max_duration_s: float | None = None


def rule_drop(info: dict[str, Any], rules: Rules) -> tuple[str, str] | None:
    """(reason, detail) when a rule drops the video, else None. Checked in a fixed order so a
    video failing several rules always gets the same reason."""
    availability = info.get("availability")
    if rules.drop_not_public and availability is not None and availability not in PUBLIC_AVAILABILITY:
        return "not_public", f"availability={availability}"
    age = info.get("age_limit")
    if rules.drop_age_limited and isinstance(age, (int, float)) and age >= 18:
        return "age_limited", f"age_limit={int(age)}"
    if rules.min_views:
        views = info.get("view_count")
        if views is None:
            return "unknown_views", f"no view_count; min_views={rules.min_views}"
        if int(views) < rules.min_views:
            return "few_views", f"view_count={int(views)} < {rules.min_views}"
    if rules.exclude_categories:
        wanted = {c.casefold() for c in rules.exclude_categories}
        for category in info.get("categories") or []:
            if isinstance(category, str) and category.casefold() in wanted:
                return "excluded_category", f"category={category}"
    if rules.max_duration_s is not None:
        duration = info.get("duration")
        if isinstance(duration, (int, float)) and duration > rules.max_duration_s:
            return "too_long", f"duration={duration:g}s > {rules.max_duration_s:g}s"
    return None


# --------------------------------------------------------------------------------------------
# Field helpers


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return str(value).encode("utf-8", "replace").decode("utf-8")


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _date(upload_date: Any) -> datetime | None:
    if not isinstance(upload_date, str) or not re.fullmatch(r"\d{8}", upload_date):
        return None
    try:
        return datetime.strptime(upload_date, "%Y%m%d").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def _time(info: dict[str, Any], field: str, where: str) -> datetime | None:
    try:
        return utc_from_epoch(info.get(field))
    except (TypeError, ValueError, OverflowError, OSError):
        raise InvalidRecord(f"{where}: field {field!r}: expected epoch seconds, got {info.get(field)!r:.60}") from None


def created_at(info: dict[str, Any], where: str) -> datetime | None:
    """Upload time: ``timestamp`` (exact) else ``release_timestamp``, else ``upload_date`` (a day)."""
    return _time(info, "timestamp", where) or _time(info, "release_timestamp", where) or _date(info.get("upload_date"))


def heatmap(info: dict[str, Any]) -> list[dict[str, float]] | None:
    """YouTube's most-replayed graph as {start_s, end_s, value}; None when YouTube gives none."""
    points = info.get("heatmap")
    if not isinstance(points, list) or not points:
        return None
    out = []
    for p in points:
        if not isinstance(p, dict):
            continue
        start, end, value = _float(p.get("start_time")), _float(p.get("end_time")), _float(p.get("value"))
        if start is None or end is None or value is None:
            continue
        out.append({"start_s": start, "end_s": end, "value": value})
    return out or None


def chapters(info: dict[str, Any]) -> list[dict[str, Any]] | None:
    items = info.get("chapters")
    if not isinstance(items, list) or not items:
        return None
    out = []
    for c in items:
        if isinstance(c, dict) and _float(c.get("start_time")) is not None:
            out.append({"start_s": _float(c.get("start_time")), "end_s": _float(c.get("end_time")),
                        "title": _text(c.get("title"))})
    return out or None


def _strings(value: Any) -> list[str] | None:
    if not isinstance(value, list):
        return None
    return [str(v) for v in value if v is not None]


def raw_info(info: dict[str, Any]) -> bytes:
    """The info dict for ``raw``: expiring or bulky parts dropped, subtitle tracks reduced to
    their languages and formats (no URLs), private ``_``/``__`` keys removed, authors hashed."""
    slim = {k: v for k, v in info.items() if not (k.startswith("_") and k != "_type")}
    for key in ("subtitles", "automatic_captions"):
        tracks = slim.get(key)
        if isinstance(tracks, dict):
            slim[key] = {lang: sorted({str(f.get("ext")) for f in fmts if isinstance(f, dict)})
                         for lang, fmts in tracks.items() if isinstance(fmts, list)}
    return pack_raw(slim, drop_keys=_RAW_DROP)


# --------------------------------------------------------------------------------------------
# Rows


def item_row(info: dict[str, Any], *, uid: str, item_id: str, source: str, collected_at: datetime) -> dict[str, Any]:
    """An ``items`` row; ``source`` is ``api`` (live extraction) or ``info_json``."""
    where = f"video {item_id}"
    page = _text(info.get("webpage_url") or info.get("original_url"))
    age = int_field(info, "age_limit", where)
    channel = info.get("channel") or info.get("uploader")
    return {
        "uid": uid,
        "platform": YOUTUBE,
        "item_id": item_id,
        "source": source,
        "url": page,
        "permalink": page,
        "title": _text(info.get("title")),
        "text": _text(info.get("description")),
        "community": _text(channel),
        "author_hash": author_hash(info.get("channel_id") or info.get("uploader_id") or channel),
        "created_at": created_at(info, where),
        "collected_at": collected_at,
        "media_kind": "video",
        "media_urls": [page] if page else [],
        "post_hint": None,
        "flair": None,
        "over_18": None if age is None else age >= 18,
        "spoiler": None,
        "license": _text(info.get("license")),
        "score": None,
        "upvote_ratio": None,
        "num_comments": None,
        "view_count": int_field(info, "view_count", where),
        "like_count": int_field(info, "like_count", where),
        "comment_count": int_field(info, "comment_count", where),
        "subscriber_count": int_field(info, "channel_follower_count", where),
        "heatmap": heatmap(info),
        "raw": raw_info(info),
    }


FILE_COLUMNS = ("format_id", "file_status", "file_reason", "file_error", "file_path", "file_sha256", "file_bytes")


def video_row(info: dict[str, Any], *, uid: str, source_info: str, subtitles: list[dict[str, str]] | None,
              comments_estimated: bool | None, file: dict[str, Any], counts: bool = False) -> dict[str, Any]:
    """A ``videos`` row; ``file`` holds the download result (FILE_COLUMNS). ``counts``: also the
    video's own behavior (views, likes, comments, heatmap), for a video another platform's item
    links to (a YouTube item keeps these in its ``items`` row)."""
    where = f"video {uid}"
    unknown = set(file) - set(FILE_COLUMNS)
    if unknown:
        raise KeyError(f"not file columns: {sorted(unknown)}")
    row = {
        "uid": uid,
        "duration_s": _float(info.get("duration")),
        "upload_date": _text(info.get("upload_date")),
        "channel_id": _text(info.get("channel_id")),
        "channel_name": _text(info.get("channel") or info.get("uploader")),
        "channel_follower_count": int_field(info, "channel_follower_count", where),
        "categories": _strings(info.get("categories")),
        "tags": _strings(info.get("tags")),
        "age_limit": int_field(info, "age_limit", where),
        "availability": _text(info.get("availability")),
        "language": _text(info.get("language")),
        "chapters": chapters(info),
        "subtitles": subtitles or None,
        "comment_times_estimated": comments_estimated,
        "source_info": source_info,
        **dict.fromkeys(FILE_COLUMNS),
    }
    if counts:
        row.update(view_count=int_field(info, "view_count", where), like_count=int_field(info, "like_count", where),
                   comment_count=int_field(info, "comment_count", where), heatmap=heatmap(info))
    row.update(file)
    return row


def comment_rows(info: dict[str, Any], *, uid: str, collected_at: datetime,
                 limit: int | None) -> tuple[list[dict[str, Any]], int]:
    """``comments`` rows (YouTube threads are two levels: root and replies). Returns (rows,
    number left out by ``limit``). Comments without an id are skipped: they cannot be keyed."""
    comments = info.get("comments")
    if not isinstance(comments, list):
        return [], 0
    salt = author_salt()
    rows: list[dict[str, Any]] = []
    capped = 0
    for c in comments:
        if not isinstance(c, dict) or not c.get("id"):
            continue
        if limit is not None and len(rows) >= limit:
            capped += 1
            continue
        parent = c.get("parent")
        is_root = parent in (None, "", "root")
        author = c.get("author")
        try:
            created = utc_from_epoch(c.get("timestamp"))
        except (TypeError, ValueError, OverflowError, OSError):
            created = None
        rows.append({
            "uid": uid,
            "platform": YOUTUBE,
            "comment_id": str(c["id"]),
            "parent_id": None if is_root else str(parent),
            "depth": 0 if is_root else 1,
            "text": _text(c.get("text")),
            "score": None,
            "like_count": int_field(c, "like_count", f"comment {c['id']}"),
            "author_hash": author_hash(c.get("author_id") or author, salt),
            "author_kind": author_kind(author) if author is not None else "deleted",
            "created_at": created,
            "is_submitter": None if c.get("author_is_uploader") is None else bool(c.get("author_is_uploader")),
            "distinguished": None,
            "stickied": None if c.get("is_pinned") is None else bool(c.get("is_pinned")),
            "collected_at": collected_at,
            "raw": pack_raw(c, salt=salt),
        })
    return rows, capped


def comment_times_estimated(info: dict[str, Any]) -> bool | None:
    """YouTube shows "11 days ago", and yt-dlp turns that into an estimated ``timestamp``."""
    comments = info.get("comments")
    if not isinstance(comments, list) or not comments:
        return None
    if str(info.get("extractor_key") or info.get("extractor") or "").lower().startswith("youtube"):
        return True
    return any(isinstance(c, dict) and c.get("_time_text") for c in comments)


# --------------------------------------------------------------------------------------------
# Subtitles


SUBTITLE_EXTS = ("vtt", "json3")


@dataclass(frozen=True)
class SubtitleTrack:
    lang: str
    kind: str  # manual | automatic
    ext: str
    url: str


def pick_subtitles(info: dict[str, Any], langs: list[str]) -> list[SubtitleTrack]:
    """At most one manual and one automatic track per wanted language ("en" also takes "en-US"
    and YouTube's "en-orig"), in a format we can read (vtt preferred, else json3)."""
    picked: list[SubtitleTrack] = []
    for kind, key in (("manual", "subtitles"), ("automatic", "automatic_captions")):
        tracks = info.get(key)
        if not isinstance(tracks, dict):
            continue
        for want in langs:
            candidates = [lang for lang in tracks if lang == want] + sorted(
                lang for lang in tracks if isinstance(lang, str) and lang.startswith(want + "-"))
            for lang in candidates:
                formats = [f for f in tracks.get(lang) or [] if isinstance(f, dict) and f.get("url")]
                chosen = next((f for ext in SUBTITLE_EXTS for f in formats if f.get("ext") == ext), None)
                if chosen is not None:
                    picked.append(SubtitleTrack(lang, kind, str(chosen["ext"]), str(chosen["url"])))
                    break
    return picked


_VTT_TIMING = re.compile(r"-->")
_TAG = re.compile(r"<[^>]+>")


def _dedupe(lines: list[str]) -> str:
    """YouTube's rolling automatic captions repeat each line in the next cue: keep one."""
    out: list[str] = []
    for line in lines:
        line = re.sub(r"\s+", " ", line).strip()
        if line and (not out or out[-1] != line):
            out.append(line)
    return "\n".join(out)


def vtt_to_text(body: str) -> str:
    lines: list[str] = []
    blocks = re.split(r"\r?\n\r?\n", body.replace("\ufeff", ""))
    for block in blocks:
        rows = block.splitlines()
        if not rows or rows[0].startswith(("WEBVTT", "NOTE", "STYLE", "REGION")):
            continue
        timing = next((i for i, r in enumerate(rows) if _VTT_TIMING.search(r)), None)
        if timing is None:
            continue
        for r in rows[timing + 1 :]:
            lines.append(html.unescape(_TAG.sub("", r)))
    return _dedupe(lines)


def json3_to_text(body: str | bytes) -> str:
    data = orjson.loads(body)
    lines: list[str] = []
    for event in data.get("events") or []:
        segs = event.get("segs") if isinstance(event, dict) else None
        if segs:
            lines.extend("".join(str(s.get("utf8", "")) for s in segs if isinstance(s, dict)).splitlines())
    return _dedupe(lines)


def subtitle_text(body: bytes, ext: str) -> str:
    """Plain text of a subtitle file. Raises ValueError on a body that is not that format."""
    if ext == "json3":
        try:
            return json3_to_text(body)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"json3 subtitles are not JSON: {exc}") from None
    text = body.decode("utf-8", "replace")
    if not text.lstrip("\ufeff").startswith("WEBVTT"):
        raise ValueError("vtt subtitles do not start with WEBVTT")
    return vtt_to_text(text)
