"""YouTube-shaped test material shared by the YouTube test modules (a pytest plugin: see
conftest.py): small videos made with ffmpeg once per session, a loopback video host, and info
dicts with the fields yt-dlp's YouTube extractor fills, whose format URLs point at that host.

Saved as ``.info.json`` files (:func:`write_info`), they go through yt-dlp's own
post-extraction path exactly as a live extraction would (``process_ie_result``).
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from servers.video_host import VideoHost

EPOCH = 1_767_225_600  # 2026-01-01: when the saved info dicts say they were extracted


# --------------------------------------------------------------------------------------------
# media made here


def _ffmpeg(out: Path, *args: str) -> bytes:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args, str(out)], check=True, timeout=60)
    return out.read_bytes()


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("clips")
    video = ["-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=2"]
    enc = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-movflags", "+faststart"]
    av = _ffmpeg(d / "av.mp4", *video, "-f", "lavfi", "-i", "sine=frequency=440:duration=2", *enc,
                 "-c:a", "aac", "-b:a", "32k", "-shortest")
    silent = _ffmpeg(d / "silent.mp4", "-f", "lavfi", "-i", "smptebars=size=160x120:rate=15:duration=3", *enc)
    rotated = _ffmpeg(d / "rot.mp4", "-i", str(d / "av.mp4"), "-c", "copy", "-metadata:s:v:0", "rotate=90")
    rng = random.Random(5)
    return {
        "av": av,
        "silent": silent,
        "rotated": rotated,
        "corrupt": b"\x00\x00\x00\x18ftypmp42" + rng.randbytes(20_000),
        "empty": b"",
        "big": av + rng.randbytes(200_000),  # valid start, 227 KB
    }


@pytest.fixture
def host() -> VideoHost:
    with VideoHost() as h:
        yield h


def yt_info(host: VideoHost, clips: dict[str, bytes], vid: str, clip: str = "av", **over: Any) -> dict[str, Any]:
    """A YouTube-shaped info dict (fields as yt-dlp's YouTube extractor gives them) whose format
    URL points at the loopback host. ``http_chunk_size`` is what the YouTube extractor sets, so
    yt-dlp downloads with Range requests as it does in production."""
    media = host.add(f"/videoplayback/{vid}.mp4", clips[clip])
    info = {
        "id": vid, "title": f"Video {vid}", "description": "A description.\nSecond line.",
        "extractor": "youtube", "extractor_key": "Youtube", "webpage_url": f"https://www.youtube.com/watch?v={vid}",
        "channel": "Test Channel", "channel_id": "UCaaaaaaaaaaaaaaaaaaaaaa", "uploader": "Test Channel",
        "uploader_id": "@zq_test_channel", "channel_follower_count": 12345,
        "view_count": 50_000, "like_count": 1200, "comment_count": 3, "duration": 2.0,
        "timestamp": 1_700_000_000, "upload_date": "20231114", "categories": ["Education"], "tags": ["a", "b"],
        "age_limit": 0, "availability": "public", "language": "en", "epoch": EPOCH,
        "heatmap": [{"start_time": 0.0, "end_time": 1.0, "value": 1.0},
                    {"start_time": 1.0, "end_time": 2.0, "value": 0.25}],
        "chapters": [{"start_time": 0.0, "end_time": 1.0, "title": "Intro"},
                     {"start_time": 1.0, "end_time": 2.0, "title": "End"}],
        "comments": [
            {"id": "Ug1", "parent": "root", "text": "first!", "like_count": 10, "author": "@zq_viewer",
             "author_id": "UCv1", "author_is_uploader": False, "is_pinned": True, "timestamp": 1_700_100_000,
             "_time_text": "2 years ago"},
            {"id": "Ug1.r1", "parent": "Ug1", "text": "reply", "like_count": 2, "author": "@zq_test_channel",
             "author_id": "UCaaaaaaaaaaaaaaaaaaaaaa", "author_is_uploader": True, "is_pinned": False,
             "timestamp": 1_700_200_000},
            {"id": "Ug2", "parent": "root", "text": "second", "like_count": 0, "author": "@zq_other",
             "timestamp": 1_700_300_000},
        ],
        "subtitles": {"en": [{"ext": "vtt", "url": host.add(f"/subs/{vid}.en.vtt", VTT, "text/vtt")}]},
        "automatic_captions": {"en": [{"ext": "json3",
                                       "url": host.add(f"/subs/{vid}.en.json3", JSON3, "application/json")}],
                               "de": [{"ext": "vtt", "url": host.base + f"/subs/{vid}.de.vtt"}]},
        "thumbnails": [{"url": "https://i.ytimg.com/vi/x/hq.jpg"}],
        "formats": [{"format_id": "18", "url": media, "ext": "mp4", "width": 160, "height": 120,
                     "vcodec": "avc1.42001E", "acodec": "mp4a.40.2", "protocol": "https",
                     "downloader_options": {"http_chunk_size": 10_000}, "http_headers": {"User-Agent": "x"}}],
    }
    info.update(over)
    return info


VTT = b"WEBVTT\nKind: captions\n\n00:00.000 --> 00:01.000\nHello <c>there</c> &amp; welcome\n\n" \
      b"00:01.000 --> 00:02.000\nHello there &amp; welcome\nsecond line\n"
JSON3 = orjson.dumps({"events": [{"segs": [{"utf8": "auto "}, {"utf8": "words"}]}, {"segs": [{"utf8": "auto words"}]},
                                 {"tStartMs": 5}, {"segs": [{"utf8": "more"}]}]})


def write_info(folder: Path, name: str, info: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.info.json"
    path.write_bytes(orjson.dumps(info))
    return path
