"""YouTube collection through yt-dlp: requests to video refs, then each video's metadata,
comments, subtitles and file.

``youtube.list``    requests   -> video_refs (item_refs)   one record per request: a URL list, a
                                                            playlist, a channel, or a folder of
                                                            saved ``.info.json`` files
``youtube.collect`` video_refs -> items, videos, comments  one record per video: the paper's rules
                                                            first (no file is fetched for a dropped
                                                            video), then comments, subtitles and the
                                                            file at the configured format, moved
                                                            into the content-addressed media store

Rules run inside yt-dlp as its ``match_filter``: yt-dlp calls it after reading the video page and
before it fetches comments or any media, which is exactly where a drop costs nothing more.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field, field_validator

from blift.collect.fields import relative_folder, request_spec
from blift.collect.media_store import MediaStore
from blift.collect.youtube_client import (
    DEFAULT_FORMAT,
    WATCH_URL,
    YOUTUBE_IE,
    VideoRef,
    YoutubeClientConfig,
    base_params,
    channel_videos_url,
    classify_ytdlp_error,
    flat_entries,
    make_ydl,
    video_ref,
    youtube_video_id,
)
from blift.collect.youtube_rows import (
    YOUTUBE,
    Rules,
    comment_rows,
    comment_times_estimated,
    item_row,
    pick_subtitles,
    rule_drop,
    subtitle_text,
    video_row,
)
from blift.errors import ConfigError, InvalidRecord, PermanentError, TransientError
from blift.ids import canonical_json, now_utc, short_id, utc_from_epoch
from blift.stage import RecordOutput, RecordStage, ShardInput
from blift.storage import local_dir

log = logging.getLogger(__name__)

REQUEST_KINDS = ("urls", "playlist", "channel", "url_file", "info_json_dir")
URLS_PER_REQUEST = 500  # a long URL list becomes several requests, so several shards run in parallel
MAX_LISTING = 5000
INFO_JSON = ".info.json"


# --------------------------------------------------------------------------------------------
# Request expansion


def _fail(index: int, field: str, message: str) -> ConfigError:
    return ConfigError(f"youtube.list: requests[{index}]: field {field!r}: {message}")


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


def is_info_json_ref(url: str | None) -> bool:
    """item_refs of saved info dicts hold a file path (``path`` or ``path#<entry index>``)."""
    return bool(url) and not str(url).startswith(("http://", "https://"))


def split_info_json_ref(url: str) -> tuple[Path, int | None]:
    head, sep, tail = url.rpartition("#")
    if sep and tail.isdigit() and head.endswith(INFO_JSON):
        return Path(head), int(tail)
    return Path(url), None


# --------------------------------------------------------------------------------------------
# youtube.list


class YoutubeListConfig(YoutubeClientConfig):
    pass


class YoutubeListStage(RecordStage):
    """Requests -> video_refs, ranked in listing order."""

    name: ClassVar[str] = "youtube.list"
    inputs: ClassVar[dict[str, str]] = {"requests": "requests"}
    outputs: ClassVar[dict[str, str]] = {"video_refs": "item_refs"}
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
        if kind == "urls":
            refs = []
            for url in spec.get("urls") or []:
                try:
                    refs.append(video_ref(url))
                except ValueError as exc:
                    raise InvalidRecord(f"request {key}: field 'spec.urls': {exc}") from None
            refs = [(r.item_id, r.url) for r in refs]
        elif kind in ("playlist", "channel"):
            refs, counters = self._listing(key, kind, spec)
        elif kind == "info_json_dir":
            refs, counters, dropped = self._info_json_dir(key, spec)
        else:
            raise InvalidRecord(f"request {key}: field 'kind': {kind!r} is not a youtube request ({', '.join(REQUEST_KINDS)})")
        rows, seen = [], set()
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
            ref = _entry_ref(entry)
            if ref is None:
                counters["skipped_bad_entries"] += 1
                log.warning("youtube.list: %s %s: entry without a usable URL or id: %.120r", kind, url, entry)
                continue
            refs.append((ref.item_id, ref.url))
        return refs, counters

    def _info_json_dir(self, key: str, spec: dict[str, Any]) -> tuple[list[tuple[str, str]], dict[str, int], list[dict[str, Any]]]:
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
                found = _info_refs(data, path)
            except (OSError, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
                counters["bad_info_json"] += 1
                dropped.append({"table": "info_json", "uid": None, "record_id": str(path), "reason": "bad_info_json",
                                "detail": f"{type(exc).__name__}: {exc}"[:300]})
                continue
            if data.get("_type") in ("playlist", "multi_video"):
                counters["playlist_files"] += 1
            refs.extend(found)
        return refs, counters, dropped


def _entry_ref(entry: dict[str, Any]) -> VideoRef | None:
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


def _info_refs(data: dict[str, Any], path: Path) -> list[tuple[str, str]]:
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
            ref = _entry_ref(entry)
            if ref is not None:
                out.append((ref.item_id, ref.url))
        elif entry.get("id"):
            out.append((str(entry["id"]), f"{path}#{i}"))
    return out


# --------------------------------------------------------------------------------------------
# youtube.collect


class YoutubeCollectConfig(YoutubeClientConfig):
    threads: int = Field(2, ge=1, le=64, description="videos collected concurrently per worker")
    format: str = Field(DEFAULT_FORMAT, min_length=1, description="yt-dlp format selector for the file")
    download: bool = Field(True, description="download the video file (false: metadata and comments only)")
    max_bytes: int = Field(200 * 1024 * 1024, gt=0, description="size cap of a video file; larger -> failed/too_large")
    store: str = Field("media_files", description="folder under the run folder for the files (shared with media.download)")
    max_comments: int = Field(100, ge=0, description="comments fetched per video (yt-dlp max_comments); 0: none")
    comment_sort: Literal["top", "new"] = "top"
    subtitle_langs: list[str] = Field(default_factory=lambda: ["en"], description="subtitle languages kept as text")
    subtitle_max_bytes: int = Field(2_000_000, gt=0, description="size cap of one subtitle file")
    # the paper's rules, applied before anything but the video page is fetched
    min_views: int | None = Field(10_000, ge=0, description="keep videos with at least this many views (paper: >10k); "
                                  "0 or null: no view rule")
    exclude_categories: list[str] = Field(default_factory=list, description="YouTube categories to drop; the paper "
                                          "left out e.g. Gaming, News & Politics, Music")
    drop_age_limited: bool = Field(True, description="drop age_limit >= 18")
    drop_not_public: bool = Field(True, description="drop availability other than public/unlisted")
    max_duration_s: float | None = Field(None, gt=0, description="drop longer videos")

    @field_validator("store")
    @classmethod
    def _relative_store(cls, value: str) -> str:
        return relative_folder(value)

    def rules(self) -> Rules:
        return Rules(min_views=self.min_views or None, exclude_categories=tuple(self.exclude_categories),
                     drop_age_limited=self.drop_age_limited, drop_not_public=self.drop_not_public,
                     max_duration_s=self.max_duration_s)


class _Gate:
    """yt-dlp ``match_filter``: remembers which rule dropped the video."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.drop: tuple[str, str] | None = None

    def __call__(self, info: dict[str, Any], *, incomplete: Any = False) -> str | None:
        if info.get("_type", "video") != "video":
            return None
        found = rule_drop(info, self.rules)
        if found is not None:
            self.drop = found
            return f"blift rule {found[0]}: {found[1]}"
        return None


class _TooLarge(Exception):
    def __init__(self, size: int, cap: int) -> None:
        super().__init__(f"video file is {size} bytes or more, above max_bytes={cap}")


class YoutubeCollectStage(RecordStage):
    """video_refs -> items, videos, comments (and the video file in the media store)."""

    name: ClassVar[str] = "youtube.collect"
    version: ClassVar[int] = 1
    inputs: ClassVar[dict[str, str]] = {"video_refs": "item_refs"}
    outputs: ClassVar[dict[str, str]] = {"items": "items", "videos": "videos", "comments": "comments"}
    key_column: ClassVar[str] = "uid"
    Config = YoutubeCollectConfig
    config: YoutubeCollectConfig

    def describe(self) -> str:
        c = self.config
        rules = c.rules()
        return (f"{self.name} via yt-dlp: format {c.format!r}, download={'on' if c.download else 'off'} "
                f"(cap {c.max_bytes / 1e6:.0f} MB), {c.max_comments} comments, subtitles {c.subtitle_langs}, rules "
                f"min_views={rules.min_views} exclude={list(rules.exclude_categories)} "
                f"age_limited={'drop' if rules.drop_age_limited else 'keep'}, {c.threads} threads")

    def records(self, shard: ShardInput) -> list[tuple[str, Any]]:
        best: dict[str, dict[str, Any]] = {}
        for row in shard.rows("video_refs"):
            uid = row["uid"]
            if uid not in best or row["rank"] < best[uid]["rank"]:
                best[uid] = row
        return list(best.items())

    # ------------------------------------------------------------------ one video

    def process_record(self, key: str, payload: Any) -> RecordOutput:
        cfg = self.config
        if not isinstance(payload, dict) or payload.get("platform") != YOUTUBE:
            raise InvalidRecord(f"{key}: field 'platform': expected 'youtube', got {payload.get('platform') if isinstance(payload, dict) else payload!r}")
        item_id, url = str(payload.get("item_id") or ""), payload.get("url")
        if not item_id or not isinstance(url, str) or not url:
            raise InvalidRecord(f"{key}: fields 'item_id' and 'url' are required")
        tmp_root = local_dir(self.run_dir) / ".tmp" / "youtube.collect"
        tmp_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{short_id(key)}-", dir=tmp_root))
        gate = _Gate(cfg.rules())
        size_seen = {"max": 0}

        def hook(d: dict[str, Any]) -> None:
            size = max(int(d.get("downloaded_bytes") or 0), int(d.get("total_bytes") or 0))
            size_seen["max"] = max(size_seen["max"], size)
            if size > cfg.max_bytes:
                raise _TooLarge(size, cfg.max_bytes)

        params = {
            **base_params(cfg),
            "format": cfg.format,
            "getcomments": cfg.max_comments > 0,
            "extractor_args": {"youtube": {"max_comments": [str(cfg.max_comments)], "comment_sort": [cfg.comment_sort]}},
            "match_filter": gate,
            "outtmpl": {"default": str(tmp / "video.%(ext)s")},
            "progress_hooks": [hook],
            "overwrites": True,
            "writesubtitles": False,
            "writeautomaticsub": False,
        }
        ydl = make_ydl(params)
        try:
            return self._collect(key, item_id, url, ydl, gate)
        finally:
            ydl.close()
            shutil.rmtree(tmp, ignore_errors=True)

    def _collect(self, uid: str, item_id: str, url: str, ydl: Any, gate: _Gate) -> RecordOutput:
        cfg = self.config
        what = f"video {uid}"
        saved_epoch = None
        try:
            if is_info_json_ref(url):
                source = "info_json"
                saved = _load_info_json(url, uid)
                saved_epoch = saved.get("epoch")
                info = ydl.process_ie_result(saved, download=False)
            else:
                source = "api"
                info = ydl.extract_info(url, download=False, ie_key=YOUTUBE_IE if youtube_video_id(url) else None)
        except Exception as exc:  # noqa: BLE001 - classified; anything else re-raised as is
            err = classify_ytdlp_error(exc, what)
            if err is None:
                raise
            raise err from exc
        if not isinstance(info, dict) or info.get("_type", "video") != "video":
            raise PermanentError(f"{what}: {url} is a {info.get('_type') if isinstance(info, dict) else 'nothing'}, "
                                 "not a single video", error_type="not_a_video")
        if gate.drop is not None:
            reason, detail = gate.drop
            return RecordOutput(dropped=[{"table": "video_refs", "uid": uid, "record_id": uid, "reason": reason,
                                          "detail": detail}], counters={f"dropped_{reason}": 1})
        if str(info.get("id")) != item_id:
            log.warning("youtube.collect: %s: yt-dlp reports id %r; rows keep the ref's id", uid, info.get("id"))
        counters: dict[str, int] = {}
        collected_at = utc_from_epoch(saved_epoch) if saved_epoch is not None else now_utc()
        subtitles = self._subtitles(ydl, info, counters)
        comments, capped = comment_rows(info, uid=uid, collected_at=collected_at, limit=cfg.max_comments)
        counters["comments"] = len(comments)
        counters["comments_capped"] = capped
        file = self._download(ydl, info, what, counters) if cfg.download else {
            "file_status": "skipped", "file_reason": "download_disabled"}
        counters[f"file_{file['file_status']}"] = 1
        item = item_row(info, uid=uid, item_id=item_id, source="api" if source == "api" else "info_json",
                        collected_at=collected_at)
        video = video_row(info, uid=uid, source_info="extract" if source == "api" else "info_json",
                          subtitles=subtitles, comments_estimated=comment_times_estimated(info), file=file)
        return RecordOutput(tables={"items": [item], "videos": [video], "comments": comments}, counters=counters)

    def _subtitles(self, ydl: Any, info: dict[str, Any], counters: dict[str, int]) -> list[dict[str, str]]:
        """Subtitle tracks as text; a track that fails is counted and left out, never fatal."""
        out = []
        for track in pick_subtitles(info, self.config.subtitle_langs):
            try:
                with ydl.urlopen(track.url) as resp:
                    body = resp.read(self.config.subtitle_max_bytes + 1)
                if len(body) > self.config.subtitle_max_bytes:
                    raise ValueError(f"larger than subtitle_max_bytes={self.config.subtitle_max_bytes}")
                text = subtitle_text(body, track.ext)
            except Exception as exc:  # noqa: BLE001 - subtitles are optional: count and go on
                counters["subtitles_failed"] = counters.get("subtitles_failed", 0) + 1
                log.info("youtube.collect: %s subtitles %s/%s: %s: %s", info.get("id"), track.lang, track.kind,
                         type(exc).__name__, exc)
                continue
            out.append({"lang": track.lang, "kind": track.kind, "text": text})
            counters["subtitles"] = counters.get("subtitles", 0) + 1
        return out

    def _download(self, ydl: Any, info: dict[str, Any], what: str, counters: dict[str, int]) -> dict[str, Any]:
        """Fetch the selected format into the temp folder, then move it into the store.
        Permanent failures become a failed file status; transient ones fail the record."""
        from yt_dlp import YoutubeDL

        cfg = self.config
        try:
            result = ydl.process_ie_result(YoutubeDL.sanitize_info(info, remove_private_keys=True), download=True)
        except _TooLarge as exc:
            return {"file_status": "failed", "file_reason": "too_large", "file_error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - classified; anything else re-raised as is
            cause = next((e for e in _causes(exc) if isinstance(e, _TooLarge)), None)
            if cause is not None:
                return {"file_status": "failed", "file_reason": "too_large", "file_error": str(cause)}
            err = classify_ytdlp_error(exc, f"{what}: download")
            if err is None:
                raise
            if isinstance(err, TransientError):
                raise err from exc
            return {"file_status": "failed", "file_reason": err.error_type, "file_error": str(err)[:1000]}
        downloads = (result or {}).get("requested_downloads") or []
        filepath = downloads[0].get("filepath") if downloads else None
        path = Path(filepath) if filepath else None
        if path is None or not path.is_file():
            return {"file_status": "failed", "file_reason": "no_file", "format_id": result.get("format_id"),
                    "file_error": "yt-dlp reported no downloaded file"}
        size = path.stat().st_size
        if size > cfg.max_bytes:
            return {"file_status": "failed", "file_reason": "too_large", "format_id": result.get("format_id"),
                    "file_error": f"video file is {size} bytes, above max_bytes={cfg.max_bytes}"}
        ext = (path.suffix.lstrip(".") or str(result.get("ext") or "bin")).lower()
        stored, size = MediaStore(self.run_dir, cfg.store).put_file(path, ext)
        counters["stored_new" if stored.created else "stored_existing"] = 1
        counters["bytes_downloaded"] = size
        return {"file_status": "ok", "format_id": _text_or_none(result.get("format_id")), "file_path": stored.path,
                "file_sha256": stored.sha256, "file_bytes": size}


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _causes(exc: BaseException) -> list[BaseException]:
    out, cur = [], exc
    while cur is not None and len(out) < 10:
        out.append(cur)
        info = getattr(cur, "exc_info", None)
        nxt = info[1] if isinstance(info, tuple) and len(info) > 1 else None
        cur = nxt if isinstance(nxt, BaseException) and nxt is not cur else (cur.__cause__ or cur.__context__)
    return out


def _load_info_json(url: str, uid: str) -> dict[str, Any]:
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
