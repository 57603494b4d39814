"""``media.download``: fetch the images of image and gallery posts into a content-addressed store,
fetch the videos no collector stored (v.redd.it DASH, ``.gifv``, video URLs from any source:
:mod:`blift.collect.media.video_fetch`; a YouTube link is left to ``youtube.linked``), and
describe the video files ``youtube.collect`` or ``youtube.linked`` (for a post linking a YouTube
video) already stored. Images a source took from the user's own folders arrive as ``run:``
references to files already in the store (:mod:`blift.collect.media.local`) and get the same
checks without any network.

One item in, one ``media`` row per entry of its ``media_urls`` out (gallery order kept). Video
items with a ``videos`` row get one row from that row's file: probed with ffprobe when the
collector stored it (duration, fps, size, audio), or carrying the collector's skipped/failed
status and reason. Other video items get one row for the file fetched from their first
``media_urls`` entry (``videos: false`` skips them as ``unsupported_kind``; ``max_duration_s``
skips long ones as ``too_long``, unfetched when the duration is known up front). Other items
(links, text) get a single ``skipped`` row so every item is accounted for. Permanent facts about
a URL (404, not an image or video, too large, a decompression bomb, a blocked address, a broken
DASH manifest) become ``failed`` rows with a reason; anything a later run may fix
(timeouts, resets, 429/5xx once retries are spent) raises :class:`TransientError` for the whole
record, so the runner logs it and ``--retry-failed`` redoes it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import Counter
from dataclasses import replace
from typing import Any, ClassVar

from PIL import Image
from pydantic import Field, field_validator

from blift import __version__
from blift.collect.fields import relative_folder
from blift.collect.media.http_fetch import (
    AddressGuard,
    Fetcher,
    FetchPolicy,
    FetchRejected,
    HostRateLimiter,
)
from blift.collect.media.http_fetch import hosted_on as _hosted_on
from blift.collect.media.local import RUN_REF, parse_run_ref
from blift.collect.media.store import (
    ImageRejected,
    MediaStore,
    probe_image,
    require_image_head,
)
from blift.collect.media.video_fetch import VIDEO_ACCEPT, VideoDownloader
from blift.collect.media.video_probe import VideoRejected, probe_video
from blift.collect.youtube.client import youtube_video_id
from blift.errors import InvalidRecord
from blift.stage import RecordOutput, RecordStage, ShardInput, StageConfig
from blift.storage import local_file

log = logging.getLogger(__name__)

DOWNLOADABLE_KINDS = frozenset({"image", "gallery"})
MEDIA_COLUMNS = (
    "uid", "index", "url", "status", "reason", "error", "sha256", "path", "mime",
    "bytes", "width", "height", "duration_s", "fps", "has_audio",
)  # fmt: skip


def media_row(uid: str, index: int, url: str, status: str, **facts: Any) -> dict[str, Any]:
    """A full row of the ``media`` schema (columns not given are null)."""
    row: dict[str, Any] = dict.fromkeys(MEDIA_COLUMNS)
    row.update(uid=uid, index=index, url=url, status=status)
    unknown = set(facts) - set(MEDIA_COLUMNS)
    if unknown:
        raise KeyError(f"not media columns: {sorted(unknown)}")
    row.update(facts)
    return row


class DownloadStage(RecordStage):
    """Download and verify the images of image/gallery items and the videos no collector stored."""

    name: ClassVar[str] = "media.download"
    version: ClassVar[int] = 3  # 2: video items with a collected file get a probed row; 3: others are fetched
    inputs: ClassVar[dict[str, str]] = {"items": "items", "videos": "videos"}  # videos: optional
    outputs: ClassVar[dict[str, str]] = {"media": "media"}
    key_column: ClassVar[str] = "uid"
    resources: ClassVar[str] = "io"

    class Config(StageConfig):
        threads: int = Field(4, ge=1, le=256, description="items downloaded concurrently per worker")
        max_bytes: int = Field(20 * 1024 * 1024, gt=0, description="size cap per file (bytes)")
        max_pixels: int = Field(64_000_000, gt=0, description="width*height cap (decompression-bomb guard)")
        connect_timeout_s: float = Field(10.0, gt=0)
        read_timeout_s: float = Field(30.0, gt=0, description="per socket read and total per attempt")
        retries: int = Field(3, ge=0, le=20, description="retries of transient failures per URL")
        backoff_s: float = Field(1.0, ge=0, description="first backoff; doubles per retry, with jitter")
        max_retry_after_s: float = Field(60.0, ge=0, description="cap on a honoured Retry-After")
        max_redirects: int = Field(5, ge=0, le=30)
        per_host_rps: float = Field(2.0, ge=0, description="request starts per second per host; 0 = no limit")
        allow_private_addresses: bool = Field(False, description="allow loopback/private/link-local targets")
        deny_networks: list[str] = Field(default_factory=list, description="extra CIDRs never fetched from")
        user_agent: str = f"blift/{__version__} (media download)"
        store: str = Field("media_files", description="folder under the run folder for the files")
        hosts: list[str] | None = Field(None, description="download only media hosted here (the paper kept "
                                        "Reddit's own images: [i.redd.it]); '.example.org' also matches its "
                                        "subdomains; others are skipped as other_host. null: any host")
        videos: bool = Field(True, description="fetch the videos no collector stored (v.redd.it DASH muxed with "
                                               "its audio, .gifv as .mp4, video URLs); false: skip as unsupported_kind")
        max_video_bytes: int = Field(500 * 1024 * 1024, gt=0, description="size cap per video (bytes; a DASH "
                                     "video's tracks together)")
        video_timeout_s: float = Field(600.0, gt=0, description="total time per video file or DASH segment attempt, "
                                       "and per ffmpeg mux; each socket read still times out after read_timeout_s")
        max_duration_s: float | None = Field(None, gt=0, description="skip longer videos as too_long (the paper: "
                                             "500); unfetched when the item or manifest states the duration")
        video_max_height: int | None = Field(None, gt=0, description="pick the best DASH video representation at "
                                             "most this tall (the smallest when none fits); null: the best")

        @field_validator("store")
        @classmethod
        def _relative_store(cls, value: str) -> str:
            return relative_folder(value)

        @field_validator("deny_networks")
        @classmethod
        def _networks(cls, value: list[str]) -> list[str]:
            import ipaddress

            for net in value:
                ipaddress.ip_network(net, strict=False)  # raises ValueError naming the bad entry
            return value

    config: Config

    def __init__(self, config: StageConfig, run_dir: Any) -> None:
        super().__init__(config, run_dir)
        self._fetcher: Fetcher | None = None
        self._store: MediaStore | None = None
        self._videos: VideoDownloader | None = None
        self._setup_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle config and run folder only: executors ship stages to worker processes/actors,
        and sessions, locks and thread-locals neither pickle nor belong to another process."""
        return {"config": self.config, "run_dir": self.run_dir}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"], state["run_dir"])  # type: ignore[misc]

    # ------------------------------------------------------------------ lifecycle

    def setup(self) -> None:
        """Build the shared rate limiter, address guard, per-thread sessions and the store."""
        with self._setup_lock:
            if self._fetcher is not None:
                return
            cfg = self.config
            policy = FetchPolicy(
                max_bytes=cfg.max_bytes,
                connect_timeout_s=cfg.connect_timeout_s,
                read_timeout_s=cfg.read_timeout_s,
                retries=cfg.retries,
                backoff_s=cfg.backoff_s,
                max_retry_after_s=cfg.max_retry_after_s,
                max_redirects=cfg.max_redirects,
                user_agent=cfg.user_agent,
            )
            guard = AddressGuard(cfg.allow_private_addresses, cfg.deny_networks)
            self._store = MediaStore(self.run_dir, cfg.store)
            limiter = HostRateLimiter(cfg.per_host_rps)
            self._fetcher = Fetcher(policy, guard, limiter)
            self._fetcher.session()  # the calling thread's session; worker threads make theirs
            video_policy = replace(policy, max_bytes=cfg.max_video_bytes, total_timeout_s=cfg.video_timeout_s,
                                   accept=VIDEO_ACCEPT)
            self._videos = VideoDownloader(
                Fetcher(video_policy, guard, limiter), self._store, self.run_dir, max_bytes=cfg.max_video_bytes,
                max_duration_s=cfg.max_duration_s, max_height=cfg.video_max_height, hosts=cfg.hosts,
                timeout_s=cfg.video_timeout_s,
            )  # fmt: skip
            pil_limit = Image.MAX_IMAGE_PIXELS
            if pil_limit is not None and cfg.max_pixels > pil_limit:
                log.warning("media.download: max_pixels=%d is above Pillow's MAX_IMAGE_PIXELS=%d; "
                            "the lower one applies", cfg.max_pixels, pil_limit)

    def close(self) -> None:
        """Close the HTTP sessions (the runner may simply let the process end instead)."""
        if self._fetcher is not None:
            self._fetcher.close()
        if self._videos is not None:
            self._videos.fetcher.close()

    def describe(self) -> str:
        cfg = self.config
        guard = "private addresses ALLOWED" if cfg.allow_private_addresses else "public addresses only"
        rate = f"{cfg.per_host_rps:g} req/s per host" if cfg.per_host_rps > 0 else "no rate limit"
        videos = (f"videos up to {cfg.max_video_bytes / 1e6:.0f} MB"
                  + (f" and {cfg.max_duration_s:g}s" if cfg.max_duration_s else "")) if cfg.videos else "no videos"
        return (
            f"{self.name}: {cfg.threads} threads, cap {cfg.max_bytes / 1e6:.1f} MB and {cfg.max_pixels / 1e6:g} Mpx, "
            f"{videos}, "
            f"timeouts {cfg.connect_timeout_s:g}s connect / {cfg.read_timeout_s:g}s read, {cfg.retries} retries, "
            f"{rate}, {guard}, store {cfg.store}/"
        )

    # ------------------------------------------------------------------ records

    def records(self, shard: ShardInput) -> list[tuple[str, Any]]:
        """One record per item row, keyed by uid (a repeated uid keeps its first row). A video
        item carries its ``videos`` row (the collector's download result) under ``_video``."""
        videos: dict[str, dict[str, Any]] = {}
        if "videos" in shard.tables:
            for row in shard.rows("videos"):
                videos.setdefault(row["uid"], row)
        out: list[tuple[str, Any]] = []
        seen: set[str] = set()
        for row in shard.rows("items"):
            uid: str = row["uid"]  # non-null in the items schema
            if uid in seen:
                log.warning("media.download: shard %s repeats item %s; keeping its first row", shard.shard_id, uid)
                continue
            seen.add(uid)
            video = videos.get(uid) if row.get("media_kind") == "video" else None
            out.append((uid, {**row, "_video": video} if video is not None else row))
        return out

    def process_record(self, key: str, payload: Any) -> RecordOutput:
        if not isinstance(payload, dict):
            raise InvalidRecord(f"item {key}: expected an items row (dict), got {type(payload).__name__}")
        if self._fetcher is None:
            self.setup()
        uid = payload.get("uid") or key
        kind = payload.get("media_kind")
        urls = payload.get("media_urls") or []
        counts: Counter[str] = Counter()

        video = payload.get("_video")
        if kind == "video" and isinstance(video, dict):
            row = self._video(uid, urls[0] if urls and isinstance(urls[0], str) else (payload.get("url") or ""), video)
            counts[f"media_{row['status']}"] += 1
            if row["status"] != "ok":
                counts[f"{row['status']}_{row['reason']}"] += 1
            return RecordOutput(tables={"media": [row]}, counters=dict(counts))

        kinds = DOWNLOADABLE_KINDS | {"video"} if self.config.videos else DOWNLOADABLE_KINDS
        if kind == "video" and kind in kinds and urls:  # no collector stored it: fetch it here
            assert self._videos is not None
            first = urls[0] if isinstance(urls[0], str) else ""
            if youtube_video_id(first):  # a page, not a file: youtube.linked fetches it (yt-dlp)
                row = media_row(uid, 0, first, "skipped", reason="youtube_link",
                                error="a YouTube video: run youtube.linked before media.download to fetch it")
            else:
                row = media_row(uid, 0, **self._videos.download(first, payload, counts))
            counts[f"media_{row['status']}"] += 1
            if row["status"] != "ok":
                counts[f"{row['status']}_{row['reason']}"] += 1
            return RecordOutput(tables={"media": [row]}, counters=dict(counts))

        if kind not in kinds or not urls:
            reason = "unsupported_kind" if kind not in kinds else "no_media"
            counts["media_skipped"] += 1
            counts[f"skipped_{reason}"] += 1
            error = f"media_kind {kind!r} is not downloaded by {self.name}" if reason == "unsupported_kind" else None
            row = media_row(uid, 0, payload.get("url") or "", "skipped", reason=reason, error=error)
            return RecordOutput(tables={"media": [row]}, counters=dict(counts))

        rows: list[dict[str, Any]] = []
        done: dict[str, dict[str, Any]] = {}  # a gallery may list the same URL twice: fetch once
        for index, url in enumerate(urls):
            url = url if isinstance(url, str) else ""
            if url not in done:
                done[url] = self._download(uid, url, counts)
            row = dict(done[url])
            row["index"] = index
            rows.append(row)
            counts[f"media_{row['status']}"] += 1
            if row["status"] in ("failed", "skipped"):
                counts[f"{row['status']}_{row['reason']}"] += 1
        return RecordOutput(tables={"media": rows}, counters=dict(counts))

    def _download(self, uid: str, url: str, counts: Counter[str]) -> dict[str, Any]:
        """One URL to one media row; TransientError propagates to fail the whole record."""
        assert self._fetcher is not None and self._store is not None
        rel = parse_run_ref(url)
        if rel is not None or url.startswith(RUN_REF):
            return self._stored_image(uid, url, rel, counts)
        if self.config.hosts is not None and not _hosted_on(url, self.config.hosts):
            return media_row(uid, 0, url, "skipped", reason="other_host",
                             error=f"host not in hosts {self.config.hosts}")
        try:
            fetched = self._fetcher.fetch(url, head_check=require_image_head)
            counts["bytes_downloaded"] += len(fetched.body)
            counts["http_retries"] += fetched.attempts - 1
            facts = probe_image(fetched.body, self.config.max_pixels)
        except (FetchRejected, ImageRejected) as exc:
            return media_row(uid, 0, url, "failed", reason=exc.reason, error=str(exc))
        stored = self._store.put(fetched.body, facts.ext)
        counts["stored_new" if stored.created else "stored_existing"] += 1
        return media_row(
            uid, 0, url, "ok",
            sha256=stored.sha256, path=stored.path, mime=facts.mime, bytes=len(fetched.body),
            width=facts.width, height=facts.height,
        )  # fmt: skip

    def _stored_image(self, uid: str, url: str, rel: str | None, counts: Counter[str]) -> dict[str, Any]:
        """An image a source already put in the run's store (a ``run:`` reference, see
        :mod:`blift.collect.media.local`): the same checks as a download, no network."""
        path = self.run_dir / rel if rel else None
        if path is None or not path.is_file():
            return media_row(uid, 0, url, "failed", reason="missing_file",
                             error=f"{url!r} names no file in the run folder")
        data = local_file(path).read_bytes()
        counts["local_files"] += 1
        try:
            facts = probe_image(data, self.config.max_pixels)
        except ImageRejected as exc:
            return media_row(uid, 0, url, "failed", reason=exc.reason, error=str(exc))
        return media_row(
            uid, 0, url, "ok",
            sha256=hashlib.sha256(data).hexdigest(), path=rel, mime=facts.mime, bytes=len(data),
            width=facts.width, height=facts.height,
        )  # fmt: skip

    def _video(self, uid: str, url: str, video: dict[str, Any]) -> dict[str, Any]:
        """The media row of a video the collector handled: its file probed, or its status kept."""
        status = video.get("file_status")
        if status != "ok":
            return media_row(uid, 0, url, status if status in ("skipped", "failed") else "failed",
                             reason=video.get("file_reason") or "not_downloaded", error=video.get("file_error"))
        rel = video.get("file_path")
        path = self.run_dir / rel if rel else None
        if path is None or not path.is_file():
            return media_row(uid, 0, url, "failed", reason="missing_file",
                             error=f"videos row names {rel!r}, which is not in the run folder")
        try:
            facts = probe_video(local_file(path))  # ffprobe reads local files (fetched when remote)
        except VideoRejected as exc:
            return media_row(uid, 0, url, "failed", reason=exc.reason, error=str(exc),
                             sha256=video.get("file_sha256"), path=rel, bytes=path.stat().st_size)
        return media_row(
            uid, 0, url, "ok",
            sha256=video.get("file_sha256"), path=rel, mime=facts.mime, bytes=path.stat().st_size,
            width=facts.width, height=facts.height, duration_s=facts.duration_s, fps=facts.fps,
            has_audio=facts.has_audio,
        )  # fmt: skip

