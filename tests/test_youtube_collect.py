"""youtube.list, youtube.collect and media.download for videos, through real yt-dlp on loopback.

Videos are made with ffmpeg once per session; a loopback host (tests/servers/video_host.py)
serves them with HTTP Range support and logs every request, so "a dropped video is never
fetched" is asserted on what the server saw. YouTube itself is never contacted: YouTube-shaped
info dicts (the fields yt-dlp's YouTube extractor fills) carry format URLs on the loopback host
and go through yt-dlp's own post-extraction path (``process_ie_result``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from blift import schemas, tables
from blift.collect.media.download import DownloadStage
from blift.collect.media.video_probe import VideoRejected, parse_probe, probe_video
from blift.collect.youtube.client import (
    MESSAGE_RULES,
    YoutubeClientConfig,
    channel_videos_url,
    classify_ytdlp_error,
    video_ref,
)
from blift.collect.youtube.collect import YoutubeCollectStage
from blift.collect.youtube.list import YoutubeListStage
from blift.collect.youtube.rows import json3_to_text, vtt_to_text
from blift.errors import ConfigError, PermanentError, TransientError
from blift.ids import short_id, unpack_raw
from servers.video_host import VideoHost
from youtube_fakes import EPOCH, JSON3, VTT, write_info, yt_info

ROOT = Path(__file__).resolve().parents[1]


def collect_stage(run_dir: Path, **over: Any) -> YoutubeCollectStage:
    opts: dict[str, Any] = {"retries": 0, "socket_timeout_s": 5, "threads": 1}
    opts.update(over)
    return YoutubeCollectStage(YoutubeCollectStage.Config(**opts), run_dir)


def ref(item_id: str, url: str) -> dict[str, Any]:
    return {"uid": f"youtube:{item_id}", "platform": "youtube", "item_id": item_id, "request_id": "r", "rank": 0,
            "url": url}


def run_collect(
    stage: YoutubeCollectStage, *refs: dict[str, Any]
) -> tuple[dict[str, list[dict]], list[dict], dict[str, int]]:
    """Collect refs one by one; tables checked against their schemas."""
    out: dict[str, list[dict]] = {"items": [], "videos": [], "comments": []}
    dropped, counters = [], {}
    for r in refs:
        res = stage.process_record(r["uid"], r)
        for name, rows in res.tables.items():
            out[name].extend(rows)
        dropped += res.dropped
        for k, v in res.counters.items():
            counters[k] = counters.get(k, 0) + v
    for name, rows in out.items():
        schemas.get(name).from_rows(rows)
    return out, dropped, counters


def list_refs(entries: list[dict[str, Any]], run_dir: Path) -> tuple[list[dict], list[dict]]:
    stage = YoutubeListStage(YoutubeListStage.Config(retries=0), run_dir)
    refs, dropped = [], []
    for row in YoutubeListStage.expand_requests(entries):
        res = stage.process_record(row["request_id"], row)
        refs += res.tables["video_refs"]
        dropped += res.dropped
    schemas.get("item_refs").from_rows(refs)
    return refs, dropped


def media_rows(run_dir: Path, tables_: dict[str, list[dict]]) -> dict[str, dict]:
    """media.download over collected items + videos, via its records() like the runner."""
    from blift.stage import ShardInput

    stage = DownloadStage(DownloadStage.Config(), run_dir=run_dir)
    shard = ShardInput("s", {"items": schemas.get("items").from_rows(tables_["items"]),
                             "videos": schemas.get("videos").from_rows(tables_["videos"])}, run_dir)
    rows = []
    for key, payload in stage.records(shard):
        rows += stage.process_record(key, payload).tables["media"]
    schemas.get("media").from_rows(rows)
    return {r["uid"]: r for r in rows}


# --------------------------------------------------------------------------------------------
# collection


def test_plain_mp4_through_the_generic_extractor(host: VideoHost, clips, tmp_path: Path) -> None:
    url = host.add("/files/clip.mp4", clips["av"])
    r = video_ref(url)
    assert (r.item_id, r.url, r.ie_key) == ("clip", url, None)
    out, dropped, counters = run_collect(collect_stage(tmp_path, min_views=0), ref(r.item_id, url))
    assert not dropped
    (item,), (video,) = out["items"], out["videos"]
    assert (item["uid"], item["source"], item["media_kind"], item["media_urls"]) == (
        "youtube:clip", "api", "video", [url])
    assert video["file_status"] == "ok" and video["source_info"] == "extract" and video["format_id"] == "mp4"
    stored = tmp_path / video["file_path"]
    assert stored.read_bytes() == clips["av"] and video["file_bytes"] == len(clips["av"])
    assert video["file_path"] == f"media_files/{video['file_sha256'][:2]}/{video['file_sha256']}.mp4"
    assert not list((tmp_path / ".tmp" / "youtube.collect").iterdir()), "temp folder left behind"
    # the same URL with the default rule (>= 10k views) is dropped: the generic page has no view count
    _, dropped, _ = run_collect(collect_stage(tmp_path), ref("clip", url))
    assert [(d["reason"], d["uid"]) for d in dropped] == [("unknown_views", "youtube:clip")]


def test_youtube_info_json_rows(host: VideoHost, clips, tmp_path: Path) -> None:
    folder = tmp_path / "saved"
    write_info(folder, "one", yt_info(host, clips, "AAAAAAAAAAA"))
    refs, _ = list_refs([{"info_json_dir": str(folder)}], tmp_path)
    assert [(r["uid"], r["url"]) for r in refs] == [("youtube:AAAAAAAAAAA", str(folder / "one.info.json"))]
    out, dropped, counters = run_collect(collect_stage(tmp_path, max_comments=2), *refs)
    assert not dropped
    (item,), (video,) = out["items"], out["videos"]
    assert item["source"] == "info_json" and item["platform"] == "youtube" and item["item_id"] == "AAAAAAAAAAA"
    assert (item["view_count"], item["like_count"], item["comment_count"], item["subscriber_count"]) == (
        50_000, 1200, 3, 12345)
    assert item["heatmap"] == [{"start_s": 0.0, "end_s": 1.0, "value": 1.0},
                               {"start_s": 1.0, "end_s": 2.0, "value": 0.25}]
    assert item["over_18"] is False and item["community"] == "Test Channel" and item["text"].startswith("A description")
    assert item["created_at"].timestamp() == 1_700_000_000 and item["collected_at"].timestamp() == EPOCH
    assert item["media_urls"] == ["https://www.youtube.com/watch?v=AAAAAAAAAAA"]
    raw = unpack_raw(item["raw"])
    assert raw["id"] == "AAAAAAAAAAA" and raw["view_count"] == 50_000
    for gone in ("formats", "thumbnails", "comments", "http_headers", "url"):
        assert gone not in raw
    assert raw["subtitles"] == {"en": ["vtt"]} and "127.0.0.1" not in item["raw"].decode()
    assert "zq_test_channel" not in item["raw"].decode() and raw["uploader_id"] != "@zq_test_channel"

    assert video["categories"] == ["Education"] and video["age_limit"] == 0 and video["availability"] == "public"
    assert video["chapters"] == [{"start_s": 0.0, "end_s": 1.0, "title": "Intro"},
                                 {"start_s": 1.0, "end_s": 2.0, "title": "End"}]
    assert video["subtitles"] == [{"lang": "en", "kind": "manual", "text": "Hello there & welcome\nsecond line"},
                                  {"lang": "en", "kind": "automatic", "text": "auto words\nmore"}]
    assert video["comment_times_estimated"] is True and video["source_info"] == "info_json"
    assert video["file_status"] == "ok" and video["format_id"] == "18"
    assert (tmp_path / video["file_path"]).read_bytes() == clips["av"]

    comments = {c["comment_id"]: c for c in out["comments"]}
    assert set(comments) == {"Ug1", "Ug1.r1"} and counters["comments_capped"] == 1  # max_comments=2
    assert (comments["Ug1"]["parent_id"], comments["Ug1"]["depth"], comments["Ug1"]["stickied"]) == (None, 0, True)
    assert (comments["Ug1.r1"]["parent_id"], comments["Ug1.r1"]["depth"], comments["Ug1.r1"]["is_submitter"]) == (
        "Ug1", 1, True)
    assert comments["Ug1"]["like_count"] == 10 and comments["Ug1"]["score"] is None
    assert comments["Ug1.r1"]["author_hash"] == item["author_hash"]  # the uploader, hashed the same way
    assert all(b"zq_" not in c["raw"] for c in out["comments"])
    # yt-dlp fetched the file with Range requests, in chunks, as it does from YouTube
    ranges = [r.range for r in host.requests_to("/videoplayback/AAAAAAAAAAA.mp4")]
    assert len(ranges) >= 2 and all(r and r.startswith("bytes=") for r in ranges)


def test_info_json_with_an_empty_epoch_is_collected_now(host: VideoHost, clips, tmp_path: Path, monkeypatch) -> None:
    """An empty ``epoch`` counts as none: the snapshot time is now, not a null collected_at."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    folder = tmp_path / "saved"
    write_info(folder, "one", yt_info(host, clips, "AAAAAAAAAAA", epoch=""))
    refs, _ = list_refs([{"info_json_dir": str(folder)}], tmp_path)
    out, dropped, _ = run_collect(collect_stage(tmp_path, download=False), *refs)
    assert not dropped
    assert [i["collected_at"].timestamp() for i in out["items"]] == [1767225600]
    assert {c["collected_at"].timestamp() for c in out["comments"]} == {1767225600}


def test_playlist_info_json_expands_to_entries(host: VideoHost, clips, tmp_path: Path) -> None:
    folder = tmp_path / "saved"
    playlist = {"_type": "playlist", "id": "PL1", "title": "list", "entries": [
        yt_info(host, clips, "BBBBBBBBBBB"),
        {"_type": "url", "ie_key": "Youtube", "id": "CCCCCCCCCCC", "url": "https://www.youtube.com/watch?v=CCCCCCCCCCC"},
        yt_info(host, clips, "DDDDDDDDDDD", clip="silent"),
    ]}
    path = write_info(folder, "list", playlist)
    (folder / "broken.info.json").write_text("{not json")
    refs, dropped = list_refs([{"info_json_dir": str(folder)}], tmp_path)
    assert [(r["item_id"], r["url"], r["rank"]) for r in refs] == [
        ("BBBBBBBBBBB", f"{path}#0", 0), ("CCCCCCCCCCC", "https://www.youtube.com/watch?v=CCCCCCCCCCC", 1),
        ("DDDDDDDDDDD", f"{path}#2", 2)]
    assert [(d["reason"], d["record_id"]) for d in dropped] == [("bad_info_json", str(folder / "broken.info.json"))]
    out, _, _ = run_collect(collect_stage(tmp_path), refs[0], refs[2])
    assert [v["uid"] for v in out["videos"]] == ["youtube:BBBBBBBBBBB", "youtube:DDDDDDDDDDD"]
    assert all(v["file_status"] == "ok" for v in out["videos"])


def test_rules_drop_before_anything_is_fetched(host: VideoHost, clips, tmp_path: Path) -> None:
    folder = tmp_path / "saved"
    cases = {
        "fewviews000": dict(view_count=9_999),
        "gamingvideo": dict(categories=["Gaming"]),
        "agelimited0": dict(age_limit=18),
        "privatevide": dict(availability="needs_auth"),
        "keptvideo00": dict(view_count=10_000),
    }
    for vid, over in cases.items():
        write_info(folder, vid, yt_info(host, clips, vid, **over))
    refs, _ = list_refs([{"info_json_dir": str(folder)}], tmp_path)
    out, dropped, counters = run_collect(collect_stage(tmp_path, exclude_categories=["gaming"]), *refs)
    assert {d["uid"]: d["reason"] for d in dropped} == {
        "youtube:fewviews000": "few_views", "youtube:gamingvideo": "excluded_category",
        "youtube:agelimited0": "age_limited", "youtube:privatevide": "not_public"}
    assert all(d["detail"] and d["table"] == "video_refs" for d in dropped)
    assert [i["uid"] for i in out["items"]] == ["youtube:keptvideo00"] and counters["dropped_few_views"] == 1
    fetched = {r.path for r in host.log}
    assert fetched == {"/videoplayback/keptvideo00.mp4", "/subs/keptvideo00.en.vtt", "/subs/keptvideo00.en.json3"}
    # rules can be turned off
    out, dropped, _ = run_collect(collect_stage(tmp_path, min_views=0, drop_age_limited=False, drop_not_public=False,
                                                download=False), *refs)
    assert not dropped and len(out["items"]) == 5
    assert ({v["file_status"] for v in out["videos"]} == {"skipped"}
            and {v["file_reason"] for v in out["videos"]} == {"download_disabled"})


def test_bad_files_probe_and_size_cap(host: VideoHost, clips, tmp_path: Path) -> None:
    refs = [ref(name, host.add(f"/files/{name}.mp4", clips[name]))
            for name in ("av", "silent", "rotated", "corrupt", "empty", "big")]
    out, dropped, _ = run_collect(collect_stage(tmp_path, min_views=0, max_bytes=100_000), *refs)
    assert not dropped
    videos = {v["uid"].split(":")[1]: v for v in out["videos"]}
    assert (videos["big"]["file_status"], videos["big"]["file_reason"]) == ("failed", "too_large")
    assert "max_bytes=100000" in videos["big"]["file_error"] and videos["big"]["file_path"] is None
    assert not list((tmp_path / ".tmp" / "youtube.collect").iterdir()), "partial download left behind"
    stored = {p.name for p in (tmp_path / "media_files").rglob("*") if p.is_file()}
    assert (videos["empty"]["file_status"], videos["empty"]["file_reason"]) == ("failed", "empty_file")
    assert len(stored) == 4 and all(v["file_path"] for k, v in videos.items() if k not in ("big", "empty"))

    media = media_rows(tmp_path, out)
    av, silent, rot = media["youtube:av"], media["youtube:silent"], media["youtube:rotated"]
    assert (av["status"], av["mime"], av["width"], av["height"], av["fps"], av["has_audio"]) == (
        "ok", "video/mp4", 160, 120, 10.0, True)
    assert av["duration_s"] == pytest.approx(2.0, abs=0.1) and av["sha256"] == videos["av"]["file_sha256"]
    assert av["bytes"] == len(clips["av"]) and av["path"] == videos["av"]["file_path"] and av["index"] == 0
    assert (silent["status"], silent["has_audio"], silent["fps"]) == ("ok", False, 15.0)
    assert silent["duration_s"] == pytest.approx(3.0, abs=0.1)
    assert (rot["width"], rot["height"]) == (120, 160)  # displayed size: rotated 90 degrees
    corrupt = media["youtube:corrupt"]
    assert (corrupt["status"], corrupt["reason"], corrupt["path"]) == (
        "failed", "bad_video", videos["corrupt"]["file_path"])
    assert (media["youtube:empty"]["status"], media["youtube:empty"]["reason"]) == ("failed", "empty_file")
    big = media["youtube:big"]
    assert (big["status"], big["reason"], big["path"]) == ("failed", "too_large", None)


def test_media_download_video_rows_without_a_file(tmp_path: Path) -> None:
    base = {"platform": "youtube", "source": "api", "collected_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
            "media_kind": "video"}
    items = [{**base, "uid": "youtube:skip", "item_id": "skip", "media_urls": ["https://www.youtube.com/watch?v=skip"]},
             {**base, "uid": "youtube:gone", "item_id": "gone", "media_urls": ["https://www.youtube.com/watch?v=gone"]},
             {**base, "uid": "reddit:vid", "platform": "reddit", "item_id": "vid", "media_urls": []}]
    items.append({**base, "uid": "youtube:zero", "item_id": "zero", "media_urls": ["https://www.youtube.com/watch?v=zero"]})
    zero = tmp_path / "media_files" / "e3" / "zero.mp4"
    zero.parent.mkdir(parents=True)
    zero.write_bytes(b"")
    videos = [{"uid": "youtube:skip", "file_status": "skipped", "file_reason": "download_disabled"},
              {"uid": "youtube:gone", "file_status": "ok", "file_path": "media_files/ab/missing.mp4",
               "file_sha256": "ab"},
              {"uid": "youtube:zero", "file_status": "ok", "file_path": "media_files/e3/zero.mp4", "file_sha256": "e3"}]
    media = media_rows(tmp_path, {"items": items, "videos": videos})
    assert (media["youtube:zero"]["status"], media["youtube:zero"]["reason"]) == ("failed", "bad_video")
    assert "empty file" in media["youtube:zero"]["error"]
    assert (media["youtube:skip"]["status"], media["youtube:skip"]["reason"]) == ("skipped", "download_disabled")
    assert (media["youtube:gone"]["status"], media["youtube:gone"]["reason"]) == ("failed", "missing_file")
    assert (media["reddit:vid"]["status"], media["reddit:vid"]["reason"]) == ("skipped", "no_media")


def test_probe_parsing(tmp_path: Path, clips) -> None:
    (tmp_path / "v.mp4").write_bytes(clips["silent"])
    assert probe_video(tmp_path / "v.mp4").has_audio is False
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(VideoRejected, match="empty file") as info:
        probe_video(tmp_path / "zero.mp4")
    assert info.value.reason == "bad_video"
    facts = parse_probe({"format": {"format_name": "matroska,webm", "duration": "4.5"}, "streams": [
        {"codec_type": "video", "codec_name": "vp9", "width": 640, "height": 360, "avg_frame_rate": "30000/1001"},
        {"codec_type": "audio", "codec_name": "opus"}]})
    assert (facts.mime, facts.fps, facts.duration_s, facts.has_audio) == ("video/webm", 29.97003, 4.5, True)
    with pytest.raises(VideoRejected, match="no video stream"):
        parse_probe({"format": {"format_name": "mp3"}, "streams": [{"codec_type": "audio", "codec_name": "mp3"}]})


# --------------------------------------------------------------------------------------------
# errors


def _extractor_error(msg: str, vid: str = "dQw4w9WgXcQ") -> Exception:
    """The exception yt-dlp's YoutubeDL raises for an extractor failure: the ExtractorError the
    YouTube extractor raised (``raise_no_formats(reason, expected=True)``), wrapped in a
    DownloadError by ``report_error``."""
    from yt_dlp.utils import DownloadError, ExtractorError

    try:
        raise ExtractorError(msg, expected=True, video_id=vid, ie="youtube")
    except ExtractorError as e:
        return DownloadError(f"ERROR: {e}", sys.exc_info())


HINT = (". Use --cookies-from-browser or --cookies for the authentication. See  https://github.com/yt-dlp/yt-dlp/wiki/FAQ"
        "#how-do-i-pass-cookies-to-yt-dlp  for how to manually pass cookies. Also see  https://github.com/yt-dlp/yt-dlp/wiki/"
        "Extractors#exporting-youtube-cookies  for tips on effectively exporting YouTube cookies")

# (message as yt-dlp's YouTube extractor / YoutubeDL raise it, error_type, transient)
REAL_MESSAGES = [
    ("Sign in to confirm you\u2019re not a bot" + HINT, "bot_check", False),
    ("Sign in to confirm you're not a bot. This helps protect our community. Learn more", "bot_check", False),
    ("Private video. Sign in if you've been granted access to this video" + HINT, "private", False),
    ("Join this channel to get access to members-only content like this video, and other exclusive perks.",
     "private", False),
    ("Video unavailable. This video has been removed by the uploader", "removed", False),
    ("Video unavailable. This video is no longer available because the YouTube account associated with this video "
     "has been terminated.", "removed", False),
    ("This video has been removed for violating YouTube's Terms of Service", "removed", False),
    ("Sign in to confirm your age. This video may be inappropriate for some users." + HINT, "age_gated", False),
    ("Video unavailable. The uploader has not made this video available in your country", "geo_blocked", False),
    ("Requested format is not available. Use --list-formats for a list of available formats", "no_formats", False),
    ("No video formats found!", "no_formats", False),
    ("This video is DRM protected", "no_formats", False),
    ("Video unavailable", "unavailable", False),
    ("This video is not available", "unavailable", False),
    ("This live event will begin in 3 hours.", "unavailable", False),
    ("This content isn't available, try again later. The current session has been rate-limited by YouTube for up to "
     "an hour.", "rate_limited", True),
    ("Unable to download API page: HTTP Error 503: Service Unavailable", "network", True),
    ("Unable to download webpage: The read operation timed out", "network", True),
    ("Unsupported URL: https://example.com/", "unsupported_url", False),
    ("Did not get any data blocks", "empty_file", False),
]


@pytest.mark.parametrize(("message", "error_type", "transient"), REAL_MESSAGES)
def test_error_table_on_real_ytdlp_messages(message: str, error_type: str, transient: bool) -> None:
    err = classify_ytdlp_error(_extractor_error(message), "video youtube:dQw4w9WgXcQ")
    assert isinstance(err, TransientError if transient else PermanentError)
    assert err.error_type == error_type
    assert str(err).startswith("video youtube:dQw4w9WgXcQ: [youtube] dQw4w9WgXcQ: ")
    assert "--cookies" not in str(err)  # the how-to boilerplate is cut


def test_error_table_covers_every_rule() -> None:
    assert {t for _, t, _ in REAL_MESSAGES} >= {r.error_type for r in MESSAGE_RULES}


def test_geo_error_class_and_bugs_are_not_classified() -> None:
    from yt_dlp.utils import GeoRestrictedError

    err = classify_ytdlp_error(GeoRestrictedError("The uploader has not made this video available in your country"),
                               "v")
    assert isinstance(err, PermanentError) and err.error_type == "geo_blocked"
    assert classify_ytdlp_error(KeyError("a bug of ours"), "v") is None


def test_network_errors_from_a_real_server(host: VideoHost, tmp_path: Path) -> None:
    stage = collect_stage(tmp_path, min_views=0)
    host.add("/e/busy.mp4", b"x", statuses=[503] * 5)
    host.add("/e/limited.mp4", b"x", statuses=[429] * 5)
    cases = {"missing": (PermanentError, "unavailable"), "busy": (TransientError, "network"),
             "limited": (TransientError, "rate_limited")}
    for name, (cls, error_type) in cases.items():
        with pytest.raises(cls) as info:
            stage.process_record(f"youtube:{name}", ref(name, f"{host.base}/e/{name}.mp4"))
        assert info.value.error_type == error_type, name
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransientError) as info:
        stage.process_record("youtube:x", ref("x", f"http://127.0.0.1:{port}/x.mp4"))
    assert info.value.error_type == "network"


def test_failed_file_download_keeps_the_metadata(host: VideoHost, clips, tmp_path: Path) -> None:
    """The page was read but the media URL answers 403 (an expired saved URL): the video is still
    collected, with the file marked failed; a 503 instead fails the record as transient."""
    folder = tmp_path / "saved"
    info = yt_info(host, clips, "EEEEEEEEEEE")
    host.add("/videoplayback/EEEEEEEEEEE.mp4", b"", statuses=[403] * 10)
    write_info(folder, "e", info)
    refs, _ = list_refs([{"info_json_dir": str(folder)}], tmp_path)
    out, _, _ = run_collect(collect_stage(tmp_path), *refs)
    (video,) = out["videos"]
    assert (video["file_status"], video["file_reason"]) == ("failed", "forbidden") and "403" in video["file_error"]
    assert len(out["items"]) == 1 and len(out["comments"]) == 3
    host.add("/videoplayback/EEEEEEEEEEE.mp4", b"", statuses=[503] * 10)
    with pytest.raises(TransientError):
        run_collect(collect_stage(tmp_path), *refs)


# --------------------------------------------------------------------------------------------
# requests and listings


def test_expand_requests_and_config_errors(tmp_path: Path) -> None:
    url_file = tmp_path / "urls.txt"
    url_file.write_text("# my list\nhttps://youtu.be/AAAAAAAAAAA\n\nhttps://www.youtube.com/shorts/BBBBBBBBBBB  \n"
                        "CCCCCCCCCCC\nhttps://www.youtube.com/watch?v=AAAAAAAAAAA&t=10\n")
    rows = YoutubeListStage.expand_requests([{"url_file": str(url_file)}])
    spec = {"urls": [f"https://www.youtube.com/watch?v={v}" for v in ("AAAAAAAAAAA", "BBBBBBBBBBB", "CCCCCCCCCCC")]}
    assert rows == [{"request_id": short_id("youtube", "urls", spec), "kind": "urls",
                     "spec": json.dumps(spec, separators=(",", ":"))}]
    many = YoutubeListStage.expand_requests([{"urls": [f"https://example.com/v{i}.mp4" for i in range(1200)]}])
    assert [len(orjson.loads(r["spec"])["urls"]) for r in many] == [500, 500, 200]
    (ch,) = YoutubeListStage.expand_requests([{"channel": "https://www.youtube.com/@SomeChannel", "limit": 5}])
    assert orjson.loads(ch["spec"]) == {"channel": "https://www.youtube.com/@SomeChannel/videos", "limit": 5}
    assert ch["request_id"] == short_id("youtube", "channel", orjson.loads(ch["spec"]))

    bad = [
        ([{"urls": []}], "requests[0]: field 'urls'"),
        ([{"urls": ["ftp://x/y"]}], "requests[0]: field 'urls'"),
        ([{"urls": ["https://youtu.be/AAAAAAAAAAA"]}, {"playlist": "https://x/list", "limit": 0}],
         "requests[1]: field 'limit'"),
        ([{"playlist": "https://x/list", "limit": 9_999_999}], "field 'limit'"),
        ([{"channel": "nope"}], "requests[0]: field 'channel'"),
        ([{"urls": ["https://youtu.be/AAAAAAAAAAA"], "playlist": "https://x"}], "exactly one of"),
        ([{"playlist": "https://x", "sort": "new"}], "field 'sort'"),
        ([{"subreddits": ["pics"]}], "exactly one of"),
        ([{"url_file": str(tmp_path / "nope.txt")}], "field 'url_file': cannot read"),
        ([{"info_json_dir": str(tmp_path / "nope")}], "field 'info_json_dir': folder"),
        (["https://youtu.be/AAAAAAAAAAA"], "requests[0]: expected a mapping"),
    ]
    for specs, message in bad:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            YoutubeListStage.expand_requests(specs)
    url_file.write_text("https://youtu.be/AAAAAAAAAAA\nnot a url\n")
    with pytest.raises(ConfigError, match=r"urls.txt, line 2"):
        YoutubeListStage.expand_requests([{"url_file": str(url_file)}])


def test_channel_url_points_at_videos_tab() -> None:
    assert channel_videos_url("https://www.youtube.com/@name") == "https://www.youtube.com/@name/videos"
    assert channel_videos_url("https://youtube.com/channel/UCaaaaaaaaaaaaaaaaaaaaaa/") == \
        "https://youtube.com/channel/UCaaaaaaaaaaaaaaaaaaaaaa/videos"
    assert channel_videos_url("https://www.youtube.com/@name/shorts") == "https://www.youtube.com/@name/shorts"
    assert channel_videos_url("https://example.com/list") == "https://example.com/list"


def test_urls_and_playlist_listings(host: VideoHost, tmp_path: Path) -> None:
    urls = ["https://youtu.be/AAAAAAAAAAA", "https://www.youtube.com/embed/BBBBBBBBBBB?start=3", "AAAAAAAAAAA"]
    refs, _ = list_refs([{"urls": urls}], tmp_path)
    assert [(r["uid"], r["url"], r["rank"]) for r in refs] == [
        ("youtube:AAAAAAAAAAA", "https://www.youtube.com/watch?v=AAAAAAAAAAA", 0),
        ("youtube:BBBBBBBBBBB", "https://www.youtube.com/watch?v=BBBBBBBBBBB", 1)]
    assert not host.log  # a URL list is not fetched by the lister
    page = "<html><head><title>A list</title></head><body>" + "".join(
        f'<iframe src="https://www.youtube.com/embed/{v * 11}"></iframe>' for v in "PQRSQ") + "</body></html>"
    url = host.add("/playlist.html", page.encode(), "text/html")
    refs, _ = list_refs([{"playlist": url, "limit": 3}], tmp_path)
    assert [r["item_id"] for r in refs] == ["PPPPPPPPPPP", "QQQQQQQQQQQ", "RRRRRRRRRRR"]
    assert all(r["url"].startswith("https://www.youtube.com/watch?v=") for r in refs)
    refs, _ = list_refs([{"channel": url, "limit": 10}], tmp_path)
    assert [r["rank"] for r in refs] == [0, 1, 2, 3]
    with pytest.raises(PermanentError) as info:
        list_refs([{"playlist": host.base + "/nope.html"}], tmp_path)
    assert info.value.error_type == "unavailable"


def test_subtitle_text_conversion() -> None:
    assert vtt_to_text(VTT.decode()) == "Hello there & welcome\nsecond line"
    assert json3_to_text(JSON3) == "auto words\nmore"


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="outtmpl"):
        YoutubeClientConfig(ytdlp_params={"outtmpl": "x"})
    with pytest.raises(ValueError):
        YoutubeCollectStage.Config(store="../x")
    assert YoutubeCollectStage.Config().min_views == 10_000 and YoutubeCollectStage.Config().exclude_categories == []


# --------------------------------------------------------------------------------------------
# the whole slice through the runner


@pytest.mark.slow
def test_stages_through_the_runner_then_validate(host: VideoHost, clips, tmp_path: Path, monkeypatch) -> None:
    from blift.pipeline import RunOptions, run_pipeline

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    saved = tmp_path / "saved"
    write_info(saved, "a", yt_info(host, clips, "AAAAAAAAAAA"))
    write_info(saved, "b", yt_info(host, clips, "BBBBBBBBBBB", clip="silent"))
    write_info(saved, "c", yt_info(host, clips, "CCCCCCCCCCC", view_count=12))
    plain = host.add("/files/plain.mp4", clips["av"])
    pipe = tmp_path / "p.yaml"
    pipe.write_text(yaml.safe_dump({"name": "yt", "stages": [
        {"stage": "youtube.list", "requests": [{"info_json_dir": str(saved)}, {"urls": [plain]}],
         "config": {"retries": 0}},
        {"stage": "youtube.collect", "config": {"retries": 0, "threads": 2}},
        {"stage": "media.download", "config": {"allow_private_addresses": True}},
    ]}))
    run_dir = tmp_path / "run"
    report = run_pipeline(pipe, RunOptions(out=run_dir, workers=1, progress=False))
    assert not report.failed
    stats = report.stats["stages"]
    assert stats["youtube.list"]["out"]["video_refs"] == 4
    assert stats["youtube.collect"]["out"]["items"] == 2
    assert stats["youtube.collect"]["dropped"] == {"few_views": 1, "unknown_views": 1}
    media = tables.read_dataset(run_dir / "media", "media").to_pylist()
    assert sorted((m["uid"], m["status"], m["has_audio"]) for m in media) == [
        ("youtube:AAAAAAAAAAA", "ok", True), ("youtube:BBBBBBBBBBB", "ok", False)]
    items = tables.read_dataset(run_dir / "items", "items").to_pylist()
    assert {i["collected_at"].timestamp() for i in items} == {EPOCH}
    proc = subprocess.run([sys.executable, "-m", "blift.cli", "validate", str(run_dir)], capture_output=True, text=True,
                          timeout=120, env={**os.environ})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    before = len(host.log)
    again = run_pipeline(pipe, RunOptions(out=run_dir, workers=1, progress=False))
    assert all(not p.todo for p in again.plans) and len(host.log) == before  # nothing fetched again
