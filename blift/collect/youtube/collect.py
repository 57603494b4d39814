"""``youtube.collect``: video_refs -> items, videos, comments, one record per video through yt-dlp.

The paper's rules run first (no file is fetched for a dropped video), then comments, subtitles
and the file at the configured format, moved into the content-addressed media store.

Rules run inside yt-dlp as its ``match_filter``: yt-dlp calls it after reading the video page and
before it fetches comments or any media, which is exactly where a drop costs nothing more.

One video's fetch (page or saved info dict, rules, subtitles, file) is :class:`VideoFetcher`,
which ``youtube.linked`` (the videos other platforms' posts link to) uses as well.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from blift.collect.fields import relative_folder
from blift.collect.media.store import MediaStore
from blift.collect.youtube.client import (
    DEFAULT_FORMAT,
    YOUTUBE_IE,
    YoutubeClientConfig,
    base_params,
    classify_ytdlp_error,
    make_ydl,
    youtube_video_id,
)
from blift.collect.youtube.info_json import is_info_json_ref, load_info_json
from blift.collect.youtube.rows import (
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
from blift.errors import InvalidRecord, PermanentError, TransientError, causes
from blift.ids import now_utc, short_id, utc_from_epoch
from blift.stage import RecordOutput, RecordStage, ShardInput
from blift.storage import RunPath, local_dir

log = logging.getLogger(__name__)



# --------------------------------------------------------------------------------------------
# youtube.collect


class YoutubeFetchConfig(YoutubeClientConfig):
    """How one video is fetched, shared by ``youtube.collect`` and ``youtube.linked``: the file's
    format and caps, subtitles, and the paper's rules."""

    threads: int = Field(2, ge=1, le=64, description="videos collected concurrently per worker")
    format: str = Field(DEFAULT_FORMAT, min_length=1, description="yt-dlp format selector for the file")
    download: bool = Field(True, description="download the video file (false: metadata and comments only)")
    max_bytes: int = Field(200 * 1024 * 1024, gt=0, description="size cap of a video file; larger -> failed/too_large")
    store: str = Field("media_files",
                       description="folder under the run folder for the files (shared with media.download)")
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


class YoutubeCollectConfig(YoutubeFetchConfig):
    max_comments: int = Field(100, ge=0, description="comments fetched per video (yt-dlp max_comments); 0: none")
    comment_sort: Literal["top", "new"] = "top"


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
            raise InvalidRecord(f"{key}: field 'platform': expected 'youtube', "
                                f"got {payload.get('platform') if isinstance(payload, dict) else payload!r}")
        item_id, url = str(payload.get("item_id") or ""), payload.get("url")
        if not item_id or not isinstance(url, str) or not url:
            raise InvalidRecord(f"{key}: fields 'item_id' and 'url' are required")
        fetcher = VideoFetcher(cfg, self.run_dir, self.name, max_comments=cfg.max_comments,
                               comment_sort=cfg.comment_sort)
        got = fetcher.fetch(key, url, f"video {key}")
        if got.drop is not None:
            reason, detail = got.drop
            return RecordOutput(dropped=[{"table": "video_refs", "uid": key, "record_id": key, "reason": reason,
                                          "detail": detail}], counters={f"dropped_{reason}": 1})
        info = got.info
        if str(info.get("id")) != item_id:
            log.warning("youtube.collect: %s: yt-dlp reports id %r; rows keep the ref's id", key, info.get("id"))
        counters = got.counters
        comments, capped = comment_rows(info, uid=key, collected_at=got.collected_at, limit=cfg.max_comments)
        counters["comments"] = len(comments)
        counters["comments_capped"] = capped
        counters[f"file_{got.file['file_status']}"] = 1
        item = item_row(info, uid=key, item_id=item_id, source=got.source, collected_at=got.collected_at)
        video = video_row(info, uid=key, source_info=got.source_info, subtitles=got.subtitles,
                          comments_estimated=comment_times_estimated(info), file=got.file)
        return RecordOutput(tables={"items": [item], "videos": [video], "comments": comments}, counters=counters)


# --------------------------------------------------------------------------------------------
# Fetching one video


@dataclass
class Fetched:
    """One video as yt-dlp gave it: the info dict, and (unless a rule dropped it, in which case
    nothing but the video page was fetched) its subtitles and file."""

    info: dict[str, Any]
    source: str  # "api" (live extraction) or "info_json" (a saved info dict)
    collected_at: datetime
    drop: tuple[str, str] | None = None  # (reason, detail) of the rule that dropped the video
    subtitles: list[dict[str, str]] = field(default_factory=list)
    file: dict[str, Any] = field(default_factory=dict)  # FILE_COLUMNS
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def source_info(self) -> str:
        """The ``videos.source_info`` value."""
        return "extract" if self.source == "api" else "info_json"


class VideoFetcher:
    """Fetch one video through yt-dlp: the page (or a saved ``.info.json``), the paper's rules as
    yt-dlp's ``match_filter``, subtitles, then the file at the configured format, moved into the
    content-addressed media store. ``youtube.collect`` and ``youtube.linked`` share it, so both
    use the same options, rules, retries and error classes."""

    def __init__(self, cfg: YoutubeFetchConfig, run_dir: RunPath, stage_name: str, *, max_comments: int = 0,
                 comment_sort: str = "top") -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.stage_name = stage_name
        self.max_comments = max_comments
        self.comment_sort = comment_sort

    def fetch(self, key: str, url: str, what: str) -> Fetched:
        """``url``: a video URL, or a saved info dict's path (``path`` or ``path#<entry>``).
        Raises the classified RecordError of a failed extraction; a failed file download is a
        ``failed`` file status unless transient."""
        cfg = self.cfg
        tmp_root = local_dir(self.run_dir) / ".tmp" / self.stage_name
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
            "getcomments": self.max_comments > 0,
            "extractor_args": {"youtube": {"max_comments": [str(self.max_comments)],
                                           "comment_sort": [self.comment_sort]}},
            "match_filter": gate,
            "outtmpl": {"default": str(tmp / "video.%(ext)s")},
            "progress_hooks": [hook],
            "overwrites": True,
            "writesubtitles": False,
            "writeautomaticsub": False,
        }
        ydl = make_ydl(params)
        try:
            return self._fetch(key, url, what, ydl, gate)
        finally:
            ydl.close()
            shutil.rmtree(tmp, ignore_errors=True)

    def _fetch(self, key: str, url: str, what: str, ydl: Any, gate: _Gate) -> Fetched:
        saved_epoch = None
        try:
            if is_info_json_ref(url):
                source = "info_json"
                saved = load_info_json(url, key)
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
        collected_at = utc_from_epoch(saved_epoch) or now_utc()  # no (or an empty) saved epoch: now
        if gate.drop is not None:
            return Fetched(info, source, collected_at, drop=gate.drop)
        counters: dict[str, int] = {}
        subtitles = self._subtitles(ydl, info, counters)
        file = self._download(ydl, info, what, counters) if self.cfg.download else {
            "file_status": "skipped", "file_reason": "download_disabled"}
        return Fetched(info, source, collected_at, subtitles=subtitles, file=file, counters=counters)

    def _subtitles(self, ydl: Any, info: dict[str, Any], counters: dict[str, int]) -> list[dict[str, str]]:
        """Subtitle tracks as text; a track that fails is counted and left out, never fatal."""
        out = []
        for track in pick_subtitles(info, self.cfg.subtitle_langs):
            try:
                with ydl.urlopen(track.url) as resp:
                    body = resp.read(self.cfg.subtitle_max_bytes + 1)
                if len(body) > self.cfg.subtitle_max_bytes:
                    raise ValueError(f"larger than subtitle_max_bytes={self.cfg.subtitle_max_bytes}")
                text = subtitle_text(body, track.ext)
            except Exception as exc:  # noqa: BLE001 - subtitles are optional: count and go on
                counters["subtitles_failed"] = counters.get("subtitles_failed", 0) + 1
                log.info("%s: %s subtitles %s/%s: %s: %s", self.stage_name, info.get("id"), track.lang, track.kind,
                         type(exc).__name__, exc)
                continue
            out.append({"lang": track.lang, "kind": track.kind, "text": text})
            counters["subtitles"] = counters.get("subtitles", 0) + 1
        return out

    def _download(self, ydl: Any, info: dict[str, Any], what: str, counters: dict[str, int]) -> dict[str, Any]:
        """Fetch the selected format into the temp folder, then move it into the store.
        Permanent failures become a failed file status; transient ones fail the record."""
        from yt_dlp import YoutubeDL

        cfg = self.cfg
        try:
            result = ydl.process_ie_result(YoutubeDL.sanitize_info(info, remove_private_keys=True), download=True)
        except _TooLarge as exc:
            return {"file_status": "failed", "file_reason": "too_large", "file_error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - classified; anything else re-raised as is
            cause = next((e for e in causes(exc) if isinstance(e, _TooLarge)), None)
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
