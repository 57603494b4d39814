"""Write the bundled YouTube sample: short videos with known cuts and speech, plus the
``.info.json`` files yt-dlp would have saved for them (``samples/youtube``).

    python samples/make_youtube_sample.py            # rewrites samples/youtube/{info,media}
    python samples/make_youtube_sample.py --out DIR

Needs ``ffmpeg`` and ``espeak-ng``. Everything is synthetic: titles, channels, comments, speech
(espeak-ng reading made-up sentences) and pictures (ffmpeg test sources).

Why saved info dicts: yt-dlp's YouTube extractor cannot be pointed at a local server, but
``yt-dlp --load-info-json`` (``YoutubeDL.download_with_info_file``) runs the whole
post-extraction path on a saved dict. The dicts' ``formats[].url`` point at the replay server
the sample pipeline starts on ``127.0.0.1:38517`` (a fixed port, like the Reddit sample's
image URLs), which serves ``media/`` at ``/youtube/media/``.

Videos (320x180, 25 fps, H.264 + AAC), each with a known cut list so the scene stage can be
checked against it, varied sentences (Whisper drops repeated text as a hallucination) and a
"most replayed" heatmap of 100 points like YouTube's:

* ``ytsample001`` 3 scenes: testsrc 4 s, smptebars 4 s, mandelbrot 4 s; speech; 184k views.
* ``ytsample002`` 2 scenes: a red card with text 4 s, testsrc2 4 s; speech; 52k views.
* ``ytsample003`` 1 scene, 6 s, 3,210 views: below the paper's 10k-view rule, so the collector
  drops it (reason ``few_views``) without downloading it; it has no media file on purpose.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

PORT = 38517
BASE = f"http://127.0.0.1:{PORT}/youtube/media"
EPOCH = 1717243200  # 2024-06-01T12:00:00Z: when the info dicts were "saved"
W, H, FPS = 320, 180, 25

VIDEOS: list[dict[str, Any]] = [
    {
        "id": "ytsample001",
        "title": "Three ways to test a television signal",
        "channel": "Signal Workshop", "channel_id": "UCsample0000000000000001", "followers": 48_200,
        "views": 184_311, "likes": 6_021, "upload_date": "20240312", "categories": ["Science & Technology"],
        "tags": ["test pattern", "television", "broadcast"],
        "segments": [("testsrc", 4.0), ("smptebars", 4.0), ("mandelbrot", 4.0)],
        "speech": ["Welcome back to the workshop. Today, test patterns.",
                   "Colour bars calibrated broadcast monitors for decades.",
                   "A fractal shows the fine detail an encoder keeps."],
        "peak": 6.0,  # most replayed moment (seconds): the colour bars
        "comments": [
            ("Ugkx001", "The colour bars section brought back memories of late night television.", 412, False, False),
            ("Ugkx002", "Great explanation of why the bars are in that order, thank you!", 188, False, True),
            ("Ugkx003", "Which encoder settings did you use for the fractal part?", 57, False, False),
            ("Ugkx004", "I rewatched the middle part three times, fascinating stuff.", 33, False, False),
            ("Ugkx005", "great explanation of why the bars are in that order, thanks!", 4, False, False),
            ("Ugkx006", "Pinned: the full calibration guide is linked in the description.", 21, True, True),
        ],
    },
    {
        "id": "ytsample002",
        "title": "Red card, then the classic pattern",
        "channel": "Pattern Lab", "channel_id": "UCsample0000000000000002", "followers": 9_870,
        "views": 52_004, "likes": 1_733, "upload_date": "20240420", "categories": ["Education"],
        "tags": ["colour", "red", "pattern"],
        "segments": [("red", 4.0), ("testsrc2", 4.0)],
        "speech": ["Red is the warmest colour on this card, and the easiest to spot.",
                   "Next comes the moving pattern, with a counter in the corner."],
        "peak": 1.5,
        "comments": [
            ("Ugky001", "The red card at the start is such a bold choice, love it.", 95, False, False),
            ("Ugky002", "Could you make a longer version with more patterns please?", 41, False, False),
            ("Ugky003", "The counter in the corner is oddly satisfying to watch.", 12, False, False),
        ],
    },
    {
        "id": "ytsample003",
        "title": "A quiet grey minute",
        "channel": "Pattern Lab", "channel_id": "UCsample0000000000000002", "followers": 9_870,
        "views": 3_210, "likes": 41, "upload_date": "20240501", "categories": ["Education"],
        "tags": ["grey"], "segments": [("gray", 6.0)], "speech": [], "peak": 3.0,
        "comments": [("Ugkz001", "Very calming, I left this running in the background.", 3, False, False)],
        "no_file": True,
    },
]


def run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        raise SystemExit(f"make_youtube_sample: {cmd[0]} failed:\n{proc.stderr[-2000:]}")


def source(name: str, seconds: float) -> list[str]:
    """ffmpeg lavfi input for one segment."""
    size = f"{W}x{H}"
    if name in ("red", "gray"):
        graph = f"color=c={name}:s={size}:r={FPS}"
        if name == "red":
            graph += ",drawtext=text='RED CARD':fontcolor=white:fontsize=36:x=(w-tw)/2:y=(h-th)/2"
    else:
        graph = f"{name}=s={size}:r={FPS}"
    return ["-f", "lavfi", "-t", str(seconds), "-i", graph]


def speech_track(sentences: list[str], starts: list[float], total: float, tmp: Path) -> Path:
    """One WAV of ``total`` seconds with each sentence spoken from its start time."""
    out = tmp / "speech.wav"
    if not sentences:
        run(["ffmpeg", "-y", "-f", "lavfi", "-i", f"anullsrc=r=16000:cl=mono:d={total}", str(out)])
        return out
    inputs, filters = [], []
    for k, (text, start) in enumerate(zip(sentences, starts)):
        wav = tmp / f"s{k}.wav"
        run(["espeak-ng", "-v", "en-us", "-s", "165", "-w", str(wav), text])
        inputs += ["-i", str(wav)]
        filters.append(f"[{k}:a]aresample=16000,adelay={int(start * 1000)}:all=1[a{k}]")
    mix = "".join(f"[a{k}]" for k in range(len(sentences)))
    graph = ";".join(filters) + f";{mix}amix=inputs={len(sentences)}:normalize=0,apad,atrim=0:{total}[out]"
    run(["ffmpeg", "-y", *inputs, "-filter_complex", graph, "-map", "[out]", "-ac", "1", str(out)])
    return out


def make_video(video: dict[str, Any], path: Path) -> None:
    segs = video["segments"]
    total = sum(s for _, s in segs)
    starts, t = [], 0.0
    for _, seconds in segs:
        starts.append(t + 0.3)
        t += seconds
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        audio = speech_track(video["speech"], starts, total, tmp)
        inputs = [arg for name, seconds in segs for arg in source(name, seconds)]
        norm = "".join(f"[{k}:v]setsar=1,format=yuv420p[v{k}];" for k in range(len(segs)))
        concat = norm + "".join(f"[v{k}]" for k in range(len(segs))) + f"concat=n={len(segs)}:v=1:a=0[v]"
        run(["ffmpeg", "-y", *inputs, "-i", str(audio), "-filter_complex", concat,
             "-map", "[v]", "-map", f"{len(segs)}:a", "-c:v", "libx264", "-preset", "veryfast", "-crf", "30",
             "-pix_fmt", "yuv420p", "-g", str(FPS * 2), "-threads", "1", "-c:a", "aac", "-b:a", "48k",
             "-ar", "16000", "-ac", "1", "-movflags", "+faststart", "-fflags", "+bitexact",
             "-map_metadata", "-1", "-flags:v", "+bitexact", "-flags:a", "+bitexact", str(path)])


def heatmap(duration: float, peak: float) -> list[dict[str, float]]:
    """100 points like YouTube's graph: a bump around ``peak`` on a slow decay, max 1.0."""
    step = duration / 100
    raw = [0.25 * math.exp(-i / 60) + math.exp(-(((i + 0.5) * step - peak) ** 2) / 0.8) for i in range(100)]
    top = max(raw)
    return [{"start_time": round(i * step, 3), "end_time": round((i + 1) * step, 3), "value": round(v / top, 4)}
            for i, v in enumerate(raw)]


def info_dict(video: dict[str, Any], size: int | None) -> dict[str, Any]:
    vid = video["id"]
    duration = sum(s for _, s in video["segments"])
    url = f"https://www.youtube.com/watch?v={vid}"
    ts = int(EPOCH - 86400 * 30)
    comments = [
        {"id": cid, "parent": "root", "text": text, "like_count": likes, "author": f"@viewer{n}",
         "author_id": f"UCviewer{n:016d}", "author_thumbnail": None, "author_is_uploader": uploader,
         "author_is_verified": False, "author_url": None, "is_favorited": False, "is_pinned": pinned,
         "timestamp": ts + 3600 * n, "_time_text": f"{2 + n} weeks ago"}
        for n, (cid, text, likes, pinned, uploader) in enumerate(video["comments"])
    ]
    fmt = {
        "format_id": "18", "format_note": "180p", "ext": "mp4", "protocol": "http",
        "url": f"{BASE}/{vid}.mp4", "width": W, "height": H, "fps": FPS, "vcodec": "avc1.64000d",
        "acodec": "mp4a.40.2", "asr": 16000, "audio_channels": 1, "filesize": size,
        "http_headers": {"User-Agent": "Mozilla/5.0", "Accept": "*/*"},
    }
    return {
        "id": vid, "title": video["title"], "fulltitle": video["title"],
        "description": f"{video['title']}. A synthetic video of the blift sample; speech by espeak-ng.",
        "channel": video["channel"], "channel_id": video["channel_id"],
        "channel_url": f"https://www.youtube.com/channel/{video['channel_id']}",
        "channel_follower_count": video["followers"], "uploader": video["channel"],
        "uploader_id": "@" + video["channel"].replace(" ", ""), "duration": duration,
        "duration_string": f"0:{int(duration):02d}", "view_count": video["views"], "like_count": video["likes"],
        "comment_count": len(comments), "age_limit": 0, "availability": "public", "live_status": "not_live",
        "upload_date": video["upload_date"], "timestamp": ts, "categories": video["categories"],
        "tags": video["tags"], "language": "en", "chapters": None,
        "heatmap": heatmap(duration, video["peak"]), "comments": comments,
        "subtitles": {}, "automatic_captions": {}, "thumbnails": [],
        "webpage_url": url, "original_url": url, "webpage_url_basename": "watch", "webpage_url_domain": "youtube.com",
        "extractor": "youtube", "extractor_key": "Youtube", "display_id": vid, "epoch": EPOCH, "_type": "video",
        "formats": [fmt], "format_id": "18", "ext": "mp4", "url": fmt["url"], "protocol": "http",
        "width": W, "height": H, "fps": FPS, "vcodec": fmt["vcodec"], "acodec": fmt["acodec"],
        "http_headers": fmt["http_headers"], "requested_subtitles": None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "youtube")
    args = parser.parse_args()
    for tool in ("ffmpeg", "espeak-ng"):
        if not shutil.which(tool):
            raise SystemExit(f"make_youtube_sample: {tool} is not installed")
    info_dir, media_dir = args.out / "info", args.out / "media"
    for folder in (info_dir, media_dir):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    expected = {}
    for video in VIDEOS:
        bounds, t = [], 0.0
        for _, seconds in video["segments"]:
            bounds.append({"start_s": t, "end_s": t + seconds, "start_frame": round(t * FPS),
                           "end_frame": round((t + seconds) * FPS)})
            t += seconds
        expected[video["id"]] = {"scenes": bounds, "speech": video["speech"], "views": video["views"]}
        size = None
        if not video.get("no_file"):
            path = media_dir / f"{video['id']}.mp4"
            make_video(video, path)
            size = path.stat().st_size
        info = info_dict(video, size)
        (info_dir / f"{video['id']}.info.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
        print(f"{video['id']}: {len(video['segments'])} scenes, {info['duration']:.0f} s, "
              f"{size or 0} bytes, {info['view_count']} views")
    # What tests check the pipeline against (known cuts, spoken sentences); not read by blift.
    (args.out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
