"""Saved yt-dlp ``.info.json`` files as a source: refs that point into them, and reading one back
the way yt-dlp's own ``--load-info-json`` does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

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
