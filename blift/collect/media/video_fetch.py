"""Video files ``media.download`` fetches itself: Reddit-hosted video (v.redd.it DASH), ``.gifv``
links, and any http(s) video URL a source named (a Reddit link, a ``table.read`` row) when no
collector stored a file for the item.

What an item's URL can be, and what happens
  * a DASH manifest (``.../DASHPlaylist.mpd``, or any body that turns out to be an MPD): read by
    :mod:`blift.collect.media.dash`; the best video representation and the best audio one are
    fetched segment by segment through the same :class:`~blift.collect.media.http_fetch.Fetcher`
    as images (address guard, ``hosts``, per-host rate limit, retries, byte cap over all tracks
    together), then ``ffmpeg -c copy`` muxes the local files into one MP4 without re-encoding
    (Matroska when MP4 cannot hold the codecs). A manifest without audio gives a video-only file;
  * a ``.gifv`` page (imgur, i.redd.it style): its ``.mp4`` sibling is fetched instead;
  * any other URL: fetched as a file, its first bytes must be a video container (MP4/MOV,
    Matroska/WebM, Ogg, FLV, AVI) or a manifest; an HTML page (a YouTube watch URL, a removed
    video) is ``not_a_video``.

Where the Reddit facts come from (the carrier)
  ``reddit.*`` sources put the manifest URL (``reddit_video.dash_url``) in ``media_urls``
  (:func:`blift.collect.reddit.rows.video_urls`); the rest of ``reddit_video`` stays in the item's
  ``raw`` JSON, which :func:`video_hints` reads back with the same
  :func:`~blift.collect.reddit.rows.reddit_video` that found it: the video-only
  ``fallback_url``, tried when the DASH download fails, and ``duration``, checked against
  ``max_duration_s`` before anything is fetched. Without ``raw`` the manifest alone still works.

Every outcome is a media row or a :class:`~blift.errors.TransientError`, as for images:
``skipped`` (``other_host``, ``too_long``) or ``failed`` with the fetcher's reasons (``not_found``,
``forbidden``, ``too_large``, ``blocked_address``, ``bad_url``...) and ``not_a_video``,
``bad_video`` (ffprobe refused the file), ``dash_failed`` (manifest unreadable, a segment missing,
the mux failed, and no fallback worked). Files are written in a per-item folder under the run's
``.tmp/media.download/`` and moved into the content-addressed store only when whole and probed.
"""

from __future__ import annotations

import html
import logging
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from blift.collect.media.dash import MAX_MANIFEST_BYTES, DashError, looks_like_manifest, parse_manifest
from blift.collect.media.http_fetch import Fetcher, FetchRejected, hosted_on
from blift.collect.media.store import MediaStore, describe_bytes
from blift.collect.media.video_probe import VideoFacts, VideoRejected, probe_video
from blift.collect.reddit.rows import reddit_video
from blift.errors import ConfigError
from blift.ids import unpack_raw
from blift.storage import RunPath, local_dir

log = logging.getLogger(__name__)

VIDEO_ACCEPT = "video/*,application/dash+xml;q=0.9,*/*;q=0.5"
_ISO_BOXES = (b"ftyp", b"styp", b"moov", b"moof", b"mdat", b"free", b"skip", b"wide", b"sidx", b"pnot")
# reasons after which the fallback file is not tried: it would fail the same way, or must not be fetched
_NO_FALLBACK = frozenset({"too_large", "blocked_address", "too_long"})


@dataclass(frozen=True)
class VideoHints:
    """What the item says about its video besides the URL (from the platform JSON in ``raw``)."""

    fallback_urls: tuple[str, ...] = ()
    duration_s: float | None = None


def video_hints(item: dict[str, Any]) -> VideoHints:
    """Fallback URL and duration of a Reddit-hosted video, read from the item's ``raw``."""
    raw = item.get("raw")
    if item.get("platform") != "reddit" or not raw:
        return VideoHints()
    try:
        data = unpack_raw(raw)
    except Exception:  # noqa: BLE001 - a damaged raw cell only loses the hints
        log.warning("media.download: %s: raw JSON unreadable; no video fallback or duration", item.get("uid"))
        return VideoHints()
    video = reddit_video(data) if isinstance(data, dict) else None
    if video is None:
        return VideoHints()
    fallback = video.get("fallback_url")
    duration = video.get("duration")
    return VideoHints(
        fallback_urls=(html.unescape(fallback),) if isinstance(fallback, str) and fallback else (),
        duration_s=float(duration) if isinstance(duration, (int, float)) and duration > 0 else None,
    )


def gifv_target(url: str) -> str:
    """The ``.mp4`` sibling of a ``.gifv`` URL (``i.imgur.com/X.gifv`` -> ``i.imgur.com/X.mp4``)."""
    parts = urlsplit(url)
    if not parts.path.lower().endswith(".gifv"):
        return url
    return urlunsplit(parts._replace(path=parts.path[: -len(".gifv")] + ".mp4"))


def sniff_video(head: bytes) -> str | None:
    """What a body's first bytes are: ``mpd`` (maybe a manifest), ``iso`` (MP4/MOV/fragments),
    ``mkv`` (Matroska/WebM), ``ogg``, ``flv``, ``avi``, or None."""
    if looks_like_manifest(head):
        return "mpd"
    if head[4:8] in _ISO_BOXES:
        return "iso"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "mkv"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"FLV\x01"):
        return "flv"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def require_video_head(head: bytes) -> None:
    """Reject a body as soon as its first bytes show it is neither a video nor a manifest."""
    if sniff_video(head) is None:
        what = "an HLS playlist (not downloaded)" if head.lstrip().startswith(b"#EXTM3U") else describe_bytes(head)
        raise VideoRejected("not_a_video", f"body is {what}, not a video file or DASH manifest")


class _Outcome(Exception):
    """A classified end of one attempt: a ``skipped`` or ``failed`` row."""

    def __init__(self, status: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def _failed(exc: FetchRejected | VideoRejected) -> _Outcome:
    return _Outcome("failed", exc.reason, str(exc))


class VideoDownloader:
    """Fetches, muxes, probes and stores one video per call; thread-safe (no state of its own)."""

    def __init__(self, fetcher: Fetcher, store: MediaStore, run_dir: RunPath, *, max_bytes: int,
                 max_duration_s: float | None, max_height: int | None, hosts: list[str] | None,
                 timeout_s: float) -> None:
        self.fetcher = fetcher
        self.store = store
        self.run_dir = run_dir
        self.max_bytes = max_bytes
        self.max_duration_s = max_duration_s
        self.max_height = max_height
        self.hosts = hosts
        self.timeout_s = timeout_s

    def download(self, url: str, item: dict[str, Any], counts: Counter[str]) -> dict[str, Any]:
        """The media row facts (``url``, ``status``, ...) of the item's video at ``url``.
        Raises TransientError for what a later run may fix."""
        hints = video_hints(item)
        if self.hosts is not None and not hosted_on(url, self.hosts):
            return {"url": url, "status": "skipped", "reason": "other_host", "error": f"host not in hosts {self.hosts}"}
        limit = self.max_duration_s
        if limit is not None and hints.duration_s is not None and hints.duration_s > limit:
            counts["videos_too_long_known"] += 1
            return {"url": url, "status": "skipped", "reason": "too_long",
                    "error": f"duration {hints.duration_s:g}s (from the item's metadata) is above "
                             f"max_duration_s={limit:g}; not downloaded"}
        tmp_root = local_dir(self.run_dir) / ".tmp" / "media.download"
        tmp_root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="video-", dir=tmp_root))
        try:
            return self._download(url, hints, work, counts)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _download(self, url: str, hints: VideoHints, work: Path, counts: Counter[str]) -> dict[str, Any]:
        target = gifv_target(url)
        if target != url:
            counts["gifv_as_mp4"] += 1
        try:
            return self._fetch(target, work, counts)
        except _Outcome as exc:
            first = exc
        errors = [f"{target}: {first}"]
        last = first
        if first.reason not in _NO_FALLBACK:
            for fallback in hints.fallback_urls:
                if fallback == target or (self.hosts is not None and not hosted_on(fallback, self.hosts)):
                    continue
                try:
                    facts = self._fetch(fallback, work, counts, manifest_ok=False)
                except _Outcome as exc:
                    errors.append(f"fallback {fallback}: {exc}")
                    last = exc
                    continue
                counts["video_fallback_used"] += 1
                log.info("media.download: %s failed (%s); used the video-only fallback %s", target, first, fallback)
                return facts
        return {"url": target, "status": last.status, "reason": last.reason, "error": "; ".join(errors)[:2000]}

    # ------------------------------------------------------------------ one URL

    def _fetch(self, url: str, work: Path, counts: Counter[str], manifest_ok: bool = True) -> dict[str, Any]:
        """Fetch ``url`` (a file or a manifest) into the store; raise _Outcome when it fails."""
        path = work / "download"
        is_mpd = urlsplit(url).path.lower().endswith(".mpd")
        try:
            got = self.fetcher.fetch_to_file(url, path, head_check=require_video_head,
                                             max_bytes=MAX_MANIFEST_BYTES if is_mpd else self.max_bytes)
        except FetchRejected as exc:
            if is_mpd and exc.reason == "too_large":
                raise _Outcome("failed", "dash_failed", f"manifest larger than {MAX_MANIFEST_BYTES} bytes") from exc
            raise _failed(exc) from exc
        except VideoRejected as exc:
            raise _failed(exc) from exc
        counts["bytes_downloaded"] += got.size
        counts["video_bytes_downloaded"] += got.size
        counts["http_retries"] += got.attempts - 1
        with open(path, "rb") as fh:
            head = fh.read(64)
        if sniff_video(head) == "mpd":
            if not manifest_ok:
                raise _Outcome("failed", "not_a_video", "body is a DASH manifest where a video file was expected")
            if got.size > MAX_MANIFEST_BYTES:
                raise _Outcome("failed", "dash_failed", f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
            counts["dash_manifests"] += 1
            return self._dash(url, got.final_url, path.read_bytes(), work, counts)
        return self._store(url, path, counts)

    def _dash(self, url: str, final_url: str, data: bytes, work: Path, counts: Counter[str]) -> dict[str, Any]:
        try:
            manifest = parse_manifest(data, final_url, self.max_height)
        except DashError as exc:
            raise _Outcome("failed", "dash_failed", f"manifest: {exc}") from exc
        limit = self.max_duration_s
        if limit is not None and manifest.duration_s is not None and manifest.duration_s > limit:
            counts["videos_too_long_known"] += 1
            raise _Outcome("skipped", "too_long", f"duration {manifest.duration_s:g}s (from the DASH manifest) is "
                                                  f"above max_duration_s={limit:g}; not downloaded")
        budget = self.max_bytes
        files: list[Path] = []
        for track in (manifest.video, manifest.audio):
            if track is None:
                continue
            file = work / f"{track.kind}.{track.ext}"
            with open(file, "wb") as out:
                for seg in track.urls:
                    if self.hosts is not None and not hosted_on(seg, self.hosts):
                        raise _Outcome("failed", "dash_failed", f"{track.kind} segment {seg} is not on a host "
                                                                f"in hosts {self.hosts}")
                    try:
                        got = self.fetcher.fetch_into(seg, out, max_bytes=budget)
                    except FetchRejected as exc:
                        if exc.reason == "too_large":
                            raise _Outcome("failed", "too_large", f"the DASH tracks exceed the {self.max_bytes}-byte "
                                                                  f"cap (max_video_bytes) at {seg}") from exc
                        if exc.reason == "blocked_address":
                            raise _failed(exc) from exc
                        raise _Outcome("failed", "dash_failed", f"{track.kind} segment: {exc}") from exc
                    budget -= got.size
                    counts["bytes_downloaded"] += got.size
                    counts["video_bytes_downloaded"] += got.size
                    counts["http_retries"] += got.attempts - 1
                    counts["dash_segments"] += 1
            files.append(file)
        muxed = self._mux(files, work)
        counts["dash_muxed"] += 1
        return self._store(url, muxed, counts)

    def _mux(self, tracks: list[Path], work: Path) -> Path:
        """Copy the video (and audio) streams of local track files into one file, no re-encoding:
        MP4, or Matroska when MP4 refuses the codecs."""
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise ConfigError("ffmpeg was not found on PATH; install ffmpeg (Debian: apt-get install ffmpeg)")
        problem = ""
        for ext, extra in (("mp4", ["-movflags", "+faststart"]), ("mkv", [])):
            out = work / f"muxed.{ext}"
            cmd = [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-y"]
            for track in tracks:  # only local files: the inputs were fetched through the guard
                cmd += ["-protocol_whitelist", "file", "-i", str(track)]
            cmd += ["-map", "0:v:0"] + (["-map", "1:a:0?"] if len(tracks) > 1 else [])
            cmd += ["-c", "copy", *extra, str(out)]
            try:
                proc = subprocess.run(cmd, capture_output=True, timeout=self.timeout_s, check=False)
            except subprocess.TimeoutExpired:
                raise _Outcome("failed", "dash_failed", f"ffmpeg took longer than {self.timeout_s:g}s to mux") from None
            if proc.returncode == 0 and out.is_file() and out.stat().st_size > 0:
                return out
            lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            problem = (lines[-1] if lines else f"exit status {proc.returncode}")[:300]
            out.unlink(missing_ok=True)
        raise _Outcome("failed", "dash_failed", f"ffmpeg could not mux the tracks: {problem}")

    def _store(self, url: str, path: Path, counts: Counter[str]) -> dict[str, Any]:
        """Probe a whole local file, apply the duration rule, move it into the store."""
        try:
            facts: VideoFacts = probe_video(path)
        except VideoRejected as exc:
            raise _failed(exc) from exc
        limit = self.max_duration_s
        if limit is not None and facts.duration_s is not None and facts.duration_s > limit:
            raise _Outcome("skipped", "too_long", f"duration {facts.duration_s:g}s (probed after download) is above "
                                                  f"max_duration_s={limit:g}; not stored")
        stored, size = self.store.put_file(path, facts.ext)
        counts["stored_new" if stored.created else "stored_existing"] += 1
        counts["videos_downloaded"] += 1
        return {
            "url": url, "status": "ok", "sha256": stored.sha256, "path": stored.path, "mime": facts.mime,
            "bytes": size, "width": facts.width, "height": facts.height, "duration_s": facts.duration_s,
            "fps": facts.fps, "has_audio": facts.has_audio,
        }
