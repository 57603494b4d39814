"""Reddit JSON to table rows: one mapping for every source (API, dumps, replays).

Input is the plain ``data`` dict of a ``t3`` (submission) or ``t1`` (comment) as Reddit's API
and the Pushshift / Arctic-Shift dumps both give it. Author names are hashed here and never
leave this module in clear; the whole dict is kept (compressed, authors scrubbed) in ``raw``.
"""

from __future__ import annotations

import html
import re
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from blift.collect.fields import float_field, int_field
from blift.errors import InvalidRecord
from blift.ids import author_hash, author_kind, author_salt, pack_raw, utc_from_epoch

REDDIT = "https://www.reddit.com"
IMAGE_HOSTS = {"i.redd.it", "i.imgur.com", "preview.redd.it", "i.reddituploads.com"}
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp")
VIDEO_EXTS = (".gifv", ".mp4", ".webm", ".mov")
YOUTUBE_WATCH = "https://www.youtube.com/watch?v={}"
_YOUTUBE_HOST = re.compile(r"^(?:(?:www|m|music)\.)?youtube(?:-nocookie)?\.com$|^(?:www\.)?youtu\.be$")
_YOUTUBE_PATH = re.compile(r"^/(?:shorts|embed|live|v)/([A-Za-z0-9_-]{11})(?:[/?#]|$)")
_YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_IFRAME_SRC = re.compile(r"""\ssrc\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_THUMBNAIL_ID = re.compile(r"^https?://i\d?\.ytimg\.com/vi(?:_webp)?/([A-Za-z0-9_-]{11})/")


def _time(data: dict[str, Any], field: str, where: str) -> datetime | None:
    try:
        return utc_from_epoch(data.get(field))
    except (TypeError, ValueError, OverflowError, OSError):
        raise InvalidRecord(f"{where}: field {field!r}: expected epoch seconds, got {data.get(field)!r:.60}") from None


def _text(value: Any) -> str | None:
    """Text as valid UTF-8: lone surrogates (seen in old dumps) become U+FFFD instead of failing writes."""
    if value is None:
        return None
    text = str(value)
    return text.encode("utf-8", "replace").decode("utf-8")


def _strip_prefix(thing_id: str | None) -> str | None:
    if not thing_id:
        return None
    return thing_id.split("_", 1)[1] if "_" in thing_id[:3] else thing_id


def _bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def youtube_id(url: str) -> str | None:
    """The video id of a YouTube video URL (watch, youtu.be, shorts, embed, live; www, m, music
    and nocookie hosts), else None. A light check on purpose: dumps map millions of posts, and
    the YouTube stages resolve the link again with yt-dlp's own extractor."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not _YOUTUBE_HOST.match(host):
        return None
    if host.endswith("youtu.be"):
        vid = parts.path.strip("/").split("/", 1)[0]
        return vid if _YOUTUBE_ID.match(vid) else None
    if parts.path.rstrip("/") == "/watch":
        vid = (parse_qs(parts.query).get("v") or [""])[0]
        return vid if _YOUTUBE_ID.match(vid) else None
    m = _YOUTUBE_PATH.match(parts.path)
    return m.group(1) if m and m.group(1) != "videoseries" else None  # embed/videoseries?list=: a playlist


def _oembed_youtube(data: dict[str, Any]) -> str | None:
    """The YouTube video Reddit embedded for a post (``media``/``secure_media`` of type
    youtube.com) when the post's own URL does not name it (an attribution link, a shortener):
    from the oembed iframe's ``src``, else its thumbnail URL."""
    for key in ("secure_media", "media"):
        media = data.get(key)
        if not isinstance(media, dict):
            continue
        oembed = media.get("oembed")
        if not isinstance(oembed, dict):
            continue
        kind = str(media.get("type") or "").lower()
        provider = str(oembed.get("provider_name") or "").lower()
        if kind not in ("youtube.com", "m.youtube.com", "youtu.be") and provider != "youtube":
            continue
        src = _IFRAME_SRC.search(html.unescape(str(oembed.get("html") or "")))
        vid = youtube_id(html.unescape(src.group(1))) if src else None
        if vid is None:
            thumb = _THUMBNAIL_ID.match(html.unescape(str(oembed.get("thumbnail_url") or "")))
            vid = thumb.group(1) if thumb else None
        if vid is not None:
            return YOUTUBE_WATCH.format(vid)
    return None


def reddit_video(data: dict[str, Any]) -> dict[str, Any] | None:
    """The ``reddit_video`` of a submission hosted on v.redd.it: ``dash_url`` (an MPD manifest,
    separate video and audio), ``hls_url``, ``fallback_url`` (video only), ``duration`` (s),
    ``width``, ``height``, ``has_audio``, ``is_gif``. Looked for in ``secure_media``, ``media``, then
    in the crossposted parent's (a crosspost carries its parent's video). None when absent."""
    parents = data.get("crosspost_parent_list")
    for post in (data, *(parents[:1] if isinstance(parents, list) else ())):
        if not isinstance(post, dict):
            continue
        for key in ("secure_media", "media"):
            holder = post.get(key)
            video = holder.get("reddit_video") if isinstance(holder, dict) else None
            if isinstance(video, dict) and any(isinstance(video.get(k), str) and video[k]
                                               for k in ("dash_url", "fallback_url")):
                return video
    return None


def video_urls(data: dict[str, Any], url: str) -> list[str]:
    """``media_urls`` of a video post, which ``media.download`` fetches: Reddit's DASH manifest
    when the post has one (video and audio; ``media.download`` reads the fallback and the
    duration from ``raw`` through :func:`reddit_video`), else its video-only fallback file, else
    for a bare ``https://v.redd.it/<id>`` link that video's manifest at Reddit's fixed place,
    else the link itself (a ``.gifv``/``.mp4`` file, or a page such as a YouTube watch URL)."""
    video = reddit_video(data)
    if video is not None:
        dash = video.get("dash_url")
        return [html.unescape(dash if isinstance(dash, str) and dash else str(video["fallback_url"]))]
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if parts.hostname == "v.redd.it" and len(segments) == 1:
        return [f"https://v.redd.it/{segments[0]}/DASHPlaylist.mpd"]
    return [url] if url else []


def classify_media(data: dict[str, Any]) -> tuple[str, list[str]]:
    """(media_kind, media_urls) of a submission: image, gallery, video, text, link or other.

    A link to a YouTube video is a video whatever ``post_hint`` says (old posts and dumps often
    have none): its URL as posted, or the watch URL of the video Reddit embedded for it."""
    if data.get("is_gallery") or data.get("gallery_data"):
        meta = data.get("media_metadata") or {}
        order = [g.get("media_id") for g in (data.get("gallery_data") or {}).get("items", [])] or list(meta)
        urls = []
        for media_id in order:
            entry = meta.get(media_id) or {}
            if entry.get("status", "valid") != "valid" or entry.get("e", "Image") not in ("Image", "AnimatedImage"):
                continue
            source = entry.get("s") or {}
            url = source.get("u") or source.get("gif")
            if url:
                urls.append(html.unescape(url))
        return ("gallery", urls) if urls else ("other", [])
    url = html.unescape(data.get("url_overridden_by_dest") or data.get("url") or "")
    if not data.get("is_self"):
        if youtube_id(url):
            return "video", [url]
        embedded = _oembed_youtube(data)
        if embedded:
            return "video", [embedded]
    parts = urlsplit(url)
    path = parts.path.lower()
    if (data.get("is_video") or data.get("post_hint") in ("hosted:video", "rich:video") or path.endswith(VIDEO_EXTS)
            or parts.hostname == "v.redd.it" or reddit_video(data) is not None):  # a crosspost: its parent's video
        return "video", video_urls(data, url)
    if data.get("is_self"):
        return "text", []
    if data.get("post_hint") == "image" or path.endswith(IMAGE_EXTS) or (
        parts.hostname in IMAGE_HOSTS and not path.endswith(VIDEO_EXTS)
    ):
        return "image", [url]
    return ("link", [url]) if url else ("other", [])


def item_row(data: dict[str, Any], *, source: str, collected_at: datetime) -> dict[str, Any]:
    """An ``items`` row from a submission dict. Raises InvalidRecord naming the bad field."""
    item_id = _strip_prefix(data.get("id") or data.get("name"))
    where = f"submission {item_id or '?'}"
    if not item_id:
        raise InvalidRecord("submission: field 'id' is missing")
    kind, urls = classify_media(data)
    permalink = data.get("permalink")
    if permalink and permalink.startswith("/"):
        permalink = REDDIT + permalink
    subreddit = data.get("subreddit")
    if isinstance(subreddit, dict):  # some dumps nest it
        subreddit = subreddit.get("display_name")
    salt = author_salt()
    return {
        "uid": f"reddit:{item_id}",
        "platform": "reddit",
        "item_id": item_id,
        "source": source,
        "url": _text(data.get("url")),
        "permalink": _text(permalink),
        "title": _text(data.get("title")),
        "text": _text(data.get("selftext")),
        "community": _text(subreddit),
        "author_hash": author_hash(data.get("author"), salt),
        "created_at": _time(data, "created_utc", where),
        "collected_at": collected_at,
        "media_kind": kind,
        "media_urls": urls,
        "post_hint": data.get("post_hint"),
        "flair": _text(data.get("link_flair_text")),
        "over_18": _bool(data.get("over_18")),
        "spoiler": _bool(data.get("spoiler")),
        "license": None,
        "score": int_field(data, "score", where),
        "upvote_ratio": float_field(data, "upvote_ratio", where),
        "num_comments": int_field(data, "num_comments", where),
        "view_count": None,
        "like_count": None,
        "comment_count": None,
        "subscriber_count": int_field(data, "subreddit_subscribers", where),
        "heatmap": None,
        "raw": pack_raw(data, salt=salt),
    }


def comment_row(data: dict[str, Any], *, depth: int, collected_at: datetime, uid: str | None = None) -> dict[str, Any]:
    """A ``comments`` row from a comment dict; ``uid`` defaults to the one its link_id names."""
    comment_id = _strip_prefix(data.get("id") or data.get("name"))
    where = f"comment {comment_id or '?'}"
    if not comment_id:
        raise InvalidRecord("comment: field 'id' is missing")
    if uid is None:
        link = _strip_prefix(data.get("link_id"))
        if not link:
            raise InvalidRecord(f"{where}: field 'link_id' is missing")
        uid = f"reddit:{link}"
    parent = data.get("parent_id")
    author = data.get("author")
    salt = author_salt()
    return {
        "uid": uid,
        "platform": "reddit",
        "comment_id": comment_id,
        "parent_id": _strip_prefix(parent) if parent and str(parent).startswith("t1_") else None,
        "depth": depth,
        "text": _text(data.get("body")),
        "score": int_field(data, "score", where),
        "like_count": None,
        "author_hash": author_hash(author, salt),
        "author_kind": author_kind(author),
        "created_at": _time(data, "created_utc", where),
        "is_submitter": _bool(data.get("is_submitter")),
        "distinguished": data.get("distinguished"),
        "stickied": _bool(data.get("stickied")),
        "collected_at": collected_at,
        "raw": pack_raw(data, drop_keys=("replies",), salt=salt),
    }
