"""Saved yt-dlp ``.info.json`` files as a source: refs that point into them, and reading one back
the way yt-dlp's own ``--load-info-json`` does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from blift.collect.youtube.client import WATCH_URL, YOUTUBE_IE, VideoRef, video_ref
from blift.errors import InvalidRecord, PermanentError

INFO_JSON = ".info.json"


def is_info_json_ref(url: str | None) -> bool:
    """item_refs of saved info dicts hold a file path (``path`` or ``path#<entry index>``)."""
    return bool(url) and not str(url).startswith(("http://", "https://"))


def split_info_json_ref(url: str) -> tuple[Path, int | None]:
    head, sep, tail = url.rpartition("#")
    if sep and tail.isdigit() and head.endswith(INFO_JSON):
        return Path(head), int(tail)
    return Path(url), None


def load_info_json(url: str, uid: str) -> dict[str, Any]:
    """A saved info dict (or one full entry of a saved playlist), cleaned as yt-dlp's own
    ``--load-info-json`` cleans it (``YoutubeDL.sanitize_info``)."""
    from yt_dlp import YoutubeDL

    path, index = split_info_json_ref(url)
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise PermanentError(f"{uid}: info json {path} no longer exists", error_type="missing_info_json") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise InvalidRecord(f"{uid}: info json {path}: {exc}") from None
    if index is not None:
        entries = data.get("entries") if isinstance(data, dict) else None
        if not isinstance(entries, list) or index >= len(entries) or not isinstance(entries[index], dict):
            raise InvalidRecord(f"{uid}: info json {path}: field 'entries[{index}]' is missing")
        data = entries[index]
    if not isinstance(data, dict) or not data.get("id"):
        raise InvalidRecord(f"{uid}: info json {path}: field 'id' is missing")
    return YoutubeDL.sanitize_info(data, remove_private_keys=True)


def entry_ref(entry: dict[str, Any]) -> VideoRef | None:
    """A flat playlist entry to a ref: YouTube entries carry their id; others are named by URL."""
    if entry.get("ie_key") == YOUTUBE_IE and entry.get("id"):
        return VideoRef(str(entry["id"]), WATCH_URL.format(entry["id"]), YOUTUBE_IE)
    url = entry.get("url") or entry.get("webpage_url")
    if not isinstance(url, str):
        return None
    try:
        return video_ref(url)
    except ValueError:
        return None


def info_refs(data: dict[str, Any], path: Path) -> list[tuple[str, str]]:
    """Refs of one saved info dict: the video itself, or a playlist's entries (entries saved in
    full point back into the file as ``path#i``; flat ones are collected live from their URL)."""
    if data.get("_type") not in ("playlist", "multi_video"):
        if not data.get("id"):
            raise ValueError("field 'id' is missing")
        return [(str(data["id"]), str(path))]
    out = []
    for i, entry in enumerate(data.get("entries") or []):
        if not isinstance(entry, dict):
            continue
        if entry.get("_type") in ("url", "url_transparent"):
            ref = entry_ref(entry)
            if ref is not None:
                out.append((ref.item_id, ref.url))
        elif entry.get("id"):
            out.append((str(entry["id"]), f"{path}#{i}"))
    return out
