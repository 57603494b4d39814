"""media.download fetching videos itself: Reddit's DASH (v.redd.it), ``.gifv``, video URLs from
table sources, the fallback file, the duration rule, and every failure as a classified row.

The media are real: ffmpeg encodes a 2 s clip with a tone and writes DASH outputs at test time,
served by a loopback host that logs every request (tests/servers/video_host.py). One manifest
copies Reddit's own layout (one file per representation, ``BaseURL`` + ``SegmentBase``, no
``contentType``: ``DASH_240.mp4``, ``DASH_120.mp4``, ``DASH_AUDIO_64.mp4``), one is what
``ffmpeg -f dash`` writes with templates and a timeline. Every stored file is ffprobed here.
Items are built from Reddit submission JSON through ``reddit/rows.py``, as the API and the dumps
give it, so the carrier (``media_urls`` + ``raw``) is what production sees.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from blift import schemas
from blift.collect.media.dash import DashError, parse_duration, parse_manifest
from blift.collect.media.download import DownloadStage
from blift.collect.media.video_fetch import gifv_target, video_hints
from blift.collect.reddit.rows import classify_media, item_row
from blift.errors import TransientError
from blift.ids import file_sha256
from blift.pipeline import RunOptions, run_pipeline
from blift.tables import read_dataset
from servers.video_host import VideoHost

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                reason="needs ffmpeg and ffprobe")

COLLECTED = datetime(2026, 11, 1, tzinfo=timezone.utc)
DURATION = 2.0

# --------------------------------------------------------------------------- media made here


def _ffmpeg(*args: str, cwd: Path) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], cwd=cwd, check=True, timeout=60)


def _sources(audio: bool) -> list[str]:
    out = ["-f", "lavfi", "-i", f"testsrc=s=320x240:r=24:d={DURATION}"]
    return out + (["-f", "lavfi", "-i", f"sine=f=440:d={DURATION}"] if audio else [])


REDDIT_MPD = """<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" minBufferTime="PT1.500S" type="static"
     mediaPresentationDuration="PT0H0M{duration:.3f}S" maxSegmentDuration="PT0H0M4.000S"
     profiles="urn:mpeg:dash:profile:isoff-on-demand:2011,http://dashif.org/guidelines/dash264">
 <Period duration="PT0H0M{duration:.3f}S">
  <AdaptationSet segmentAlignment="true" subsegmentAlignment="true" subsegmentStartsWithSAP="1"
                 maxWidth="320" maxHeight="240" maxFrameRate="24" par="4:3" lang="und">
{video}
  </AdaptationSet>
{audio}
 </Period>
</MPD>
"""
REDDIT_REP = """   <Representation id="{rid}" mimeType="{mime}" codecs="{codecs}" {size} startWithSAP="1"
                   bandwidth="{bw}">
    <BaseURL>{name}</BaseURL>
    <SegmentBase indexRangeExact="true" indexRange="{index}">
      <Initialization range="{init}"/>
    </SegmentBase>
   </Representation>"""


def _reddit_layout(folder: Path) -> dict[str, bytes]:
    """Two video representations and one audio, one file each, under Reddit's names, with a
    manifest shaped like Reddit's (ranges taken from ffmpeg's single-file output)."""
    _ffmpeg(*_sources(audio=True), "-map", "0:v", "-map", "0:v", "-map", "1:a", "-c:v", "libx264",
            "-preset", "ultrafast", "-g", "24", "-s:v:1", "160x120", "-b:v:0", "400k", "-b:v:1", "100k",
            "-c:a", "aac", "-b:a", "64k", "-f", "dash", "-single_file", "1",
            "-single_file_name", "rep$RepresentationID$.mp4", "-adaptation_sets", "id=0,streams=v id=1,streams=a",
            "out.mpd", cwd=folder)
    made = (folder / "out.mpd").read_text()
    ranges = {m[0]: (m[1], m[2]) for m in re.findall(
        r"<BaseURL>rep(\d)\.mp4</BaseURL>\s*<SegmentList[^>]*>\s*<Initialization range=\"([\d-]+)\" />\s*"
        r"<SegmentURL mediaRange=\"[\d-]+\" indexRange=\"([\d-]+)\"", made)}
    names = {"0": "DASH_240.mp4", "1": "DASH_120.mp4", "2": "DASH_AUDIO_64.mp4"}
    files = {names[r]: (folder / f"rep{r}.mp4").read_bytes() for r in names}

    def rep(rid: str, mime: str, codecs: str, size: str, bw: int) -> str:
        init, index = ranges[rid]
        return REDDIT_REP.format(rid=rid, mime=mime, codecs=codecs, size=size, bw=bw, name=names[rid],
                                 index=index, init=init)

    video = "\n".join([rep("1", "video/mp4", "avc1.4d400b", 'width="160" height="120" frameRate="24"', 100_000),
                       rep("0", "video/mp4", "avc1.4d400d", 'width="320" height="240" frameRate="24"', 400_000)])
    audio = ('  <AdaptationSet segmentAlignment="true" subsegmentAlignment="true" subsegmentStartsWithSAP="1" '
             'lang="und">\n' + rep("2", "audio/mp4", "mp4a.40.2", 'audioSamplingRate="44100"', 64_000)
             + "\n  </AdaptationSet>")
    files["DASHPlaylist.mpd"] = REDDIT_MPD.format(duration=DURATION, video=video, audio=audio).encode()
    files["video_only.mpd"] = REDDIT_MPD.format(duration=DURATION, video=video, audio="").encode()
    return files


def _template_layout(folder: Path) -> dict[str, bytes]:
    """What ``ffmpeg -f dash`` writes by default: SegmentTemplate + SegmentTimeline, init and
    numbered chunks per stream."""
    _ffmpeg(*_sources(audio=True), "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast",
            "-g", "12", "-c:a", "aac", "-b:a", "48k", "-f", "dash", "-use_template", "1", "-use_timeline", "1",
            "-seg_duration", "0.5", "manifest.mpd", cwd=folder)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("clips")
    (root / "reddit").mkdir()
    (root / "template").mkdir()
    (root / "plain").mkdir()
    _ffmpeg(*_sources(audio=True), "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest",
            "-movflags", "+faststart", "clip.mp4", cwd=root / "plain")
    return {"reddit": _reddit_layout(root / "reddit"), "template": _template_layout(root / "template"),
            "plain": {"clip.mp4": (root / "plain" / "clip.mp4").read_bytes()}}


@pytest.fixture
def host() -> VideoHost:
    with VideoHost() as h:
        yield h


def serve(host: VideoHost, prefix: str, files: dict[str, bytes], skip: tuple[str, ...] = ()) -> None:
    for name, body in files.items():
        if name not in skip:
            ctype = "application/dash+xml" if name.endswith(".mpd") else "video/mp4"
            host.add(f"{prefix}/{name}", body, content_type=ctype)


# --------------------------------------------------------------------------- items and the stage


def submission(pid: str, *, dash_url: str | None = None, fallback_url: str | None = None,
               duration: float = DURATION, crosspost: bool = False, url: str | None = None,
               **extra: Any) -> dict[str, Any]:
    """A submission as Reddit's API answers without ``raw_json=1`` (``&`` escaped as ``&amp;``)."""
    video = {"bitrate_kbps": 400, "duration": duration, "height": 240, "width": 320, "is_gif": False,
             "has_audio": True, "transcoding_status": "completed",
             "hls_url": f"https://v.redd.it/{pid}/HLSPlaylist.m3u8?a=1&amp;v=1&amp;f=sd"}
    if dash_url:
        video["dash_url"] = dash_url + "?a=1790000000%2CZmFrZQ%3D%3D&amp;v=1&amp;f=sd"
    if fallback_url:
        video["fallback_url"] = fallback_url + "?source=fallback"
    media = {"reddit_video": video} if (dash_url or fallback_url) else None
    data: dict[str, Any] = {
        "id": pid, "name": f"t3_{pid}", "title": f"video {pid}", "subreddit": "videos", "author": "someone",
        "created_utc": 1_790_000_000, "score": 10, "upvote_ratio": 0.9, "num_comments": 0,
        "permalink": f"/r/videos/comments/{pid}/video/", "url": url or f"https://v.redd.it/{pid}",
        "domain": "v.redd.it", "is_self": False, "is_video": True, "post_hint": "hosted:video",
        "media": media, "secure_media": media, **extra,
    }
    if crosspost:
        parent = dict(data, id=f"{pid}p", name=f"t3_{pid}p")
        data.update(is_video=False, media=None, secure_media=None, post_hint=None, crosspost_parent_list=[parent])
    return data


def items_row(data: dict[str, Any]) -> dict[str, Any]:
    """What the stage receives: rows.py's row, through the items schema (raw packed)."""
    row = item_row(data, source="api", collected_at=COLLECTED)
    return schemas.get("items").from_rows([row]).to_pylist()[0]


def table_item(uid: str, url: str) -> dict[str, Any]:
    row = {"uid": f"forum:{uid}", "platform": "forum", "item_id": uid, "source": "table", "url": url,
           "collected_at": COLLECTED, "media_kind": "video", "media_urls": [url]}
    return schemas.get("items").from_rows([row]).to_pylist()[0]


def make_stage(run_dir: Path, **overrides: Any) -> DownloadStage:
    opts: dict[str, Any] = dict(allow_private_addresses=True, per_host_rps=0, connect_timeout_s=2,
                                read_timeout_s=5, retries=1, backoff_s=0.01, max_retry_after_s=1)
    opts.update(overrides)
    stage = DownloadStage(DownloadStage.Config(**opts), run_dir=run_dir)
    stage.setup()
    return stage


def download(stage: DownloadStage, item: dict[str, Any]) -> tuple[dict[str, Any], Counter[str]]:
    out = stage.process_record(item["uid"], item)
    (row,) = out.tables["media"]
    schemas.get("media").from_rows([row])
    return row, Counter(out.counters)


def ffprobe(path: Path) -> dict[str, Any]:
    proc = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
                           str(path)], capture_output=True, check=True, timeout=30)
    return json.loads(proc.stdout)


def streams(info: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((s["codec_type"], s["codec_name"]) for s in info["streams"])


def stored_files(run_dir: Path) -> list[Path]:
    return sorted(p for p in (run_dir / "media_files").rglob("*") if p.is_file()) \
        if (run_dir / "media_files").exists() else []


def assert_no_leftovers(run_dir: Path) -> None:
    tmp = run_dir / ".tmp" / "media.download"
    assert not tmp.exists() or not any(tmp.iterdir()), list(tmp.iterdir())


# --------------------------------------------------------------------------- DASH


def test_reddit_dash_with_audio_is_muxed_into_one_mp4(host: VideoHost, clips, tmp_path: Path) -> None:
    serve(host, "/abc", clips["reddit"])
    item = items_row(submission("abc", dash_url=f"{host.base}/abc/DASHPlaylist.mpd",
                                fallback_url=f"{host.base}/abc/DASH_240.mp4"))
    row, counts = download(make_stage(tmp_path), item)
    assert (row["status"], row["reason"], row["mime"]) == ("ok", None, "video/mp4"), row
    assert row["url"] == item["media_urls"][0] and "&amp;" not in row["url"]
    assert (row["width"], row["height"], row["has_audio"]) == (320, 240, True)  # the best video representation
    assert row["duration_s"] == pytest.approx(DURATION, abs=0.1) and row["fps"] == pytest.approx(24)
    path = tmp_path / row["path"]
    assert file_sha256(path) == row["sha256"] and path.stat().st_size == row["bytes"]
    assert row["path"] == f"media_files/{row['sha256'][:2]}/{row['sha256']}.mp4"
    info = ffprobe(path)
    assert streams(info) == [("audio", "aac"), ("video", "h264")]
    assert float(info["format"]["duration"]) == pytest.approx(DURATION, abs=0.1)
    # exactly the manifest, the best video and the audio; never the small one or the fallback
    assert sorted(host.paths()) == ["/abc/DASHPlaylist.mpd", "/abc/DASH_240.mp4", "/abc/DASH_AUDIO_64.mp4"]
    files = clips["reddit"]
    fetched = sum(len(files[n]) for n in ("DASHPlaylist.mpd", "DASH_240.mp4", "DASH_AUDIO_64.mp4"))
    assert counts["bytes_downloaded"] == fetched
    assert (counts["dash_manifests"], counts["dash_segments"], counts["dash_muxed"], counts["videos_downloaded"],
            counts["media_ok"], counts["stored_new"]) == (1, 2, 1, 1, 1, 1)
    assert stored_files(tmp_path) == [path]
    assert_no_leftovers(tmp_path)


def test_video_only_dash_and_the_height_cap(host: VideoHost, clips, tmp_path: Path) -> None:
    serve(host, "/mute", {**clips["reddit"], "DASHPlaylist.mpd": clips["reddit"]["video_only.mpd"]})
    item = items_row(submission("mute", dash_url=f"{host.base}/mute/DASHPlaylist.mpd"))
    row, counts = download(make_stage(tmp_path, video_max_height=200), item)
    assert (row["status"], row["has_audio"], row["width"], row["height"]) == ("ok", False, 160, 120), row
    assert streams(ffprobe(tmp_path / row["path"])) == [("video", "h264")]
    assert sorted(host.paths()) == ["/mute/DASHPlaylist.mpd", "/mute/DASH_120.mp4"]
    assert counts["dash_segments"] == 1


def test_ffmpeg_template_manifest_is_fetched_segment_by_segment(host: VideoHost, clips, tmp_path: Path) -> None:
    serve(host, "/tpl", clips["template"])
    row, counts = download(make_stage(tmp_path), table_item("t1", f"{host.base}/tpl/manifest.mpd"))
    assert (row["status"], row["has_audio"], row["width"]) == ("ok", True, 320), row
    info = ffprobe(tmp_path / row["path"])
    assert streams(info) == [("audio", "aac"), ("video", "h264")]
    assert float(info["format"]["duration"]) == pytest.approx(DURATION, abs=0.1)
    chunks = sorted(n for n in clips["template"] if n.endswith(".m4s"))
    assert sorted(host.paths()) == sorted(["/tpl/manifest.mpd", *(f"/tpl/{n}" for n in chunks)])
    assert counts["dash_segments"] == len(chunks) == 10


@pytest.mark.parametrize("fault", ["broken_xml", "manifest_404", "segment_404", "not_an_mpd"])
def test_a_failed_dash_download_falls_back_to_the_video_only_file(fault: str, host: VideoHost, clips,
                                                                   tmp_path: Path) -> None:
    files = dict(clips["reddit"])
    skip: tuple[str, ...] = ()
    if fault == "broken_xml":
        files["DASHPlaylist.mpd"] = files["DASHPlaylist.mpd"][:300]
    elif fault == "manifest_404":
        skip = ("DASHPlaylist.mpd",)
    elif fault == "segment_404":
        skip = ("DASH_AUDIO_64.mp4",)
    else:
        files["DASHPlaylist.mpd"] = b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>'
    serve(host, "/fb", files, skip)
    item = items_row(submission("fb", dash_url=f"{host.base}/fb/DASHPlaylist.mpd",
                                fallback_url=f"{host.base}/fb/DASH_240.mp4"))
    assert video_hints(item).fallback_urls == (f"{host.base}/fb/DASH_240.mp4?source=fallback",)
    row, counts = download(make_stage(tmp_path), item)
    assert (row["status"], row["url"], row["has_audio"], row["width"]) == (
        "ok", f"{host.base}/fb/DASH_240.mp4?source=fallback", False, 320), row
    assert row["duration_s"] == pytest.approx(DURATION, abs=0.1)
    assert streams(ffprobe(tmp_path / row["path"])) == [("video", "h264")]
    assert counts["video_fallback_used"] == 1 and counts["dash_muxed"] == 0
    assert len(stored_files(tmp_path)) == 1
    assert_no_leftovers(tmp_path)


def test_404_everywhere_is_a_failed_row_naming_both_urls(host: VideoHost, tmp_path: Path) -> None:
    item = items_row(submission("gone", dash_url=f"{host.base}/gone/DASHPlaylist.mpd",
                                fallback_url=f"{host.base}/gone/DASH_240.mp4"))
    row, counts = download(make_stage(tmp_path), item)
    assert (row["status"], row["reason"], row["path"]) == ("failed", "not_found", None)
    assert "DASHPlaylist.mpd" in row["error"] and "fallback" in row["error"] and "DASH_240.mp4" in row["error"]
    assert counts["failed_not_found"] == 1 and counts["media_failed"] == 1
    assert stored_files(tmp_path) == []
    assert_no_leftovers(tmp_path)


def test_a_broken_manifest_without_fallback_is_dash_failed(host: VideoHost, clips, tmp_path: Path) -> None:
    host.add("/bad/DASHPlaylist.mpd", clips["reddit"]["DASHPlaylist.mpd"][:300], "application/dash+xml")
    item = items_row(submission("bad", dash_url=f"{host.base}/bad/DASHPlaylist.mpd"))
    row, counts = download(make_stage(tmp_path), item)
    assert (row["status"], row["reason"]) == ("failed", "dash_failed") and "well-formed" in row["error"]
    assert counts["failed_dash_failed"] == 1


def test_the_size_cap_covers_all_tracks_and_skips_the_fallback(host: VideoHost, clips, tmp_path: Path) -> None:
    serve(host, "/big", clips["reddit"])
    item = items_row(submission("big", dash_url=f"{host.base}/big/DASHPlaylist.mpd",
                                fallback_url=f"{host.base}/big/DASH_240.mp4"))
    cap = len(clips["reddit"]["DASH_240.mp4"]) + 100  # the video fits alone, not with its audio
    row, _ = download(make_stage(tmp_path, max_video_bytes=cap), item)
    assert (row["status"], row["reason"]) == ("failed", "too_large"), row
    assert len(host.requests_to("/big/DASH_240.mp4")) == 1  # the DASH track; the fallback (same file) never
    assert stored_files(tmp_path) == []


def test_a_manifest_that_keeps_failing_is_transient(host: VideoHost, tmp_path: Path) -> None:
    host.add("/busy/DASHPlaylist.mpd", b"", statuses=[503, 503, 503])
    item = items_row(submission("busy", dash_url=f"{host.base}/busy/DASHPlaylist.mpd",
                                fallback_url=f"{host.base}/busy/DASH_240.mp4"))
    with pytest.raises(TransientError, match="503"):
        download(make_stage(tmp_path), item)
    assert host.requests_to("/busy/DASH_240.mp4") == []  # a retry later may get the audio: no fallback now
    assert_no_leftovers(tmp_path)


def test_hosts_rule_applies_to_videos(host: VideoHost, clips, tmp_path: Path) -> None:
    serve(host, "/h", clips["reddit"])
    item = items_row(submission("h", dash_url=f"{host.base}/h/DASHPlaylist.mpd"))
    row, _ = download(make_stage(tmp_path, hosts=["v.redd.it", "i.redd.it"]), item)
    assert (row["status"], row["reason"]) == ("skipped", "other_host") and host.log == []
    row, _ = download(make_stage(tmp_path, hosts=["v.redd.it", "127.0.0.1"]), item)
    assert row["status"] == "ok" and row["has_audio"] is True


# --------------------------------------------------------------------------- the duration rule


def test_too_long_known_up_front_is_never_requested(host: VideoHost, clips, tmp_path: Path) -> None:
    serve(host, "/long", clips["reddit"])
    item = items_row(submission("long", dash_url=f"{host.base}/long/DASHPlaylist.mpd",
                                fallback_url=f"{host.base}/long/DASH_240.mp4", duration=600))
    row, counts = download(make_stage(tmp_path, max_duration_s=500), item)
    assert (row["status"], row["reason"]) == ("skipped", "too_long") and "600s" in row["error"]
    assert host.log == []
    assert counts["skipped_too_long"] == 1 and counts["media_skipped"] == 1


def test_too_long_from_the_manifest_fetches_no_segment(host: VideoHost, clips, tmp_path: Path) -> None:
    serve(host, "/m", clips["template"])
    row, _ = download(make_stage(tmp_path, max_duration_s=1.5), table_item("m", f"{host.base}/m/manifest.mpd"))
    assert (row["status"], row["reason"]) == ("skipped", "too_long") and "manifest" in row["error"]
    assert list(host.paths()) == ["/m/manifest.mpd"]


def test_too_long_after_the_probe_is_not_stored(host: VideoHost, clips, tmp_path: Path) -> None:
    url = host.add("/files/clip.mp4", clips["plain"]["clip.mp4"])
    row, counts = download(make_stage(tmp_path, max_duration_s=1.5), table_item("p", url))
    assert (row["status"], row["reason"], row["path"]) == ("skipped", "too_long", None) and "probed" in row["error"]
    assert stored_files(tmp_path) == [] and counts["videos_downloaded"] == 0
    assert_no_leftovers(tmp_path)


# --------------------------------------------------------------------------- files, gifv, pages


def test_gifv_fetches_its_mp4_sibling(host: VideoHost, clips, tmp_path: Path) -> None:
    host.add("/i/Abc12.mp4", clips["plain"]["clip.mp4"])
    data = submission("g", url=f"{host.base}/i/Abc12.gifv", is_video=False, post_hint="link", domain="i.imgur.com",
                      media=None, secure_media=None)
    item = items_row(data)
    assert (item["media_kind"], item["media_urls"]) == ("video", [f"{host.base}/i/Abc12.gifv"])
    row, counts = download(make_stage(tmp_path), item)
    assert (row["status"], row["url"], row["has_audio"]) == ("ok", f"{host.base}/i/Abc12.mp4", True), row
    assert list(host.paths()) == ["/i/Abc12.mp4"] and counts["gifv_as_mp4"] == 1
    assert row["sha256"] == file_sha256(tmp_path / row["path"])
    assert (tmp_path / row["path"]).read_bytes() == clips["plain"]["clip.mp4"]  # a plain file is stored as served


def test_pages_and_playlists_are_not_videos(host: VideoHost, tmp_path: Path) -> None:
    stage = make_stage(tmp_path)
    page = host.add("/watch", b"<!DOCTYPE html><html><body>a video page</body></html>", "text/html")
    hls = host.add("/x/HLSPlaylist.m3u8", b"#EXTM3U\n#EXT-X-VERSION:3\n", "application/vnd.apple.mpegurl")
    for uid, url, what in (("w", page, "HTML page"), ("h", hls, "HLS playlist")):
        row, counts = download(stage, table_item(uid, url))
        assert (row["status"], row["reason"]) == ("failed", "not_a_video") and what in row["error"], row
        assert counts["failed_not_a_video"] == 1
    assert stored_files(tmp_path) == []


def test_same_video_twice_is_stored_once(host: VideoHost, clips, tmp_path: Path) -> None:
    stage = make_stage(tmp_path)
    a, ca = download(stage, table_item("a", host.add("/a.mp4", clips["plain"]["clip.mp4"])))
    b, cb = download(stage, table_item("b", host.add("/b.mp4", clips["plain"]["clip.mp4"])))
    assert a["path"] == b["path"] and (ca["stored_new"], cb["stored_existing"]) == (1, 1)


def test_videos_false_keeps_the_old_skip(tmp_path: Path) -> None:
    row, _ = download(make_stage(tmp_path, videos=False), table_item("x", "http://127.0.0.1:9/x.mp4"))
    assert (row["status"], row["reason"]) == ("skipped", "unsupported_kind")


# --------------------------------------------------------------------------- table source, end to end


@pytest.mark.slow
def test_a_table_source_video_url_is_downloaded_through_the_runner(host: VideoHost, clips, tmp_path: Path) -> None:
    url = host.add("/files/clip.mp4", clips["plain"]["clip.mp4"])
    (tmp_path / "posts.csv").write_text(f"id,video,likes\nv1,{url},7\nv2,{host.base}/files/gone.mp4,1\n")
    pipe = tmp_path / "p.yaml"
    pipe.write_text(yaml.safe_dump({"name": "videos", "stages": [
        {"stage": "table.read", "requests": [{"path": "posts.csv"}],
         "config": {"platform": "forum", "columns": {"id": "id", "media": "video"},
                    "behavior": {"likes": {"column": "likes", "kind": "count", "to": "like_count"}}}},
        {"stage": "media.download", "config": {"allow_private_addresses": True, "per_host_rps": 0, "threads": 1}},
    ]}))
    run = tmp_path / "run"
    report = run_pipeline(pipe, RunOptions(out=run, workers=1, progress=False))
    assert not report.failed
    media = {r["uid"]: r for r in read_dataset(run / "media", "media").to_pylist()}
    ok, gone = media["forum:v1"], media["forum:v2"]
    assert (ok["status"], ok["url"], ok["has_audio"], ok["mime"]) == ("ok", url, True, "video/mp4")
    assert ok["duration_s"] == pytest.approx(DURATION, abs=0.1)
    assert streams(ffprobe(run / ok["path"])) == [("audio", "aac"), ("video", "h264")]
    assert (gone["status"], gone["reason"]) == ("failed", "not_found")
    counters = report.stats["stages"]["media.download"]
    assert json.dumps(counters)  # plain numbers
    assert_no_leftovers(run)


# --------------------------------------------------------------------------- the carrier (rows.py)


def test_reddit_json_carries_the_manifest_fallback_and_duration() -> None:
    base = "https://v.redd.it/abc"
    api = submission("abc", dash_url=f"{base}/DASHPlaylist.mpd", fallback_url=f"{base}/DASH_720.mp4", duration=31)
    item = items_row(api)
    assert (item["media_kind"], item["media_urls"]) == (
        "video", [f"{base}/DASHPlaylist.mpd?a=1790000000%2CZmFrZQ%3D%3D&v=1&f=sd"])
    hints = video_hints(item)
    assert hints == type(hints)(fallback_urls=(f"{base}/DASH_720.mp4?source=fallback",), duration_s=31.0)
    # a crosspost carries its parent's video (its own media is null)
    cross = items_row(submission("xp", dash_url=f"{base}/DASHPlaylist.mpd", crosspost=True))
    assert cross["media_kind"] == "video" and cross["media_urls"][0].startswith(f"{base}/DASHPlaylist.mpd?")
    # old dumps: a reddit_video with only the fallback file
    dump = submission("old", fallback_url=f"{base}/DASH_720.mp4")
    assert classify_media(dump) == ("video", [f"{base}/DASH_720.mp4?source=fallback"])
    # a bare v.redd.it link (media removed from the JSON): Reddit's manifest at its fixed place
    bare = submission("bare", is_video=False, post_hint=None)
    assert classify_media(bare) == ("video", ["https://v.redd.it/bare/DASHPlaylist.mpd"])
    # links to pages stay as they are (media.download fails them as not_a_video unless collected)
    yt = submission("yt", url="https://www.youtube.com/watch?v=abc", is_video=False, post_hint="rich:video",
                    domain="youtube.com")
    assert classify_media(yt) == ("video", ["https://www.youtube.com/watch?v=abc"])
    assert video_hints(items_row(yt)) == type(hints)()
    assert gifv_target("https://i.imgur.com/Xy9.gifv?x=1") == "https://i.imgur.com/Xy9.mp4?x=1"


# --------------------------------------------------------------------------- the manifest parser


def _mpd(period: str, **attrs: str) -> bytes:
    extra = " ".join(f'{k}="{v}"' for k, v in attrs.items())
    return (f'<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" {extra}>'
            f"<BaseURL>media/</BaseURL>{period}</MPD>").encode()


def test_manifest_parser_templates_lists_and_refusals() -> None:
    url = "https://cdn.example/v/1/manifest.mpd"
    numbered = _mpd(
        '<Period><AdaptationSet mimeType="video/mp4"><SegmentTemplate timescale="10" duration="25" startNumber="3" '
        'initialization="$RepresentationID$/init.mp4" media="$RepresentationID$/$Number%03d$-$Time$.m4s"/>'
        '<Representation id="hi" bandwidth="900" width="640" height="360"/>'
        '<Representation id="lo" bandwidth="100" width="320" height="180"/></AdaptationSet></Period>',
        mediaPresentationDuration="PT6S")
    m = parse_manifest(numbered, url)
    assert m.duration_s == 6 and m.audio is None and m.video.rep_id == "hi"
    assert m.video.urls == ("https://cdn.example/v/1/media/hi/init.mp4",
                            *(f"https://cdn.example/v/1/media/hi/{n:03d}-{t}.m4s"
                              for n, t in zip(range(3, 6), (0, 25, 50))))
    assert parse_manifest(numbered, url, max_height=200).video.rep_id == "lo"
    assert parse_manifest(numbered, url, max_height=100).video.rep_id == "lo"  # none fits: the smallest
    repeat = _mpd('<Period><AdaptationSet contentType="audio"><Representation id="a" bandwidth="1">'
                  '<SegmentTemplate timescale="1" media="a$Time$.m4s"><SegmentTimeline><S t="10" d="2" r="-1"/>'
                  '</SegmentTimeline></SegmentTemplate></Representation></AdaptationSet>'
                  '<AdaptationSet><Representation id="v" codecs="avc1.64001f" bandwidth="5">'
                  '<BaseURL>https://other.example/v.mp4</BaseURL></Representation></AdaptationSet></Period>',
                  mediaPresentationDuration="PT16S")
    m = parse_manifest(repeat, url)
    assert m.audio is not None and [u.rsplit("/", 1)[1] for u in m.audio.urls] == ["a10.m4s", "a12.m4s", "a14.m4s"]
    assert m.video.urls == ("https://other.example/v.mp4",)
    ranges = _mpd('<Period><AdaptationSet contentType="video"><Representation id="0" bandwidth="1">'
                  '<BaseURL>DASH_0.mp4</BaseURL><SegmentList><Initialization range="0-831"/>'
                  '<SegmentURL mediaRange="832-9000"/></SegmentList></Representation></AdaptationSet></Period>',
                  mediaPresentationDuration="PT2S")
    assert parse_manifest(ranges, url).video.urls == ("https://cdn.example/v/1/media/DASH_0.mp4",)
    for bad, why in (
        (_mpd("<Period/>", type="dynamic").replace(b'type="static" ', b""), "live"),
        (_mpd("<Period/><Period/>"), "2 periods"),
        (_mpd('<Period><AdaptationSet contentType="audio"><Representation id="a"><BaseURL>a.mp4</BaseURL>'
              "</Representation></AdaptationSet></Period>"), "no video"),
        (b"<html><body>nope</body></html>", "not an MPEG-DASH"),
        (b"<MPD><Period>", "well-formed"),
    ):
        with pytest.raises(DashError, match=why):
            parse_manifest(bad, url)
    assert parse_duration("PT1H2M3.5S") == 3723.5 and parse_duration("P0Y0M0DT0H0M14.000S") == 14
    assert parse_duration("garbage") is None and parse_duration("P") is None
