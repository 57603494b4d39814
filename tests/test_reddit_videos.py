"""r/videos posts that link YouTube videos: Reddit rows that see the link, ``youtube.linked``
fetching each linked video once through yt-dlp, and ``media.download`` probing it for the post.

As in test_youtube_collect.py, YouTube itself is never contacted: linked videos are read from
saved ``.info.json`` files (yt-dlp's own post-extraction path) whose formats point at a loopback
video host that logs every request, so "never downloaded" is asserted on what the host saw.
Private and removed videos need a live extraction: there a stand-in for yt-dlp's YouTube
extractor, registered through yt-dlp's own ``add_info_extractor``, raises the errors the real one
raises. The end-to-end test runs reddit.list and reddit.collect (real praw, the fake Reddit API)
then youtube.linked and media.download through the runner.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from blift import schemas, tables
from blift.collect.media.download import DownloadStage
from blift.collect.reddit.rows import classify_media, youtube_id
from blift.collect.youtube import collect as yt_collect
from blift.collect.youtube.client import youtube_video_id
from blift.collect.youtube.linked import YoutubeLinkedStage, linked_video_id
from blift.errors import TransientError
from blift.replay.reddit_api import ReplayServer, write_post
from blift.stage import ShardInput
from servers.video_host import VideoHost
from youtube_fakes import write_info, yt_info

ROOT = Path(__file__).resolve().parents[1]
LINKED = "youtube.linked=blift.collect.youtube.linked:YoutubeLinkedStage"  # until the venv is reinstalled
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
HEATMAP = [{"start_s": 0.0, "end_s": 1.0, "value": 1.0}, {"start_s": 1.0, "end_s": 2.0, "value": 0.25}]


@pytest.fixture(autouse=True)
def _linked_stage_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLIFT_STAGES", LINKED)


def linked_stage(run_dir: Path, saved: Path | None = None, **over: Any) -> YoutubeLinkedStage:
    opts: dict[str, Any] = {"retries": 0, "socket_timeout_s": 5, "threads": 1, "online": False,
                            "info_json_dir": str(saved) if saved else None}
    opts.update(over)
    return YoutubeLinkedStage(YoutubeLinkedStage.Config(**opts), run_dir)


def post(pid: str, url: str | None, *, kind: str = "video", platform: str = "reddit",
         media_urls: list[str] | None = None) -> dict[str, Any]:
    """An items row as reddit.collect writes it (the columns youtube.linked and media.download read)."""
    return {"uid": f"{platform}:{pid}", "platform": platform, "item_id": pid, "source": "api", "collected_at": NOW,
            "media_kind": kind, "media_urls": media_urls if media_urls is not None else ([url] if url else []),
            "url": url, "score": 100, "upvote_ratio": 0.9}


def run_linked(stage: YoutubeLinkedStage, items: list[dict[str, Any]],
               threads: int = 1) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """The stage's records of one shard, run like the runner does (``threads`` at once); the
    videos rows (checked against their schema) by uid, and the summed counters."""
    shard = ShardInput("part-0", {"items": schemas.get("items").from_rows(items)}, stage.run_dir)
    with ThreadPoolExecutor(threads) as pool:
        outs = list(pool.map(lambda rec: stage.process_record(*rec), stage.records(shard)))
    rows = [r for out in outs for r in out.tables.get("videos", [])]
    schemas.get("videos").from_rows(rows)
    counters: dict[str, int] = {}
    for out in outs:
        for k, v in out.counters.items():
            counters[k] = counters.get(k, 0) + v
    return {r["uid"]: r for r in rows}, counters


def media_rows(run_dir: Path, items: list[dict[str, Any]], videos: list[dict[str, Any]]) -> dict[str, dict]:
    """media.download over the posts and their linked videos rows, via its records() like the runner."""
    stage = DownloadStage(DownloadStage.Config(hosts=["127.0.0.1"]), run_dir=run_dir)  # offline: no v.redd.it
    shard = ShardInput("s", {"items": schemas.get("items").from_rows(items),
                             "videos": schemas.get("videos").from_rows(videos)}, run_dir)
    rows = []
    for key, payload in stage.records(shard):
        rows += stage.process_record(key, payload).tables["media"]
    schemas.get("media").from_rows(rows)
    return {r["uid"]: r for r in rows}


def downloads(host: VideoHost, vid: str) -> int:
    """How many times yt-dlp started downloading a video: its Range requests from byte 0."""
    return sum(1 for r in host.requests_to(f"/videoplayback/{vid}.mp4") if (r.range or "").startswith("bytes=0-"))


# --------------------------------------------------------------------------------------------
# which posts link a YouTube video


def _oembed(vid: str) -> dict[str, Any]:
    """A post's ``media`` as Reddit's API gives it for an embedded YouTube video (HTML-escaped)."""
    return {"type": "youtube.com", "oembed": {
        "provider_name": "YouTube", "type": "video", "title": "A video",
        "html": f"&lt;iframe width=\"356\" height=\"200\" src=\"https://www.youtube.com/embed/{vid}?feature=oembed"
                f"&amp;enablejsapi=1\" frameborder=\"0\" allowfullscreen&gt;&lt;/iframe&gt;",
        "thumbnail_url": f"https://i.ytimg.com/vi/{vid}/hqdefault.jpg"}}


@pytest.mark.parametrize(("data", "expected"), [
    ({"url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ", "post_hint": "rich:video"},
     ("video", ["https://www.youtube.com/watch?v=dQw4w9WgXcQ"])),
    ({"url": "https://youtu.be/dQw4w9WgXcQ"}, ("video", ["https://youtu.be/dQw4w9WgXcQ"])),  # no post_hint (old posts)
    ({"url": "https://m.youtube.com/watch?feature=share&v=dQw4w9WgXcQ", "post_hint": "link"},
     ("video", ["https://m.youtube.com/watch?feature=share&v=dQw4w9WgXcQ"])),
    ({"url": "https://www.youtube.com/shorts/dQw4w9WgXcQ"}, ("video", ["https://www.youtube.com/shorts/dQw4w9WgXcQ"])),
    ({"url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ&amp;list=PL1"},  # HTML-escaped as in the API
     ("video", ["https://www.youtube.com/watch?v=dQw4w9WgXcQ&list=PL1"])),
    ({"url": "https://www.youtube.com/attribution_link?a=x&u=%2Fwatch%3Fv%3DdQw4w9WgXcQ",
      "media": _oembed("dQw4w9WgXcQ")}, ("video", ["https://www.youtube.com/watch?v=dQw4w9WgXcQ"])),
    ({"url": "https://bit.ly/abc", "secure_media": {"type": "youtube.com", "oembed": {
        "provider_name": "YouTube", "thumbnail_url": "https://i.ytimg.com/vi/dQw4w9WgXcQ/hqdefault.jpg"}}},
     ("video", ["https://www.youtube.com/watch?v=dQw4w9WgXcQ"])),
    ({"url": "https://v.redd.it/abcdef", "is_video": True}, ("video", ["https://v.redd.it/abcdef/DASHPlaylist.mpd"])),
    ({"url": "https://www.youtube.com/@SomeChannel"}, ("link", ["https://www.youtube.com/@SomeChannel"])),
    ({"url": "https://www.youtube.com/playlist?list=PL1", "media": {"type": "youtube.com", "oembed": {
        "provider_name": "YouTube", "html": "&lt;iframe src=\"https://www.youtube.com/embed/videoseries?list=PL1\""}}},
     ("link", ["https://www.youtube.com/playlist?list=PL1"])),
    ({"url": "https://notyoutube.com/watch?v=dQw4w9WgXcQ"}, ("link", ["https://notyoutube.com/watch?v=dQw4w9WgXcQ"])),
    ({"url": "https://www.reddit.com/r/videos/comments/x/", "is_self": True,
      "selftext": "https://youtu.be/dQw4w9WgXcQ"}, ("text", [])),
])
def test_reddit_rows_see_youtube_links(data: dict[str, Any], expected: tuple[str, list[str]]) -> None:
    assert classify_media(data) == expected


def test_the_linked_video_id() -> None:
    assert youtube_id("https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ?x=1") == "dQw4w9WgXcQ"
    assert youtube_id("https://youtu.be/dQw4w9WgXcQ/") == "dQw4w9WgXcQ"
    assert youtube_id("https://www.youtube.com/watch?v=short") is None
    # yt-dlp's video extractor declines a video URL that names a playlist: the id is still read
    assert youtube_video_id("https://www.youtube.com/watch?v=dQw4w9WgXcQ&index=2&list=PLabc") == "dQw4w9WgXcQ"
    assert youtube_video_id("https://youtu.be/dQw4w9WgXcQ?list=PLabc") == "dQw4w9WgXcQ"
    assert youtube_video_id("https://www.youtube.com/playlist?list=PLabc") is None
    assert linked_video_id(post("a", "https://youtu.be/dQw4w9WgXcQ")) == "dQw4w9WgXcQ"
    both = post("a", "https://example.com/", media_urls=["https://i.redd.it/x.jpg", "https://youtu.be/dQw4w9WgXcQ"])
    assert linked_video_id(both) == "dQw4w9WgXcQ"
    assert linked_video_id(post("a", "dQw4w9WgXcQ")) is None  # a bare id is not a link
    assert linked_video_id(post("a", None)) is None


# --------------------------------------------------------------------------------------------
# youtube.linked


def test_linked_video_row_is_keyed_by_the_post(host: VideoHost, clips, tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    write_info(saved, "AAAAAAAAAAA", yt_info(host, clips, "AAAAAAAAAAA"))
    items = [post("p1", "https://www.youtube.com/watch?v=AAAAAAAAAAA"),
             post("img", "https://i.redd.it/x.jpg", kind="image"),
             post("hosted", "https://v.redd.it/abcdef"),
             post("AAAAAAAAAAA", "https://www.youtube.com/watch?v=AAAAAAAAAAA", platform="youtube")]
    rows, counters = run_linked(linked_stage(tmp_path, saved), items)
    assert list(rows) == ["reddit:p1"]
    assert [counters[k] for k in ("linked", "not_video", "not_youtube", "youtube_item")] == [1, 1, 1, 1]
    video = rows["reddit:p1"]
    assert (video["view_count"], video["like_count"], video["comment_count"]) == (50_000, 1200, 3)
    assert video["heatmap"] == HEATMAP
    assert (video["duration_s"], video["channel_name"], video["channel_follower_count"], video["upload_date"]) == (
        2.0, "Test Channel", 12345, "20231114")
    assert video["chapters"][0] == {"start_s": 0.0, "end_s": 1.0, "title": "Intro"}
    assert [s["kind"] for s in video["subtitles"]] == ["manual", "automatic"]
    assert (video["source_info"], video["file_status"], video["format_id"]) == ("info_json", "ok", "18")
    assert video["file_sha256"] == hashlib.sha256(clips["av"]).hexdigest() and video["file_bytes"] == len(clips["av"])
    assert (tmp_path / video["file_path"]).read_bytes() == clips["av"]
    assert not list((tmp_path / ".tmp" / "youtube.linked").glob("*/*.mp4")), "temp files left behind"
    # media.download turns it into the post's probed media row, unchanged (no image here: offline)
    media = media_rows(tmp_path, [i for i in items if i["media_kind"] == "video"], list(rows.values()))
    m = media["reddit:p1"]
    assert (m["status"], m["url"], m["mime"], m["width"], m["height"], m["fps"], m["has_audio"]) == (
        "ok", "https://www.youtube.com/watch?v=AAAAAAAAAAA", "video/mp4", 160, 120, 10.0, True)
    assert m["duration_s"] == pytest.approx(2.0, abs=0.1) and m["path"] == video["file_path"]
    assert (media["reddit:hosted"]["status"], media["reddit:hosted"]["reason"]) == ("skipped", "other_host")
    # a YouTube link nobody fetched is a page, not a file: left to youtube.linked, no request made
    before = len(host.log)
    unfetched = media_rows(tmp_path, [post("p9", "https://youtu.be/AAAAAAAAAAA")], [])["reddit:p9"]
    assert (unfetched["status"], unfetched["reason"]) == ("skipped", "youtube_link") and len(host.log) == before


def test_a_video_linked_twice_is_fetched_once(host: VideoHost, clips, tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    write_info(saved, "AAAAAAAAAAA", yt_info(host, clips, "AAAAAAAAAAA"))
    write_info(saved, "BBBBBBBBBBB", yt_info(host, clips, "BBBBBBBBBBB", clip="silent"))
    items = [post("p1", "https://www.youtube.com/watch?v=AAAAAAAAAAA"),
             post("p2", "https://youtu.be/AAAAAAAAAAA?t=10"),  # the same video, another link, the same shard
             post("p3", "https://www.youtube.com/watch?v=BBBBBBBBBBB&list=PLx"),
             post("p4", "https://m.youtube.com/watch?v=AAAAAAAAAAA")]
    rows, counters = run_linked(linked_stage(tmp_path, saved, threads=3), items, threads=3)
    assert sorted(rows) == ["reddit:p1", "reddit:p2", "reddit:p3", "reddit:p4"]
    assert (counters["videos_fetched"], counters["videos_reused"]) == (2, 2)
    assert downloads(host, "AAAAAAAAAAA") == 1 and downloads(host, "BBBBBBBBBBB") == 1
    same = {k: v for k, v in rows["reddit:p1"].items() if k != "uid"}
    assert all({k: v for k, v in rows[u].items() if k != "uid"} == same for u in ("reddit:p2", "reddit:p4"))
    assert rows["reddit:p3"]["file_sha256"] == hashlib.sha256(clips["silent"]).hexdigest()

    # another worker (a new stage object, same settings) reads the outcome instead of fetching it
    before = len(host.log)
    again, counters = run_linked(linked_stage(tmp_path, saved), [post("p5", "https://youtu.be/AAAAAAAAAAA")])
    assert counters["videos_reused"] == 1 and "videos_fetched" not in counters and len(host.log) == before
    assert {k: v for k, v in again["reddit:p5"].items() if k != "uid"} == same
    # settings that decide the outcome are part of its key: a stricter rule looks again
    strict, counters = run_linked(linked_stage(tmp_path, saved, max_duration_s=1.5),
                                  [post("p5", "https://youtu.be/AAAAAAAAAAA")])
    assert counters["videos_fetched"] == 1 and strict["reddit:p5"]["file_reason"] == "too_long"


def test_too_long_video_is_a_skipped_row_and_never_downloaded(host: VideoHost, clips, tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    write_info(saved, "LLLLLLLLLLL", yt_info(host, clips, "LLLLLLLLLLL", duration=600.0))
    write_info(saved, "OKOKOKOKOKO", yt_info(host, clips, "OKOKOKOKOKO", duration=500.0))
    items = [post("long", "https://youtu.be/LLLLLLLLLLL"), post("ok", "https://youtu.be/OKOKOKOKOKO")]
    stage = linked_stage(tmp_path, saved)
    assert stage.config.max_duration_s == 500.0  # the paper's rule is the default here
    rows, counters = run_linked(stage, items)
    long = rows["reddit:long"]
    assert (long["file_status"], long["file_reason"], long["file_error"]) == ("skipped", "too_long",
                                                                              "duration=600s > 500s")
    assert long["file_path"] is None and long["subtitles"] is None
    assert (long["duration_s"], long["view_count"], long["heatmap"]) == (600.0, 50_000, HEATMAP)  # facts kept
    assert rows["reddit:ok"]["file_status"] == "ok" and counters["skipped_too_long"] == 1
    assert {r.path for r in host.log if "LLLLLLLLLLL" in r.path} == set()  # neither the file nor subtitles
    media = media_rows(tmp_path, items, list(rows.values()))
    assert (media["reddit:long"]["status"], media["reddit:long"]["reason"]) == ("skipped", "too_long")
    # the limit is an option
    rows, _ = run_linked(linked_stage(tmp_path, saved, max_duration_s=None), items[:1])
    assert rows["reddit:long"]["file_status"] == "ok" and downloads(host, "LLLLLLLLLLL") == 1


def stand_in(pages: dict[str, Any], calls: list[str]) -> Any:
    """A stand-in for yt-dlp's YouTube extractor under its key ("Youtube"): a watch URL's video
    is looked up in ``pages``; a string there is the message the real extractor raises for it
    (``ExtractorError(reason, expected=True)``), which yt-dlp then reports as it always does."""
    from yt_dlp.extractor.common import InfoExtractor
    from yt_dlp.utils import ExtractorError

    class StandIn(InfoExtractor):
        IE_NAME = "youtube"
        _VALID_URL = r"https://www\.youtube\.com/watch\?v=(?P<id>[\w-]{11})"

        @classmethod
        def ie_key(cls) -> str:
            return "Youtube"

        def _real_extract(self, url: str) -> dict[str, Any]:
            vid = self._match_id(url)
            calls.append(vid)
            page = pages.get(vid, "Video unavailable")
            if isinstance(page, str):
                raise ExtractorError(page, expected=True, video_id=vid)
            return dict(page)

    return StandIn()


def test_private_and_removed_videos_become_rows(host: VideoHost, clips, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pages: dict[str, Any] = {
        "PPPPPPPPPPP": "Private video. Sign in if you've been granted access to this video",
        "RRRRRRRRRRR": "Video unavailable. This video has been removed by the uploader",
        "TTTTTTTTTTT": "Video unavailable. This content isn't available, try again later.",
        "LIVELIVELIV": yt_info(host, clips, "LIVELIVELIV"),
    }
    calls: list[str] = []
    real_make_ydl = yt_collect.make_ydl

    def make_ydl(params: dict[str, Any]) -> Any:
        ydl = real_make_ydl(params)
        ydl.add_info_extractor(stand_in(pages, calls))
        return ydl

    monkeypatch.setattr(yt_collect, "make_ydl", make_ydl)
    stage = linked_stage(tmp_path, online=True)
    items = [post("priv", "https://youtu.be/PPPPPPPPPPP"), post("gone", "https://www.youtube.com/shorts/RRRRRRRRRRR"),
             post("live", "https://www.youtube.com/watch?v=LIVELIVELIV"),
             post("priv2", "https://www.youtube.com/watch?v=PPPPPPPPPPP")]
    rows, counters = run_linked(stage, items)
    assert (rows["reddit:priv"]["file_status"], rows["reddit:priv"]["file_reason"]) == ("failed", "private")
    assert "Private video" in rows["reddit:priv"]["file_error"] and "--cookies" not in rows["reddit:priv"]["file_error"]
    assert (rows["reddit:gone"]["file_status"], rows["reddit:gone"]["file_reason"]) == ("failed", "removed")
    assert rows["reddit:priv2"]["file_reason"] == "private" and calls.count("PPPPPPPPPPP") == 1  # asked once
    live = rows["reddit:live"]
    assert (live["file_status"], live["source_info"], live["view_count"]) == ("ok", "extract", 50_000)
    assert counters["failed_private"] == 2 and counters["failed_removed"] == 1
    media = media_rows(tmp_path, items, list(rows.values()))
    assert (media["reddit:priv"]["status"], media["reddit:priv"]["reason"]) == ("failed", "private")
    assert media["reddit:live"]["status"] == "ok"
    # YouTube's rate limit is transient: the record fails (for --retry-failed) and nothing is kept
    limited = [post("busy", "https://youtu.be/TTTTTTTTTTT")]
    for _ in range(2):
        with pytest.raises(TransientError) as info:
            run_linked(stage, limited)
        assert info.value.error_type == "rate_limited"
    assert calls.count("TTTTTTTTTTT") == 2


def test_offline_video_not_saved_and_transient_download(host: VideoHost, clips, tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    info = yt_info(host, clips, "EEEEEEEEEEE")
    host.add("/videoplayback/EEEEEEEEEEE.mp4", b"", statuses=[503] * 3)
    write_info(saved, "Some title [EEEEEEEEEEE]", info)  # yt-dlp's default file name
    stage = linked_stage(tmp_path, saved)
    rows, _ = run_linked(stage, [post("nosave", "https://youtu.be/NNNNNNNNNNN")])
    assert (rows["reddit:nosave"]["file_status"], rows["reddit:nosave"]["file_reason"]) == ("skipped", "no_info_json")
    write_info(saved, "NNNNNNNNNNN", yt_info(host, clips, "NNNNNNNNNNN"))  # saved later: not a kept outcome
    rows, _ = run_linked(linked_stage(tmp_path, saved), [post("nosave", "https://youtu.be/NNNNNNNNNNN")])
    assert rows["reddit:nosave"]["file_status"] == "ok"
    with pytest.raises(TransientError):  # the file's host answers 503: the record fails, nothing is kept
        run_linked(stage, [post("e", "https://youtu.be/EEEEEEEEEEE")])
    host.add("/videoplayback/EEEEEEEEEEE.mp4", clips["av"])
    rows, counters = run_linked(stage, [post("e", "https://youtu.be/EEEEEEEEEEE")])
    assert rows["reddit:e"]["file_status"] == "ok" and counters["videos_fetched"] == 1


def test_saved_info_dicts_are_found_by_id(host: VideoHost, clips, tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    write_info(saved / "a", "Title [AAAAAAAAAAA]", yt_info(host, clips, "AAAAAAAAAAA"))
    write_info(saved, "BBBBBBBBBBB", yt_info(host, clips, "BBBBBBBBBBB"))
    playlist = write_info(saved, "my list", {"_type": "playlist", "id": "PL1", "entries": [
        {"_type": "url", "ie_key": "Youtube", "id": "DDDDDDDDDDD", "url": "https://www.youtube.com/watch?v=DDDDDDDDDDD"},
        yt_info(host, clips, "CCCCCCCCCCC")]})
    (saved / "broken.info.json").write_text("{not json")
    stage = linked_stage(tmp_path, saved)
    stage.setup()
    assert stage._saved_refs() == {"AAAAAAAAAAA": str(saved / "a" / "Title [AAAAAAAAAAA].info.json"),
                                   "BBBBBBBBBBB": str(saved / "BBBBBBBBBBB.info.json"),
                                   "CCCCCCCCCCC": f"{playlist}#1"}
    rows, _ = run_linked(stage, [post("c", "https://youtu.be/CCCCCCCCCCC")])
    assert rows["reddit:c"]["file_status"] == "ok" and rows["reddit:c"]["source_info"] == "info_json"


@pytest.mark.slow  # ~5 s: validating every stage's config imports every stage
def test_the_shipped_pipeline(tmp_path: Path) -> None:
    from blift.config import load_pipeline

    pipeline = load_pipeline(ROOT / "pipelines" / "reddit-videos.yaml")
    stages = [s.stage for s in pipeline.stages]
    assert stages == ["reddit.list", "reddit.collect", "clean", "youtube.linked", "media.download", "scenes",
                      "attributes", "asr", "caption", "instruct"]
    linked = pipeline.stages[stages.index("youtube.linked")]
    assert linked.config["max_duration_s"] == 500 and linked.inputs == {"items": "items_clean"}
    assert pipeline.stages[stages.index("media.download")].inputs == {"items": "items_clean"}
    assert "videos" in pipeline.stages[0].requests[0]["subreddits"]


# --------------------------------------------------------------------------------------------
# end to end: the fake Reddit API, youtube.linked, media.download, through the runner


@pytest.mark.slow
def test_reddit_videos_end_to_end(host: VideoHost, clips, tmp_path: Path) -> None:
    from blift.pipeline import RunOptions, run_pipeline

    saved = tmp_path / "saved"
    for vid, clip, over in (("AAAAAAAAAAA", "av", {}), ("SSSSSSSSSSS", "silent", {"duration": 3.0}),
                            ("LLLLLLLLLLL", "av", {"duration": 900.0})):
        write_info(saved, vid, yt_info(host, clips, vid, clip=clip, **over))
    store = tmp_path / "reddit"
    base = {"subreddit": "videos", "author": "zq_poster", "created_utc": 1_600_000_000, "upvote_ratio": 0.97}
    comments = [{"id": f"c{i}", "parent_id": "t3_{}", "body": f"what a video number {i}", "score": 10 - i,
                 "author": "zq_viewer", "created_utc": 1_600_000_100 + i} for i in range(3)]

    def add(pid: str, score: int, **fields: Any) -> None:
        write_post(store, {**base, "id": pid, "title": f"post {pid}", "score": score, **fields},
                   [{**c, "id": f"{pid}{c['id']}", "parent_id": f"t3_{pid}"} for c in comments])

    add("ytwatch", 900, url="https://www.youtube.com/watch?v=AAAAAAAAAAA", post_hint="rich:video",
        media=_oembed("AAAAAAAAAAA"))
    add("ytrepost", 40, url="https://youtu.be/AAAAAAAAAAA")  # the same video, posted again, in another shard
    add("ytembed", 300, url="https://www.youtube.com/attribution_link?a=x&u=%2Fwatch%3Fv%3DSSSSSSSSSSS",
        media=_oembed("SSSSSSSSSSS"))
    add("ytlong", 200, url="https://m.youtube.com/watch?v=LLLLLLLLLLL")
    add("ytnosave", 100, url="https://www.youtube.com/shorts/NNNNNNNNNNN")
    add("vreddit", 50, url="https://v.redd.it/abcdef", is_video=True)

    with ReplayServer(store) as reddit:
        client = {"endpoint": reddit.url, "client_id": "test-id", "client_secret": "test-secret",
                  "user_agent": "blift-tests/1.0", "timeout_s": 5}
        pipe = tmp_path / "p.yaml"
        pipe.write_text(yaml.safe_dump({"name": "rv", "stages": [
            {"stage": "reddit.list", "requests": [{"posts": ["ytwatch", "ytembed", "ytlong", "ytnosave", "vreddit"]},
                                                  {"posts": ["ytrepost"]}], "config": client},
            {"stage": "reddit.collect", "config": client},
            {"stage": "youtube.linked", "config": {"info_json_dir": str(saved), "online": False, "retries": 0,
                                                   "max_duration_s": 500}},
            {"stage": "media.download", "config": {"hosts": ["127.0.0.1"]}},  # v.redd.it: not on loopback
            {"stage": "scenes"},
            {"stage": "instruct", "inputs": {"items_clean": "items", "comments_clean": "comments"}},
        ]}))
        run_dir = tmp_path / "run"
        report = run_pipeline(pipe, RunOptions(out=run_dir, workers=1, progress=False))
        assert not report.failed
        stats = report.stats["stages"]["youtube.linked"]
        assert stats["shards"] == 2 and stats["out"]["videos"] == 5
        assert {k: stats["counters"][k] for k in ("linked", "not_youtube", "videos_fetched", "videos_reused",
                                                   "file_ok", "skipped_too_long", "skipped_no_info_json")} == {
            "linked": 5, "not_youtube": 1, "videos_fetched": 3, "videos_reused": 1, "file_ok": 3,
            "skipped_too_long": 1, "skipped_no_info_json": 1}

        items = {r["uid"]: r for r in tables.read_dataset(run_dir / "items", "items").to_pylist()}
        assert {u: (i["media_kind"], i["media_urls"]) for u, i in items.items()} == {
            "reddit:ytwatch": ("video", ["https://www.youtube.com/watch?v=AAAAAAAAAAA"]),
            "reddit:ytrepost": ("video", ["https://youtu.be/AAAAAAAAAAA"]),
            "reddit:ytembed": ("video", ["https://www.youtube.com/watch?v=SSSSSSSSSSS"]),
            "reddit:ytlong": ("video", ["https://m.youtube.com/watch?v=LLLLLLLLLLL"]),
            "reddit:ytnosave": ("video", ["https://www.youtube.com/shorts/NNNNNNNNNNN"]),
            "reddit:vreddit": ("video", ["https://v.redd.it/abcdef/DASHPlaylist.mpd"])}
        assert (items["reddit:ytwatch"]["score"], items["reddit:ytwatch"]["upvote_ratio"]) == (900, 0.97)
        assert items["reddit:ytwatch"]["view_count"] is None  # the post's own row keeps Reddit's behavior only
        comments = tables.read_dataset(run_dir / "comments", "comments").to_pylist()
        assert sum(c["uid"] == "reddit:ytwatch" for c in comments) == 3

        videos = {r["uid"]: r for r in tables.read_dataset(run_dir / "videos", "videos").to_pylist()}
        assert sorted(videos) == ["reddit:ytembed", "reddit:ytlong", "reddit:ytnosave", "reddit:ytrepost",
                                  "reddit:ytwatch"]
        watch = videos["reddit:ytwatch"]
        assert (watch["view_count"], watch["like_count"], watch["comment_count"], watch["heatmap"]) == (
            50_000, 1200, 3, HEATMAP)
        assert (watch["file_status"], watch["file_sha256"]) == ("ok", hashlib.sha256(clips["av"]).hexdigest())
        assert {k: v for k, v in videos["reddit:ytrepost"].items() if k != "uid"} == {
            k: v for k, v in watch.items() if k != "uid"}
        assert downloads(host, "AAAAAAAAAAA") == 1  # two posts, two shards, one fetch
        assert (videos["reddit:ytlong"]["file_status"], videos["reddit:ytlong"]["file_reason"]) == ("skipped",
                                                                                                   "too_long")
        assert not [r for r in host.log if "LLLLLLLLLLL" in r.path]  # never requested
        assert videos["reddit:ytnosave"]["file_reason"] == "no_info_json"

        media = {r["uid"]: r for r in tables.read_dataset(run_dir / "media", "media").to_pylist()}
        m = media["reddit:ytwatch"]
        assert (m["status"], m["mime"], m["width"], m["height"], m["has_audio"], m["path"]) == (
            "ok", "video/mp4", 160, 120, True, watch["file_path"])
        assert m["duration_s"] == pytest.approx(2.0, abs=0.1)
        assert (media["reddit:ytembed"]["status"], media["reddit:ytembed"]["has_audio"]) == ("ok", False)
        assert media["reddit:ytembed"]["duration_s"] == pytest.approx(3.0, abs=0.1)
        assert media["reddit:ytrepost"]["path"] == m["path"]
        assert {u: (media[u]["status"], media[u]["reason"]) for u in ("reddit:ytlong", "reddit:ytnosave",
                                                                     "reddit:vreddit")} == {
            "reddit:ytlong": ("skipped", "too_long"), "reddit:ytnosave": ("skipped", "no_info_json"),
            "reddit:vreddit": ("skipped", "other_host")}

        # the post's video behavior record: Reddit's behavior, the linked video's counts and replay
        records = {r["id"]: r for r in tables.read_dataset(run_dir / "instructions", "instructions").to_pylist()}
        rec = records["reddit:ytwatch:behavior"]
        human, answer = (t["value"] for t in rec["conversations"])
        assert rec["template"] == "reddit_video_behavior" and rec["media_kind"] == "video"
        assert human.startswith("<image>\nThis video was posted on the subreddit r/videos with the title "
                                '"post ytwatch".')
        assert "Scene 1 (0:00-0:02)" in human
        assert answer.startswith("Upvotes: 900\nUpvote ratio: 97%\nNumber of comments: ")
        assert "Views of the video: 50000\nLikes of the video: 1200\nReplay value per scene: Scene 1: " in answer
        assert answer.endswith("Top comments, ranked by score:\n1. what a video number 0\n2. what a video number 1"
                               "\n3. what a video number 2")
        assert rec["targets"]["score"] == 900 and rec["targets"]["view_count"] == 50_000
        assert records["reddit:ytwatch:content"]["template"] == "reddit_video_content"
        assert {r["uid"] for r in records.values()} == {"reddit:ytwatch", "reddit:ytrepost", "reddit:ytembed"}
        dropped = report.stats["stages"]["instruct"]["dropped"]
        assert dropped == {"no_media": 3}  # too long, not saved, v.redd.it (not downloaded here)

        # a rerun finds every shard done: nothing is asked of Reddit or fetched again
        before, reddit_before = len(host.log), len(reddit.log)
        again = run_pipeline(pipe, RunOptions(out=run_dir, workers=1, progress=False))
        assert all(not p.todo for p in again.plans) and len(host.log) == before and len(reddit.log) == reddit_before
