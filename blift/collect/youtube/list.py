"""``youtube.list``: requests -> video_refs (the ``item_refs`` table), one record per request.

A request is a URL list (or a file of URLs), a playlist, a channel, or a folder of saved
``.info.json`` files; refs keep listing order (``rank``).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, ClassVar

import orjson

from blift.collect.fields import request_error, request_spec
from blift.collect.youtube.client import (
    WATCH_URL,
    VideoRef,
    YoutubeClientConfig,
    channel_videos_url,
    classify_ytdlp_error,
    flat_entries,
    video_ref,
    youtube_video_id,
)
from blift.collect.youtube.info_json import INFO_JSON, entry_ref, info_refs
from blift.collect.youtube.rows import (
    YOUTUBE,
)
from blift.errors import ConfigError, InvalidRecord, PermanentError
from blift.ids import canonical_json, short_id
from blift.stage import RecordOutput, RecordStage, ShardInput

log = logging.getLogger(__name__)

REQUEST_KINDS = ("urls", "playlist", "channel", "url_file", "info_json_dir")
URLS_PER_REQUEST = 500  # a long URL list becomes several requests, so several shards run in parallel
MAX_LISTING = 5000


# --------------------------------------------------------------------------------------------
# Request expansion


_fail = functools.partial(request_error, prefix="youtube.list: ")


def _check_url(value: Any, index: int, field: str) -> str:
    """A YouTube video URL or id (made canonical) or any http(s) URL; no network."""
    if not isinstance(value, str) or not value.strip():
        raise _fail(index, field, f"expected a video URL, got {value!r}")
    text = value.strip()
    vid = youtube_video_id(text)
    if vid:
        return WATCH_URL.format(vid)
    if not text.startswith(("http://", "https://")):
        raise _fail(index, field, f"{value!r} is neither a YouTube video URL/id nor an http(s) URL")
    return text


def _limit(entry: dict[str, Any], index: int) -> int:
    limit = entry.get("limit", 100)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise _fail(index, "limit", f"expected a positive integer, got {limit!r}")
    if limit > MAX_LISTING:
        raise _fail(index, "limit", f"{limit} is above {MAX_LISTING}; split the listing or use url_file")
    return limit


def _read_url_file(path: Any, index: int) -> list[str]:
    if not isinstance(path, str) or not path:
        raise _fail(index, "url_file", f"expected a file path, got {path!r}")
    file = Path(path).expanduser()
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise _fail(index, "url_file", f"cannot read {file}: {exc.strerror or exc}") from None
    urls = []
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
        if not text:
            continue
        try:
            urls.append(_check_url(text, index, "url_file"))
        except ConfigError as exc:
            raise ConfigError(f"{exc} ({file}, line {n})") from None
    if not urls:
        raise _fail(index, "url_file", f"{file} lists no URLs")
    return urls


def expand_youtube_requests(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pipeline ``requests:`` entries -> ``requests`` rows (see YoutubeListStage.expand_requests)."""
    if not isinstance(specs, list) or not specs:
        raise ConfigError("youtube.list: requests: expected a non-empty list of entries "
                          f"with one of {', '.join(REQUEST_KINDS)}")
    rows: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(specs):
        if not isinstance(entry, dict):
            raise ConfigError(f"youtube.list: requests[{index}]: expected a mapping with one of "
                              f"{', '.join(REQUEST_KINDS)}, got {entry!r:.80}")
        kinds = [k for k in REQUEST_KINDS if k in entry]
        if len(kinds) != 1:
            raise ConfigError(f"youtube.list: requests[{index}]: expected exactly one of {', '.join(REQUEST_KINDS)}, "
                              f"got keys {sorted(entry)}")
        kind = kinds[0]
        allowed = {kind, "limit"} if kind in ("playlist", "channel") else {kind}
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise _fail(index, unknown[0], f"unknown key in a {kind} entry; allowed: {', '.join(sorted(allowed))}")
        out: list[tuple[str, dict[str, Any]]] = []
        if kind in ("urls", "url_file"):
            if kind == "urls":
                values = entry["urls"] if isinstance(entry["urls"], list) else [entry["urls"]]
                if not values:
                    raise _fail(index, "urls", "expected a non-empty list of video URLs")
                urls = [_check_url(u, index, "urls") for u in values]
            else:
                urls = _read_url_file(entry["url_file"], index)
            urls = list(dict.fromkeys(urls))
            out = [("urls", {"urls": urls[i : i + URLS_PER_REQUEST]}) for i in range(0, len(urls), URLS_PER_REQUEST)]
        elif kind in ("playlist", "channel"):
            url = entry[kind]
            if not isinstance(url, str) or not url.strip().startswith(("http://", "https://")):
                raise _fail(index, kind, f"expected an http(s) {kind} URL, got {url!r}")
            url = channel_videos_url(url) if kind == "channel" else url.strip()
            out = [(kind, {kind: url, "limit": _limit(entry, index)})]
        else:
            folder = entry["info_json_dir"]
            if not isinstance(folder, str) or not folder:
                raise _fail(index, "info_json_dir", f"expected a folder path, got {folder!r}")
            path = Path(folder).expanduser().resolve()
            if not path.is_dir():
                raise _fail(index, "info_json_dir", f"folder {path} does not exist")
            out = [("info_json_dir", {"info_json_dir": str(path)})]
        for k, spec in out:
            request_id = short_id("youtube", k, spec)
            rows.setdefault(request_id, {"request_id": request_id, "kind": k, "spec": canonical_json(spec).decode()})
    return list(rows.values())


# --------------------------------------------------------------------------------------------
# youtube.list


class YoutubeListConfig(YoutubeClientConfig):
    pass


class YoutubeListStage(RecordStage):
    """Requests -> video_refs, ranked in listing order."""

    name: ClassVar[str] = "youtube.list"
    inputs: ClassVar[dict[str, str]] = {"requests": "requests"}
    outputs: ClassVar[dict[str, str]] = {"video_refs": "item_refs"}
    request_paths: ClassVar[tuple[str, ...]] = ("url_file", "info_json_dir")
    key_column: ClassVar[str] = "request_id"
    Config = YoutubeListConfig

    @classmethod
    def expand_requests(cls, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``{urls: [...]}``, ``{url_file: PATH}`` (one URL per line, ``#`` comments) ->
        ``urls`` rows of at most 500 URLs; ``{playlist: URL, limit: N}`` and ``{channel: URL,
        limit: N}`` (default 100; a channel root is read from its Videos tab) -> one row each;
        ``{info_json_dir: PATH}`` -> one row listing that folder's ``*.info.json`` at run time."""
        return expand_youtube_requests(specs)

    def describe(self) -> str:
        return f"{self.name} via yt-dlp (flat extraction for playlists and channels)"

    def records(self, shard: ShardInput) -> list[tuple[str, Any]]:
        return [(row["request_id"], row) for row in shard.rows("requests")]

    def process_record(self, key: str, payload: Any) -> RecordOutput:
        kind, spec = request_spec(key, payload)
        counters: dict[str, int] = {}
        dropped: list[dict[str, Any]] = []
        refs: list[tuple[str, str]]  # (item id, URL)
        if kind == "urls":
            videos: list[VideoRef] = []
            for url in spec.get("urls") or []:
                try:
                    videos.append(video_ref(url))
                except ValueError as exc:
                    raise InvalidRecord(f"request {key}: field 'spec.urls': {exc}") from None
            refs = [(r.item_id, r.url) for r in videos]
        elif kind in ("playlist", "channel"):
            refs, counters = self._listing(key, kind, spec)
        elif kind == "info_json_dir":
            refs, counters, dropped = self._info_json_dir(key, spec)
        else:
            raise InvalidRecord(f"request {key}: field 'kind': {kind!r} is not a youtube request "
                                f"({', '.join(REQUEST_KINDS)})")
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        for item_id, url in refs:
            if item_id in seen:
                counters["duplicates"] = counters.get("duplicates", 0) + 1
                continue
            seen.add(item_id)
            rows.append({"uid": f"{YOUTUBE}:{item_id}", "platform": YOUTUBE, "item_id": item_id, "request_id": key,
                         "rank": len(rows), "url": url})
        counters["video_refs"] = len(rows)
        return RecordOutput(tables={"video_refs": rows}, dropped=dropped, counters=counters)

    def _listing(self, key: str, kind: str, spec: dict[str, Any]) -> tuple[list[tuple[str, str]], dict[str, int]]:
        url, limit = spec.get(kind), spec.get("limit")
        if not isinstance(url, str) or not isinstance(limit, int):
            raise InvalidRecord(f"request {key}: spec needs {kind!r} (URL) and 'limit' (integer)")
        try:
            entries = flat_entries(self.config, url, limit)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - classified; anything else re-raised as is
            err = classify_ytdlp_error(exc, f"{kind} {url}")
            if err is None:
                raise
            raise err from exc
        refs: list[tuple[str, str]] = []
        counters = {"entries": len(entries), "skipped_nested_lists": 0, "skipped_bad_entries": 0}
        for entry in entries:
            if entry.get("_type") in ("playlist", "multi_video") or str(entry.get("ie_key") or "").endswith("Tab"):
                counters["skipped_nested_lists"] += 1
                continue
            ref = entry_ref(entry)
            if ref is None:
                counters["skipped_bad_entries"] += 1
                log.warning("youtube.list: %s %s: entry without a usable URL or id: %.120r", kind, url, entry)
                continue
            refs.append((ref.item_id, ref.url))
        return refs, counters

    def _info_json_dir(self, key: str,
                       spec: dict[str, Any]) -> tuple[list[tuple[str, str]], dict[str, int], list[dict[str, Any]]]:
        folder = Path(str(spec.get("info_json_dir") or ""))
        if not folder.is_dir():
            raise PermanentError(f"request {key}: info_json_dir {folder} does not exist", error_type="missing_folder")
        refs: list[tuple[str, str]] = []
        dropped: list[dict[str, Any]] = []
        counters = {"info_json_files": 0, "playlist_files": 0, "bad_info_json": 0}
        for path in sorted(folder.rglob(f"*{INFO_JSON}")):
            counters["info_json_files"] += 1
            try:
                data = orjson.loads(path.read_bytes())
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                found = info_refs(data, path)
            except (OSError, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
                counters["bad_info_json"] += 1
                dropped.append({"table": "info_json", "uid": None, "record_id": str(path), "reason": "bad_info_json",
                                "detail": f"{type(exc).__name__}: {exc}"[:300]})
                continue
            if data.get("_type") in ("playlist", "multi_video"):
                counters["playlist_files"] += 1
            refs.extend(found)
        return refs, counters, dropped
