"""yt-dlp as a library: one place that builds ``YoutubeDL`` objects, names videos, and turns
yt-dlp's failures into blift's error classes.

Why a module of its own: yt-dlp reports almost every failure as a ``DownloadError`` whose only
useful content is a human sentence that YouTube wrote ("Private video. Sign in if you've been
granted access..."). The runner needs a class (transient: retry later; permanent: never) and a
stable ``error_type`` to count, so the sentences are mapped here by a table that is unit-tested
against the exact strings yt-dlp raises (:data:`MESSAGE_RULES`).

Notes on yt-dlp that shape this code (version pinned in the report, checked offline):

* ``quiet`` alone still draws a progress bar: ``noprogress`` too; and a ``logger`` keeps yt-dlp's
  own ERROR lines off stderr (we raise them as classified errors instead).
* ``extract_info(url)`` without ``ie_key`` tries every extractor's URL regex; the first call in a
  process compiles ~1,800 of them (about a second). YouTube URLs are therefore extracted with
  ``ie_key="Youtube"``.
* Without an explicit ``format`` yt-dlp runs ``ffmpeg -version`` on every extraction to decide
  whether it can merge; we always pass one.
"""

from __future__ import annotations

import logging
import re
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from pydantic import Field, field_validator

from blift.errors import PermanentError, RecordError, TransientError, causes
from blift.stage import StageConfig

log = logging.getLogger(__name__)

YOUTUBE_IE = "Youtube"
WATCH_URL = "https://www.youtube.com/watch?v={}"
DEFAULT_FORMAT = "best[height<=360][ext=mp4][acodec!=none]/best[height<=360]/best"
# keys blift sets itself: letting ytdlp_params override them would break the stage
RESERVED_PARAMS = frozenset({
    "outtmpl", "paths", "logger", "progress_hooks", "match_filter", "extract_flat", "playlistend",
    "getcomments", "quiet", "noprogress", "ignoreerrors", "skip_download", "simulate",
})  # fmt: skip


class YoutubeClientConfig(StageConfig):
    """How yt-dlp reaches YouTube: shared by ``youtube.list`` and ``youtube.collect``."""

    cookiefile: str | None = Field(None, description="Netscape cookies.txt (signed-in session, age-gated videos)")
    proxy: str | None = Field(None, description="proxy URL, e.g. socks5://127.0.0.1:1080")
    socket_timeout_s: float = Field(20.0, gt=0, description="per socket operation")
    retries: int = Field(3, ge=0, le=20, description="yt-dlp's retries for HTTP, fragments and extractor pages")
    ytdlp_params: dict[str, Any] = Field(default_factory=dict,
                                         description="extra YoutubeDL params (advanced; see yt-dlp's YoutubeDL "
                                         "docstring)")

    @field_validator("ytdlp_params")
    @classmethod
    def _no_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(RESERVED_PARAMS.intersection(value))
        if clash:
            raise ValueError(f"ytdlp_params may not set {clash}: blift sets these itself")
        return value


class _YdlLogger:
    """Routes yt-dlp's output to logging: its errors become our exceptions, so they stay quiet."""

    def debug(self, msg: str) -> None:
        pass

    def info(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def warning(self, msg: str) -> None:
        log.info("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)


def base_params(cfg: YoutubeClientConfig) -> dict[str, Any]:
    """YoutubeDL params every blift call shares."""
    params: dict[str, Any] = {
        "quiet": True,
        "noprogress": True,
        "no_color": True,
        "logger": _YdlLogger(),
        "socket_timeout": cfg.socket_timeout_s,
        "retries": cfg.retries,
        "fragment_retries": cfg.retries,
        "extractor_retries": cfg.retries,
        "file_access_retries": 1,
        "retry_sleep_functions": {"http": lambda n: min(0.5 * 2**n, 10.0), "fragment": lambda n: min(0.5 * 2**n, 10.0)},
        "noplaylist": True,  # a watch URL with &list= is that one video, never the playlist
        "consoletitle": False,
        "ignoreerrors": False,
    }
    if cfg.cookiefile:
        params["cookiefile"] = cfg.cookiefile
    if cfg.proxy:
        params["proxy"] = cfg.proxy
    params.update(cfg.ytdlp_params)
    return params


def make_ydl(params: dict[str, Any]) -> Any:
    """A YoutubeDL instance. Not thread-safe, so one per record: ~0.1 s to build (measured), small
    next to a video page fetch; a per-thread instance would save it if it ever matters."""
    from yt_dlp import YoutubeDL

    return YoutubeDL(params)


# --------------------------------------------------------------------------------------------
# Naming videos


@dataclass(frozen=True)
class VideoRef:
    item_id: str
    url: str  # canonical watch URL for YouTube, the given URL otherwise
    ie_key: str | None  # extractor to use (None: let yt-dlp find it)


def youtube_video_id(url: str) -> str | None:
    """The 11-character id of a YouTube video URL (watch, youtu.be, shorts, embed, live, bare id).

    A video URL that also names a playlist (``watch?v=<id>&list=<id>``, common in shared links)
    is that video: yt-dlp's video extractor declines such URLs (its playlist extractor takes
    them), so the id is read with the ``list`` parameter removed."""
    from yt_dlp.extractor.youtube import YoutubeIE

    try:
        if YoutubeIE.suitable(url):
            return str(YoutubeIE._match_id(url))
        parts = urlsplit(url)
        query = parse_qs(parts.query, keep_blank_values=True)
        if "list" in query:
            query.pop("list")
            bare = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
            return str(YoutubeIE._match_id(bare)) if YoutubeIE.suitable(bare) else None
    except (AssertionError, IndexError, AttributeError, ValueError):
        return None
    return None


def video_ref(url: str) -> VideoRef:
    """Name a video from its URL without fetching anything. Raises ValueError if unusable.

    YouTube URLs give the video id and a canonical watch URL. Other sites go through whichever
    yt-dlp extractor accepts the URL; a direct file URL gets yt-dlp's generic id (the file name
    without extension), exactly what the generic extractor will report."""
    text = url.strip() if isinstance(url, str) else ""
    if not text:
        raise ValueError(f"expected a video URL, got {url!r}")
    vid = youtube_video_id(text)
    if vid:
        return VideoRef(vid, WATCH_URL.format(vid), YOUTUBE_IE)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is neither a YouTube video URL nor an http(s) URL")
    from yt_dlp.extractor import gen_extractor_classes
    from yt_dlp.extractor.common import InfoExtractor

    for ie in gen_extractor_classes():
        if ie.ie_key() == "Generic":
            break
        if ie.suitable(text):
            temp = ie.get_temp_id(text)
            if temp:
                return VideoRef(str(temp), text, ie.ie_key())
            break
    generic = InfoExtractor._generic_id(text)
    if not generic:
        raise ValueError(f"{url!r}: cannot derive a video id from the URL")
    return VideoRef(generic, text, None)


_CHANNEL_ROOT = re.compile(
    r"^(?P<root>https?://(?:www\.|m\.)?youtube\.com/(?:@[^/?#]+|channel/UC[\w-]{22}|c/[^/?#]+|user/[^/?#]+))/?(?:[?#].*)?$")


def channel_videos_url(url: str) -> str:
    """A YouTube channel root lists its *tabs* (Videos, Shorts, Live) under flat extraction, not
    its videos: point it at the Videos tab. Other URLs are returned as given."""
    m = _CHANNEL_ROOT.match(url.strip())
    return f"{m.group('root')}/videos" if m else url.strip()


# --------------------------------------------------------------------------------------------
# Error classification


@dataclass(frozen=True)
class MessageRule:
    pattern: re.Pattern[str]
    error_type: str
    transient: bool = False


def _rule(pattern: str, error_type: str, transient: bool = False) -> MessageRule:
    return MessageRule(re.compile(pattern, re.IGNORECASE), error_type, transient)


# Order matters: the first match wins. YouTube combines sentences ("Video unavailable. This video
# has been removed by the uploader"), so the specific ones come before the generic "unavailable".
# Apostrophes are normalised to ' before matching (YouTube writes "you’re" with U+2019).
MESSAGE_RULES: tuple[MessageRule, ...] = (
    _rule(r"confirm you'?re not a bot|not a bot\b", "bot_check"),
    _rule(r"try again later|rate-limited|too many requests|http error 429", "rate_limited", transient=True),
    _rule(r"confirm your age|age-restricted|inappropriate for some users|age verification", "age_gated"),
    _rule(r"available in your country|from your location|geo[- ]?restrict|not available in your region", "geo_blocked"),
    _rule(r"private video|this video is private|members-only|join this channel|only available to .*members"
          r"|premium members", "private"),
    _rule(r"removed by the uploader|has been terminated|removed for violating|copyright claim|has been removed"
          r"|no longer available", "removed"),
    _rule(r"requested format is not available|no video formats found|drm protected", "no_formats"),
    _rule(r"http error 5\d\d|timed? ?out|connection (?:reset|refused|aborted)|temporary failure in name resolution"
          r"|remote end closed|incomplete ?read|unable to connect|network is unreachable", "network", transient=True),
    _rule(r"live event will begin|premieres? in|video unavailable|this video is unavailable"
          r"|this video is not available|content isn't available|http error 40[41]|http error 410", "unavailable"),
    _rule(r"unsupported url|is not a valid url", "unsupported_url"),
    _rule(r"did not get any data blocks|downloaded file is empty", "empty_file"),
)

_BOILERPLATE = re.compile(r"\s*\.?\s*(?:Use --cookies|See  https?://|Also see  https?://).*$", re.DOTALL)
_PREFIX = re.compile(r"^(?:ERROR:\s*)?")


def clean_message(exc: BaseException) -> str:
    """yt-dlp's message without the ``ERROR:`` prefix and the cookie how-to boilerplate."""
    text = _PREFIX.sub("", str(exc)).strip()
    return _BOILERPLATE.sub("", text).strip() or type(exc).__name__


def match_message(message: str) -> MessageRule | None:
    """The first rule of :data:`MESSAGE_RULES` matching a yt-dlp/YouTube message."""
    text = message.replace("\u2019", "'").replace("\u2018", "'")
    for rule in MESSAGE_RULES:
        if rule.pattern.search(text):
            return rule
    return None


def classify_ytdlp_error(exc: BaseException, what: str) -> RecordError | None:
    """The blift error for a yt-dlp failure, or None when ``exc`` is not one (a bug in our code,
    which should surface as itself)."""
    from yt_dlp.networking.exceptions import HTTPError, TransportError
    from yt_dlp.utils import GeoRestrictedError, YoutubeDLError

    chain = causes(exc)
    if not any(isinstance(e, (YoutubeDLError, OSError, TimeoutError)) for e in chain):
        return None
    message = clean_message(exc)
    text = f"{what}: {message}"
    for e in chain:
        if isinstance(e, GeoRestrictedError):
            return PermanentError(text, error_type="geo_blocked")
        if isinstance(e, HTTPError):
            status = int(e.status)
            if status == 429:
                return TransientError(text, error_type="rate_limited")
            if status >= 500 or status == 408:
                return TransientError(text, error_type="network")
            if status in (404, 410):
                return PermanentError(text, error_type="unavailable")
            if status in (401, 403):
                return PermanentError(text, error_type="forbidden")
        if isinstance(e, (TransportError, socket.timeout, TimeoutError, ConnectionError)):
            return TransientError(text, error_type="network")
    rule = match_message(message)
    if rule is not None:
        cls = TransientError if rule.transient else PermanentError
        return cls(text, error_type=rule.error_type)
    return PermanentError(text, error_type="extractor_error")


def raise_classified(exc: BaseException, what: str) -> None:
    """Re-raise a yt-dlp failure as its classified blift error (or as itself if it is not one)."""
    err = classify_ytdlp_error(exc, what)
    if err is None:
        raise exc
    raise err from exc


# --------------------------------------------------------------------------------------------
# Listings


def flat_entries(cfg: YoutubeClientConfig, url: str, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` entries of a playlist or channel, without resolving each video
    (yt-dlp ``extract_flat``): one page request per ~100 entries instead of one per video."""
    params = {**base_params(cfg), "extract_flat": "in_playlist", "playlistend": limit, "noplaylist": False}
    ydl = make_ydl(params)
    try:
        result = ydl.extract_info(url, download=False)
    except Exception as exc:  # noqa: BLE001 - classified; anything else re-raised as is
        raise_classified(exc, url)
        raise
    finally:
        ydl.close()
    if not isinstance(result, dict):
        return []
    if result.get("_type") not in ("playlist", "multi_video"):
        return [result]  # a single video where a playlist was expected: list it
    entries = result.get("entries") or []
    return [e for e in list(entries)[:limit] if isinstance(e, dict)]
