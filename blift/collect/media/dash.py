"""MPEG-DASH manifests (``.mpd``) read into the list of files to fetch: the part of a DASH
player that ``media.download`` needs, and nothing that fetches.

Why parse it here instead of handing the manifest URL to ffmpeg's DASH demuxer: ffmpeg would
open every segment URL itself, outside the downloader's address guard, host rules, rate limits,
byte caps and retries. So the manifest is read here, every segment is fetched by
:class:`~blift.collect.media.http_fetch.Fetcher` like any image, and ffmpeg only muxes local
files (:mod:`blift.collect.media.video_fetch`).

What is understood (static manifests, one period):

* ``BaseURL`` at every level (MPD, Period, AdaptationSet, Representation), each resolved against
  the one above, the first against the manifest's own URL;
* a representation that is one file (``BaseURL`` alone, or with ``SegmentBase``: Reddit's
  layout, ``DASH_720.mp4`` + ``DASH_AUDIO_128.mp4``): the whole file is fetched, the index
  ranges are not needed;
* ``SegmentList`` (``Initialization@sourceURL`` + ``SegmentURL@media``), or byte ranges that tile
  the BaseURL file (``ffmpeg -f dash -single_file 1``): that whole file;
* ``SegmentTemplate`` (inherited from Period or AdaptationSet, overridden per Representation)
  with ``$RepresentationID$``, ``$Number$``, ``$Time$``, ``$Bandwidth$`` (``%0Nd`` widths), either
  ``SegmentTimeline`` (``S@t``, ``@d``, ``@r`` including ``r=-1``) or a fixed ``@duration``
  (what ``ffmpeg -f dash`` writes).

Refused with :class:`DashError` (the caller's ``dash_failed``): live (``type="dynamic"``) and
multi-period manifests, byte ranges of separate segment files, a manifest with no video
representation, more than :data:`MAX_SEGMENTS` segments per track, XML that is not an MPD.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET  # noqa: N817 - the usual name
from dataclasses import dataclass, field
from urllib.parse import urljoin

MAX_MANIFEST_BYTES = 2 * 1024 * 1024
MAX_SEGMENTS = 20_000
_VIDEO_CODECS = ("avc", "hvc", "hev", "vp8", "vp08", "vp9", "vp09", "av01", "mp4v", "dvh")
_AUDIO_CODECS = ("mp4a", "opus", "vorbis", "ac-3", "ec-3", "flac", "mp3", "alac", "dts")


class DashError(Exception):
    """The manifest cannot be turned into files to fetch (the message says why)."""


@dataclass(frozen=True)
class Track:
    """One chosen representation: the URLs whose bodies, concatenated, are its media file."""

    kind: str  # video or audio
    rep_id: str
    mime: str | None
    codecs: str | None
    bandwidth: int
    width: int | None
    height: int | None
    urls: tuple[str, ...]

    @property
    def ext(self) -> str:
        """File extension for the concatenated track (only ffmpeg reads it: a hint)."""
        mime = (self.mime or "").lower()
        if "webm" in mime:
            return "webm"
        return "m4a" if self.kind == "audio" else "mp4"


@dataclass(frozen=True)
class Manifest:
    duration_s: float | None  # mediaPresentationDuration (or the period's), when stated
    video: Track
    audio: Track | None
    representations: dict[str, int] = field(default_factory=dict)  # video/audio: how many were offered


def looks_like_manifest(head: bytes) -> bool:
    """Whether a body's first bytes may be an MPD (XML); :func:`parse_manifest` decides."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return text.startswith((b"<?xml", b"<MPD", b"<mpd")) or text.startswith(b"<!--")


def parse_duration(value: str | None) -> float | None:
    """ISO 8601 duration (``PT1H2M3.5S``, ``P0Y0M0DT0H0M14.000S``) in seconds, or None."""
    if not value:
        return None
    m = re.fullmatch(
        r"\s*P(?:(\d+(?:\.\d+)?)Y)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)D)?"
        r"(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?\s*",
        value,
    )
    if not m or not any(m.groups()):
        return None
    years, months, days, hours, minutes, seconds = (float(g) if g else 0.0 for g in m.groups())
    if years or months:  # never seen in media manifests; approximate rather than refuse
        days += years * 365 + months * 30
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _kids(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def _kid(el: ET.Element | None, name: str) -> ET.Element | None:
    if el is None:
        return None
    kids = _kids(el, name)
    return kids[0] if kids else None


def _base(el: ET.Element, base: str) -> str:
    node = _kid(el, "BaseURL")
    text = (node.text or "").strip() if node is not None else ""
    return urljoin(base, text) if text else base


def _int(value: str | None, what: str, default: int | None = None) -> int:
    if value is None or value.strip() == "":
        if default is None:
            raise DashError(f"{what} is missing")
        return default
    try:
        return int(value.strip())
    except ValueError:
        raise DashError(f"{what}={value!r:.40} is not an integer") from None


def parse_manifest(data: bytes, url: str, max_height: int | None = None) -> Manifest:
    """The best video (highest bandwidth, at most ``max_height`` tall when any is) and best audio
    representation of a static single-period MPD, as URLs to fetch. Raises DashError."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise DashError(f"manifest is {len(data)} bytes, above the {MAX_MANIFEST_BYTES}-byte limit")
    try:
        root = ET.fromstring(data)  # expat >= 2.4 refuses entity-expansion bombs; no external entities
    except ET.ParseError as exc:
        raise DashError(f"manifest is not well-formed XML ({exc})") from None
    if _local(root.tag) != "MPD":
        raise DashError(f"XML root is <{_local(root.tag)}>, not an MPEG-DASH <MPD>")
    if (root.get("type") or "static") != "static":
        raise DashError(f"a {root.get('type')!r} (live) manifest is not downloadable")
    periods = _kids(root, "Period")
    if len(periods) != 1:
        raise DashError(f"manifest has {len(periods)} periods; only single-period manifests are read")
    period = periods[0]
    duration = parse_duration(root.get("mediaPresentationDuration")) or parse_duration(period.get("duration"))
    base = _base(period, _base(root, url))

    offered: dict[str, list[tuple[ET.Element, ET.Element, str]]] = {"video": [], "audio": []}
    for aset in _kids(period, "AdaptationSet"):
        aset_base = _base(aset, base)
        for rep in _kids(aset, "Representation"):
            kind = _content_kind(aset, rep)
            if kind in offered:
                offered[kind].append((aset, rep, _base(rep, aset_base)))
    if not offered["video"]:
        raise DashError("manifest offers no video representation")

    def pick(kind: str) -> Track | None:
        cands = offered[kind]
        if not cands:
            return None

        def height(c: tuple[ET.Element, ET.Element, str]) -> int:
            return _int(c[1].get("height") or c[0].get("height"), "height", 0)

        if kind == "video" and max_height is not None:
            fitting = [c for c in cands if 0 < height(c) <= max_height]
            cands = fitting or [min(cands, key=lambda c: (height(c) or 1 << 30, _bandwidth(c[1])))]

        def rank(c: tuple[ET.Element, ET.Element, str]) -> tuple[int, int]:
            return _bandwidth(c[1]), height(c)

        aset, rep, rep_base = max(cands, key=rank)
        return _track(kind, period, aset, rep, rep_base, duration)

    video = pick("video")
    assert video is not None
    return Manifest(duration, video, pick("audio"), {k: len(v) for k, v in offered.items()})


def _content_kind(aset: ET.Element, rep: ET.Element) -> str | None:
    kind = aset.get("contentType") or rep.get("contentType")
    if kind:
        return kind.lower()
    mime = rep.get("mimeType") or aset.get("mimeType") or ""
    if "/" in mime:
        return mime.split("/", 1)[0].lower()
    codecs = (rep.get("codecs") or aset.get("codecs") or "").lower()
    if codecs.startswith(_VIDEO_CODECS):
        return "video"
    if codecs.startswith(_AUDIO_CODECS):
        return "audio"
    if rep.get("width") or rep.get("height"):
        return "video"
    return None


def _bandwidth(rep: ET.Element) -> int:
    try:
        return int(rep.get("bandwidth") or 0)
    except ValueError:
        return 0


def _track(kind: str, period: ET.Element, aset: ET.Element, rep: ET.Element, base: str,
           duration: float | None) -> Track:
    rep_id = rep.get("id") or ""
    where = f"{kind} representation {rep_id!r}"
    bandwidth = _bandwidth(rep)
    template = _merged_template(period, aset, rep)
    seg_list = next((x for x in (_kid(rep, "SegmentList"), _kid(aset, "SegmentList"), _kid(period, "SegmentList"))
                     if x is not None), None)
    one_file = _kid(rep, "BaseURL") is not None or _kid(aset, "BaseURL") is not None
    if template is not None:
        urls = _template_urls(template, rep_id, bandwidth, base, duration, where)
    elif seg_list is not None:
        urls = _list_urls(seg_list, base, where, one_file)
    else:  # BaseURL alone or with SegmentBase: the representation is one file
        if not one_file:
            raise DashError(f"{where} names no file (no BaseURL, SegmentList or SegmentTemplate)")
        urls = [base]
    width = rep.get("width") or aset.get("width")
    height = rep.get("height") or aset.get("height")
    return Track(
        kind=kind, rep_id=rep_id, mime=rep.get("mimeType") or aset.get("mimeType"),
        codecs=rep.get("codecs") or aset.get("codecs"), bandwidth=bandwidth,
        width=_int(width, "width") if width else None, height=_int(height, "height") if height else None,
        urls=tuple(urls),
    )  # fmt: skip


def _merged_template(period: ET.Element, aset: ET.Element, rep: ET.Element) -> ET.Element | None:
    """The SegmentTemplate in force for ``rep``: attributes inherited downwards, the most
    specific SegmentTimeline kept."""
    levels = [t for t in (_kid(period, "SegmentTemplate"), _kid(aset, "SegmentTemplate"),
                          _kid(rep, "SegmentTemplate")) if t is not None]
    if not levels:
        return None
    merged = ET.Element("SegmentTemplate")
    for level in levels:
        merged.attrib.update(level.attrib)
    for level in reversed(levels):
        timeline = _kid(level, "SegmentTimeline")
        if timeline is not None:
            merged.append(timeline)
            break
    return merged


_TEMPLATE_VAR = re.compile(r"\$(RepresentationID|Number|Time|Bandwidth)(?:%0?(\d*)d)?\$|\$\$")


def _fill(template: str, rep_id: str, bandwidth: int, number: int | None = None, time: int | None = None) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, width = m.group(1), m.group(2)
        value: object = {"RepresentationID": rep_id, "Number": number, "Time": time, "Bandwidth": bandwidth}[name]
        if value is None:
            raise DashError(f"template {template!r} uses ${name}$, which this manifest does not define")
        if name != "RepresentationID" and width:
            return f"{int(value):0{int(width)}d}"  # type: ignore[call-overload]
        return str(value)

    return _TEMPLATE_VAR.sub(sub, template)


def _template_urls(tpl: ET.Element, rep_id: str, bandwidth: int, base: str, duration: float | None,
                   where: str) -> list[str]:
    media = tpl.get("media")
    if not media:
        raise DashError(f"{where}: SegmentTemplate has no media attribute")
    timescale = _int(tpl.get("timescale"), f"{where}: timescale", 1) or 1
    number = _int(tpl.get("startNumber"), f"{where}: startNumber", 1)
    urls: list[str] = []
    init = tpl.get("initialization")
    if init:
        urls.append(urljoin(base, _fill(init, rep_id, bandwidth)))
    timeline = _kid(tpl, "SegmentTimeline")
    if timeline is not None:
        t = 0
        items = _kids(timeline, "S")
        end_of_period = None if duration is None else round(duration * timescale)
        for i, s in enumerate(items):
            t = _int(s.get("t"), f"{where}: S@t", t)
            d = _int(s.get("d"), f"{where}: S@d")
            if d <= 0:
                raise DashError(f"{where}: S@d={d} must be positive")
            r = _int(s.get("r"), f"{where}: S@r", 0)
            if r < 0:  # repeat until the next S starts, or the period ends
                nxt = items[i + 1].get("t") if i + 1 < len(items) else None
                stop = int(nxt) if nxt is not None else end_of_period
                if stop is None:
                    raise DashError(f"{where}: S@r=-1 with no period duration to end it")
                r = max(0, math.ceil((stop - t) / d) - 1)
            for _ in range(r + 1):
                urls.append(urljoin(base, _fill(media, rep_id, bandwidth, number, t)))
                number += 1
                t += d
                if len(urls) > MAX_SEGMENTS:
                    raise DashError(f"{where}: more than {MAX_SEGMENTS} segments")
        return urls
    seg = tpl.get("duration")
    if seg is None:
        raise DashError(f"{where}: SegmentTemplate has neither SegmentTimeline nor duration")
    seg_d = _int(seg, f"{where}: SegmentTemplate@duration")
    if seg_d <= 0:
        raise DashError(f"{where}: SegmentTemplate@duration={seg_d} must be positive")
    if duration is None:
        raise DashError(f"{where}: numbered segments need the manifest's duration, which is missing")
    count = max(1, math.ceil(duration * timescale / seg_d - 1e-6))
    if count > MAX_SEGMENTS:
        raise DashError(f"{where}: {count} segments, more than {MAX_SEGMENTS}")
    for k in range(count):
        urls.append(urljoin(base, _fill(media, rep_id, bandwidth, number + k, k * seg_d)))
    return urls


def _list_urls(seg_list: ET.Element, base: str, where: str, one_file: bool) -> list[str]:
    init = _kid(seg_list, "Initialization")
    segs = _kids(seg_list, "SegmentURL")
    if not segs:
        raise DashError(f"{where}: SegmentList lists no segment")
    if not any(s.get("media") for s in segs) and (init is None or not init.get("sourceURL")):
        # every entry is a byte range of the BaseURL file (what ``ffmpeg -f dash -single_file 1``
        # writes): the ranges tile that one file, so the whole file is the track
        if not one_file:
            raise DashError(f"{where}: SegmentList of byte ranges without a BaseURL file")
        return [base]
    urls: list[str] = []
    if init is not None:
        if init.get("range"):
            raise DashError(f"{where}: byte-range initialization segments are not supported")
        if init.get("sourceURL"):
            urls.append(urljoin(base, init.get("sourceURL") or ""))
    for seg in segs:
        if seg.get("mediaRange") or not seg.get("media"):
            raise DashError(f"{where}: byte-range segments of separate files (SegmentURL@mediaRange) are not "
                            "supported")
        urls.append(urljoin(base, seg.get("media") or ""))
        if len(urls) > MAX_SEGMENTS:
            raise DashError(f"{where}: more than {MAX_SEGMENTS} segments")
    return urls
