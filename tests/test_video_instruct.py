"""Video instruction records: replay mapping, scene-by-scene verbalization, token budget, the stage."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from blift import schemas, tables
from blift.errors import ConfigError, ErrorClass
from blift.ids import split_of
from blift.pipeline import RunOptions, run_pipeline
from blift.stage import ShardInput
from blift.stages.instruct.replay import most_replayed, scene_replay
from blift.stages.instruct.stage import InstructStage
from blift.stages.instruct.templates import load_template
from blift.stages.instruct.token_budget import estimate_tokens
from blift.stages.instruct.validate import validate_record
from blift.stages.instruct.video_records import format_percent, format_replay
from blift.stages.instruct.video_verbalize import align_speech, format_clock, format_duration, pace_of

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
HEATMAP = [0.1, 0.2, 1.0, 0.5, 0.3, 0.0, 0.05, 0.6, 0.4, 0.2]  # ten 1-second bins


def bins(values: list[float], width: float = 1.0, start: float = 0.0) -> list[dict[str, float]]:
    return [{"start_s": start + i * width, "end_s": start + (i + 1) * width, "value": v} for i, v in enumerate(values)]


def approx(values: list[float | None]) -> list[Any]:
    return [None if v is None else pytest.approx(v) for v in values]


# ---------------------------------------------------------------- replay mapping (hand-computed)


def test_replay_time_weighted_mean_and_peak_with_partial_overlaps():
    heat = bins([0.2, 0.4, 1.0, 0.0])
    got = scene_replay(heat, [(0, 2), (1.5, 3.5), (3, 4)])
    # (0,2): (1*0.2 + 1*0.4) / 2 = 0.3; (1.5,3.5): (0.5*0.4 + 1*1.0 + 0.5*0.0) / 2 = 0.6; (3,4): 0.0
    assert approx([r.mean for r in got]) == [0.3, 0.6, 0.0]
    assert [r.peak for r in got] == [0.4, 1.0, 0.0]
    assert [r.covered_s for r in got] == [2.0, 2.0, 1.0]


def test_replay_gaps_and_scenes_past_the_end():
    # unsorted, gap 1-2
    heat = [{"start_s": 2.0, "end_s": 3.0, "value": 1.0}, {"start_s": 0.0, "end_s": 1.0, "value": 0.5}]
    got = scene_replay(heat, [(0, 3), (1, 2), (1.5, 2.5), (2.5, 5), (4, 6)])
    # (0,3): the gap is left out: (0.5 + 1.0) / 2 = 0.75, not / 3
    # (1,2): lies in the gap -> None; (1.5,2.5): only 0.5 s of bin 2 covered -> 1.0
    # (2.5,5): 0.5 s covered by the last bin -> 1.0; (4,6): past the end -> None
    assert approx([r.mean for r in got]) == [0.75, None, 1.0, 1.0, None]
    assert [r.peak for r in got] == [1.0, None, 1.0, 1.0, None]
    assert got[0].covered_s == 2.0 and got[4].covered_s == 0.0


def test_replay_uneven_bins_and_bad_rows():
    heat = [{"start_s": 0, "end_s": 4, "value": 0.25}, {"start_s": 4, "end_s": 5, "value": 0.75},
            {"start_s": 5, "end_s": None, "value": 1.0}, {"start_s": 6, "end_s": 5, "value": 1.0}, {"value": 1.0}]
    got = scene_replay(heat, [(3, 5), (0, 10), (4.5, 4.5)])
    # (3,5): (1*0.25 + 1*0.75)/2 = 0.5; (0,10): (4*0.25 + 1*0.75)/5 = 0.35; zero-length at 4.5: bin value 0.75
    assert approx([r.mean for r in got]) == [0.5, 0.35, 0.75]
    assert got[1].peak == 0.75


def test_replay_empty_heatmap_is_all_null():
    for heat in (None, []):
        assert [(r.mean, r.peak) for r in scene_replay(heat, [(0, 1), (1, 2)])] == [(None, None), (None, None)]
    assert most_replayed([None, None], 3) == []


def test_most_replayed_ranks_by_mean_ties_to_the_earlier_scene():
    assert most_replayed([0.5, 0.9, 0.5, None, 0.9], 3) == [1, 4, 0]
    assert most_replayed([0.5, 0.9, 0.5, None, 0.9], 10) == [1, 4, 0, 2]
    assert most_replayed([0.1, 0.3], 1) == [1]


# ---------------------------------------------------------------- verbalization pieces


def test_speech_goes_to_the_scene_where_each_word_starts():
    segments = [
        {"start_s": 0.2, "end_s": 4.0, "text": "ignored when words exist", "words": [
            {"start_s": 0.2, "end_s": 0.5, "word": " Hello"}, {"start_s": 2.4, "end_s": 2.7, "word": " there,"},
            {"start_s": 2.6, "end_s": 3.1, "word": " friends"}]},  # starts in scene 1, ends in scene 2
        {"start_s": 7.0, "end_s": 9.0, "text": " to the  show.", "words": None},  # untimed words: segment start
        {"start_s": 12.0, "end_s": 13.0, "text": "after the end", "words": []},
    ]
    scenes = [(0.5, 2.5), (2.5, 6.0), (6.0, 10.0)]
    assert align_speech(segments, scenes) == [
        ["Hello", "there,"],  # 0.2 s is before the first scene: it goes to the first scene
        ["friends"],
        ["to", "the", "show.", "after", "the", "end"],  # after the last scene: the last scene
    ]
    assert align_speech(segments, []) == []


def test_small_formats():
    assert format_duration(42.4) == "42 seconds" and format_duration(0.3) == "1 second"
    assert format_duration(65) == "1 minute 5 seconds" and format_duration(3720) == "1 hour 2 minutes"
    assert format_clock(65.9) == "1:05" and format_clock(3725) == "1:02:05" and format_clock(0) == "0:00"
    assert pace_of(3, 10.0) == ("moderate", pytest.approx(12.0)) and pace_of(1, 10.0) is None
    assert pace_of(2, 60.0)[0] == "slow" and pace_of(31, 60.0)[0] == "fast"
    assert format_percent(200 / 10000) == "2.0%" and format_percent(0.12345) == "12.3%"
    assert format_replay(0.0625) == "0.06" and format_replay(0.375) == "0.38" and format_replay(1.0) == "1.00"
    # the estimate, by its stated rules: "Scene"=1, digits 1 each, punctuation 1 each, newline 1,
    # "colours" (7 letters) = 2
    assert estimate_tokens("Scene 12 (0:05)") == 1 + 2 + 1 + 4 + 1
    assert estimate_tokens("colours\nred") == 2 + 1 + 1
    assert estimate_tokens("") == 0


# ---------------------------------------------------------------- hand-built tables


def yt_item(uid: str, **kw: Any) -> dict[str, Any]:
    row = {"uid": uid, "platform": "youtube", "item_id": uid.split(":")[1], "source": "api",
           "title": f"Video {uid}", "community": "Some Channel", "collected_at": T0, "media_kind": "video",
           "view_count": 10000, "like_count": 200, "comment_count": 12, "subscriber_count": 5000,
           "heatmap": bins(HEATMAP)}
    row.update(kw)
    return row


def yt_media(uid: str, index: int = 0, **kw: Any) -> dict[str, Any]:
    row = {"uid": uid, "index": index, "url": f"https://www.youtube.com/watch?v={uid.split(':')[1]}", "status": "ok",
           "path": f"media/{uid.split(':')[1]}.mp4", "mime": "video/mp4", "width": 1280, "height": 720,
           "duration_s": 10.0, "has_audio": True, "sha256": "ab" * 32}
    row.update(kw)
    return row


def yt_scenes(uid: str, spans: list[tuple[float, float]] = ((0, 2.5), (2.5, 6), (6, 10)), index: int = 0
              ) -> list[dict[str, Any]]:
    return [{"uid": uid, "media_index": index, "scene": k, "start_s": s, "end_s": e, "start_frame": int(s * 25),
             "end_frame": int(e * 25), "keyframe_frame": int((s + e) * 12.5), "keyframe_path": f"scenes/{uid}/{k}.jpg",
             "detector": "content:27.0"} for k, (s, e) in enumerate(spans)]


def yt_transcript(uid: str, segments: list[dict[str, Any]], status: str = "ok") -> dict[str, Any]:
    return {"uid": uid, "media_index": 0, "status": status, "backend": "faster-whisper", "model": "tiny.en",
            "language": "en", "segments": segments, "text": " ".join(s["text"] for s in segments)}


def seg(start: float, end: float, text: str) -> dict[str, Any]:
    """A segment whose words are spread evenly over its span."""
    words = text.split()
    step = (end - start) / max(1, len(words))
    return {"start_s": start, "end_s": end, "text": text, "avg_logprob": -0.2, "no_speech_prob": 0.01,
            "words": [{"start_s": start + i * step, "end_s": start + (i + 1) * step, "word": " " + w,
                       "probability": 0.9}
                      for i, w in enumerate(words)]}


def yt_attrs(uid: str, scene: int, **kw: Any) -> dict[str, Any]:
    row = {"uid": uid, "media_index": 0, "scene": scene, "orientation": "landscape", "width": 1280, "height": 720,
           "foreground_colors": ["Red"], "background_colors": ["Dark_Blue"], "tone": "warm", "complexity": "low",
           "ocr_text": "", "caption": None, "keywords": None}
    row.update(kw)
    return row


def yt_caption(uid: str, scene: int | None, caption: str, keywords: list[str], index: int = 0) -> dict[str, Any]:
    return {"uid": uid, "media_index": index, "scene": scene, "caption": caption, "keywords": keywords,
            "model": "llava-tiny", "prompt_sha": "0123456789ab"}


def yt_comment(uid: str, cid: str, likes: int | None, text: str, depth: int = 0, **kw: Any) -> dict[str, Any]:
    row = {"uid": uid, "platform": "youtube", "comment_id": cid, "depth": depth, "text": text, "score": None,
           "like_count": likes, "collected_at": T0, "parent_id": None if depth == 0 else "x"}
    row.update(kw)
    return row


def yt_frames(uid: str) -> dict[str, Any]:
    return {"uid": uid, "media_index": 0, "path": f"scenes/frames/{uid.split(':')[1]}.npy", "sampling": "scenes",
            "fps": None, "count": 3, "side": 224, "timestamps_s": [1.0, 4.0, 8.0]}


def video_tables(**rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Input tables by stage dataset name; every missing one is an empty table (as the runner does)."""
    out = {}
    for dataset, schema in InstructStage.inputs.items():
        out[dataset] = schemas.get(schema).from_rows(rows.get(dataset, []))
    return out


def run_video(tmp_path: Path, **config: Any):
    def go(**rows: list[dict[str, Any]]):
        stage = InstructStage(InstructStage.Config(**config), tmp_path)
        stage.setup()
        return stage.process(ShardInput("part-00000", video_tables(**rows), tmp_path))
    return go


def by_id(result) -> dict[str, dict]:
    return {r["id"]: r for r in result.tables["instructions"].to_pylist()}


def full_video(uid: str = "youtube:vid1", **item_kw: Any) -> dict[str, list[dict[str, Any]]]:
    """One video with everything: scenes, speech, a caption for scene 2, attributes, comments, frames."""
    return {
        "items_clean": [yt_item(uid, **item_kw)],
        "media": [yt_media(uid)],
        "scenes": yt_scenes(uid),
        "transcripts": [yt_transcript(uid, [seg(0.2, 2.2, "Hello there friends"), seg(2.6, 4.6, "welcome to the show"),
                                            seg(7.0, 9.0, "see you soon")])],
        "captions": [yt_caption(uid, 1, "A man waves at the camera.", ["man", "camera"])],
        "attributes": [yt_attrs(uid, 0), yt_attrs(uid, 1), yt_attrs(uid, 2, ocr_text=" SALE\n50% off ")],
        "comments_clean": [yt_comment(uid, "c0", 999, "pinned by the uploader", stickied=True),
                           yt_comment(uid, "c1", 5, "five likes"), yt_comment(uid, "c2", 50, "fifty likes"),
                           yt_comment(uid, "c3", 7, "seven likes"), yt_comment(uid, "c4", 5000, "a reply", depth=1),
                           yt_comment(uid, "c5", None, "no like count")],
    }


def test_video_records_scene_by_scene(tmp_path):
    result = run_video(tmp_path, top_k_comments=3)(**full_video())
    assert result.dropped == [] and result.errors == []
    recs = by_id(result)
    assert set(recs) == {"youtube:vid1:behavior", "youtube:vid1:content"}
    beh, con = recs["youtube:vid1:behavior"], recs["youtube:vid1:content"]
    human = beh["conversations"][0]["value"]
    assert human.startswith('<image>\nThis video was posted on YouTube with the title "Video youtube:vid1".')
    assert 'by the channel "Some Channel"' in human and "5000 subscribers" in human
    description = (
        "A landscape video of 1280x720 pixels, 10 seconds long, in 3 scenes, "
        "at a moderate pace of 12.0 cuts per minute.\n"
        'Scene 1 (0:00-0:02): The audio says: "Hello there friends". Foreground colours: red. '
        "Background colours: dark blue. The tone is warm. The visual complexity is low.\n"
        'Scene 2 (0:02-0:06): The audio says: "welcome to the show". Caption: A man waves at the camera. '
        "Keywords: man, camera. Foreground colours: red. Background colours: dark blue. The tone is warm. "
        "The visual complexity is low.\n"
        'Scene 3 (0:06-0:10): The audio says: "see you soon". Foreground colours: red. Background colours: dark blue. '
        'The tone is warm. The visual complexity is low. On-screen text: "SALE 50% off".'
    )
    assert description in human
    assert con["conversations"][1]["value"] == description  # the control answers with the same text

    # replay by hand: (0,2.5) -> (0.1+0.2+0.5*1.0)/2.5 = 0.32; (2.5,6) -> (0.5*1.0+0.5+0.3+0.0)/3.5 = 0.3714...;
    # (6,10) -> (0.05+0.6+0.4+0.2)/4 = 0.3125
    t = beh["targets"]
    assert t["scene_replay"] == approx([0.32, 1.3 / 3.5, 0.3125])
    assert t["most_replayed_scenes"] == [1, 0, 2]
    assert (t["view_count"], t["like_count"], t["num_comments"]) == (10000, 200, 12)
    assert t["like_ratio"] == pytest.approx(0.02) and t["score"] is None and t["upvote_ratio"] is None
    assert t["comments"] == ["fifty likes", "seven likes", "five likes"] and t["comment_scores"] == [50, 7, 5]
    answer = beh["conversations"][1]["value"]
    assert answer == ("Views: 10000\nLikes: 200\nLike ratio: 2.0%\nNumber of comments: 12\n"
                      "Replay value per scene: Scene 1: 0.32, Scene 2: 0.37, Scene 3: 0.31\n"
                      "Most replayed scenes, most replayed first: 2, 1, 3\n"
                      "Top comments, ranked by likes:\n1. fifty likes\n2. seven likes\n3. five likes")
    for rec in (beh, con):
        assert rec["media_kind"] == "video" and rec["media"] == ["media/vid1.mp4"] and rec["platform"] == "youtube"
        assert rec["split"] == split_of("youtube:vid1") and rec["collected_at"] == T0
        assert validate_record(rec) == []
    assert con["targets"] is None
    for leaked in ("10000", "2.0%", "0.32", "fifty likes", "Views", "replay"):
        assert leaked not in "\n".join(x["value"] for x in con["conversations"]), leaked
    assert result.counters["comments_skipped_pinned"] == 1 and result.counters["video_media_file"] == 1
    schemas.get("instructions").validate(result.tables["instructions"])


def test_video_without_captions_has_no_caption_text_and_frames_are_the_media(tmp_path):
    rows = full_video()
    rows["captions"] = []
    rows["attributes"] = []
    rows["frames"] = [yt_frames("youtube:vid1")]
    rows["transcripts"] = [yt_transcript("youtube:vid1", [], status="no_speech")]
    recs = by_id(run_video(tmp_path)(**rows))
    text = recs["youtube:vid1:content"]["conversations"][1]["value"]
    assert "Caption" not in text and "Keywords" not in text and "colours" not in text and "says" not in text
    assert text.splitlines() == [
        "A landscape video of 1280x720 pixels, 10 seconds long, in 3 scenes, at a moderate pace of 12.0 cuts per "
        "minute. No speech is heard.",
        "Scene 1 (0:00-0:02).", "Scene 2 (0:02-0:06).", "Scene 3 (0:06-0:10).",
    ]
    assert recs["youtube:vid1:behavior"]["media"] == ["scenes/frames/vid1.npy"]


def test_missing_heatmap_leaves_replay_out(tmp_path):
    rows = full_video(heatmap=None, comment_count=None, community=None, subscriber_count=None)
    result = run_video(tmp_path)(**rows)
    beh = by_id(result)["youtube:vid1:behavior"]
    answer = beh["conversations"][1]["value"]
    assert "Replay" not in answer and "Most replayed" not in answer and "Number of comments" not in answer
    assert "None" not in answer and "channel" not in beh["conversations"][0]["value"]  # no channel, no subscribers
    assert beh["targets"]["scene_replay"] is None and beh["targets"]["most_replayed_scenes"] is None
    assert validate_record(beh) == [] and result.counters["video_no_heatmap"] == 1
    # a heatmap that stops early: the scene past its end is null in the targets and absent from the text
    rows = full_video(heatmap=bins([0.4, 0.8, 0.2], width=2.0))  # covers 0-6 s
    beh = by_id(run_video(tmp_path)(**rows))["youtube:vid1:behavior"]
    # (0,2.5): (2*0.4 + 0.5*0.8)/2.5 = 0.48; (2.5,6): (1.5*0.8 + 2*0.2)/3.5 = 0.4571...
    assert beh["targets"]["scene_replay"] == approx([0.48, 1.6 / 3.5, None])
    assert beh["targets"]["most_replayed_scenes"] == [0, 1]
    assert "Replay value per scene: Scene 1: 0.48, Scene 2: 0.46\n" in beh["conversations"][1]["value"]


def test_scene_behavior_table_holds_every_scene_with_the_records_values(tmp_path):
    """The stage's second output: replay and words per scene, for videos with and without records."""
    assert InstructStage.outputs["scene_behavior"] == "scene_behavior"
    rows = full_video()
    quiet = "youtube:quiet"  # dropped (no comments), no heatmap, no speech: its scenes still get rows
    rows["items_clean"].append(yt_item(quiet, heatmap=None))
    rows["media"].append(yt_media(quiet))
    rows["scenes"] += yt_scenes(quiet, [(0, 4), (4, 10)])
    rows["transcripts"].append(yt_transcript(quiet, [], status="no_speech"))
    rows["items_clean"].append(yt_item("reddit:img", platform="reddit", media_kind="image"))  # no scenes: no rows
    result = run_video(tmp_path, top_k_comments=3)(**rows)
    assert [d["reason"] for d in result.dropped] == ["few_comments", "no_media"]
    table = result.tables["scene_behavior"]
    schemas.get("scene_behavior").validate(table)
    got = {(r["uid"], r["media_index"], r["scene"]): r for r in table.to_pylist()}
    assert sorted(got) == [("youtube:quiet", 0, 0), ("youtube:quiet", 0, 1),
                           ("youtube:vid1", 0, 0), ("youtube:vid1", 0, 1), ("youtube:vid1", 0, 2)]
    vid = [got[("youtube:vid1", 0, k)] for k in range(3)]
    # the records' own replay targets; peaks by hand: (0,2.5) bins 0.1 0.2 1.0; (2.5,6) 1.0 .. 0.0; (6,10) up to 0.6
    assert [r["replay_mean"] for r in vid] == by_id(result)["youtube:vid1:behavior"]["targets"]["scene_replay"]
    assert [r["replay_peak"] for r in vid] == [1.0, 1.0, 0.6]
    assert [r["transcript"] for r in vid] == ["Hello there friends", "welcome to the show", "see you soon"]
    for k in range(2):
        r = got[(quiet, 0, k)]
        assert (r["replay_mean"], r["replay_peak"], r["transcript"]) == (None, None, None)


def test_scene_behavior_words_follow_the_transcript_status(tmp_path):
    """Speech found elsewhere in the video gives an empty transcript for a silent scene, not a null one."""
    rows = full_video()
    rows["transcripts"] = [yt_transcript("youtube:vid1", [seg(0.2, 2.2, "only at the start")])]
    table = run_video(tmp_path)(**rows).tables["scene_behavior"]
    assert table.column("transcript").to_pylist() == ["only at the start", "", ""]


def test_drop_reasons_and_pairing(tmp_path):
    rows: dict[str, list] = {k: [] for k in ("items_clean", "media", "scenes", "comments_clean", "videos")}
    cases = {
        "youtube:ok": {},
        "youtube:nomedia": {"media": False},
        "youtube:failed": {"media": "failed"},
        "youtube:noscenes": {"scenes": False},
        "youtube:noviews": {"item": {"view_count": 0}},
        "youtube:nolikes": {"item": {"like_count": None}},
        "youtube:fewcomments": {"comments": [yt_comment("youtube:fewcomments", "c", 1, "[deleted]"),
                                             yt_comment("youtube:fewcomments", "d", 9, "reply", depth=1)]},
        "reddit:vid": {"item": {"platform": "reddit"}},  # a Reddit video post needs a score
        "myforum:vid": {"item": {"platform": "myforum"}},
    }
    for uid, case in cases.items():
        rows["items_clean"].append(yt_item(uid, **case.get("item", {})))
        if case.get("media") == "failed":
            rows["media"].append(yt_media(uid, status="failed", reason="too_large", path=None, mime=None))
            rows["videos"].append({"uid": uid, "file_status": "skipped", "file_reason": "too_large"})
        elif case.get("media", True):
            rows["media"].append(yt_media(uid))
        if case.get("scenes", True):
            rows["scenes"].extend(yt_scenes(uid))
        rows["comments_clean"].extend(case.get("comments", [yt_comment(uid, "c", 3, "nice video")]))
    result = run_video(tmp_path, tasks=["content"], fallback_generic=False)(**rows)
    reasons = {d["uid"]: d["reason"] for d in result.dropped}
    assert reasons == {"youtube:nomedia": "no_media", "youtube:failed": "no_media", "youtube:noscenes": "no_scenes",
                       "youtube:noviews": "no_views", "youtube:nolikes": "no_likes",
                       "youtube:fewcomments": "few_comments", "reddit:vid": "no_score",
                       "myforum:vid": "other_platform"}
    detail = {d["uid"]: d["detail"] for d in result.dropped}
    assert "too_large" in detail["youtube:failed"] and "file_status skipped" in detail["youtube:failed"]
    # content-only run, yet the few-comments video gets no content record: both tasks cover the same videos
    assert [r["id"] for r in result.tables["instructions"].to_pylist()] == ["youtube:ok:content"]
    schemas.get("dropped").from_rows(result.dropped)
    with_heatmap = run_video(tmp_path, require_heatmap=True)(
        items_clean=[yt_item("youtube:flat", heatmap=[])], media=[yt_media("youtube:flat")],
        scenes=yt_scenes("youtube:flat"), comments_clean=[yt_comment("youtube:flat", "c", 1, "hi")])
    assert [d["reason"] for d in with_heatmap.dropped] == ["no_heatmap"]


def test_badly_numbered_scenes_and_missing_title_are_invalid_rows(tmp_path):
    rows = full_video("youtube:gap")
    rows["scenes"] = [s for s in rows["scenes"] if s["scene"] != 1]
    more = full_video("youtube:notitle", title=None)
    hot = full_video("youtube:hot", heatmap=bins([0.5, 1.5]))
    ok = full_video("youtube:fine")
    merged = {k: rows[k] + more[k] + hot[k] + ok[k] for k in rows}
    result = run_video(tmp_path)(**merged)  # one bad video never stops the shard
    errors = {e.record_key: e for e in result.errors}
    assert set(errors) == {"youtube:gap", "youtube:notitle", "youtube:hot"}
    assert all(e.error_class is ErrorClass.INVALID for e in errors.values())
    assert "0..n-1" in errors["youtube:gap"].message and "1.5" in errors["youtube:hot"].message
    assert "{title}" in errors["youtube:notitle"].message
    assert {r["uid"] for r in result.tables["instructions"].to_pylist()} == {"youtube:fine"}


# ---------------------------------------------------------------- token budget


def _human_tokens(rec: dict[str, Any]) -> int:
    return estimate_tokens(rec["conversations"][0]["value"])


def test_huge_transcript_is_cut_per_scene_keeping_the_beginning(tmp_path):
    rows = full_video()
    long_speech = " ".join(f"word{i}" for i in range(4000))
    rows["transcripts"] = [
        yt_transcript("youtube:vid1", [seg(0.1, 2.4, long_speech), seg(3.0, 4.0, "short and sweet")])]
    result = run_video(tmp_path, max_tokens=1500)(**rows)
    recs = by_id(result)
    beh, con = recs["youtube:vid1:behavior"], recs["youtube:vid1:content"]
    assert result.counters["budget_transcript_shortened"] == 1
    assert "budget_ocr_dropped" not in result.counters  # the first step was enough
    assert _human_tokens(beh) <= 1500 and estimate_tokens(con["conversations"][1]["value"]) <= 1500
    scene1 = next(line for line in beh["conversations"][0]["value"].splitlines() if line.startswith("Scene 1 "))
    kept = scene1.split('says: "')[1].split('…"')[0].split()
    assert 8 <= len(kept) < 4000 and kept == [f"word{i}" for i in range(len(kept))]  # the beginning, in order
    assert 'The audio says: "short and sweet".' in beh["conversations"][0]["value"]  # short speech is not cut
    assert 'On-screen text: "SALE 50% off"' in beh["conversations"][0]["value"]
    assert con["conversations"][1]["value"] in beh["conversations"][0]["value"]  # one text for the pair
    # the largest cap that fits: one more word per scene would not fit
    assert _human_tokens(beh) + estimate_tokens(f" word{len(kept)}") > 1500


def test_many_scenes_lose_ocr_keywords_then_tail_details_then_collapse(tmp_path):
    uid = "youtube:long"
    spans = [(i * 2.0, i * 2.0 + 2.0) for i in range(60)]
    caption = "A person stands in a bright kitchen next to a table with fruit and talks to the camera."
    rows = {
        "items_clean": [yt_item(uid)], "media": [yt_media(uid, duration_s=120.0)], "scenes": yt_scenes(uid, spans),
        "captions": [yt_caption(uid, k, caption, ["person", "kitchen", "fruit"]) for k in range(60)],
        "attributes": [yt_attrs(uid, k, ocr_text="Subscribe now") for k in range(60)],
        "comments_clean": [yt_comment(uid, "c", 1, "hi")],
    }
    result = run_video(tmp_path, max_tokens=1500)(**rows)
    counters = result.counters
    assert counters["budget_ocr_dropped"] == 1 and counters["budget_keywords_dropped"] == 1
    assert counters["budget_scene_details_dropped"] == 1 and "budget_scenes_collapsed" not in counters
    assert "budget_transcript_shortened" not in counters  # no speech to cut
    beh = by_id(result)[f"{uid}:behavior"]
    human = beh["conversations"][0]["value"]
    assert _human_tokens(beh) <= 1500
    assert "On-screen text" not in human and "Keywords" not in human
    assert human.split("\n")[6].startswith("Scene 1 (0:00-0:02): Caption: A person stands")  # head scenes keep details
    assert "\nScene 60 (1:58-2:00).\n" in human  # tail scenes keep their timing line
    assert "A landscape video of 1280x720 pixels, 2 minutes long, in 60 scenes" in human  # the header is never cut
    detailed = sum(1 for line in human.splitlines() if line.startswith("Scene ") and "Caption" in line)
    assert 0 < detailed < 60 and validate_record(beh) == []

    # hundreds of scenes: even timing lines do not fit, the tail is folded into one line
    spans = [(i * 1.0, i * 1.0 + 1.0) for i in range(400)]
    rows.update(scenes=yt_scenes(uid, spans), media=[yt_media(uid, duration_s=400.0)], captions=[], attributes=[])
    result = run_video(tmp_path, max_tokens=1500)(**rows)
    assert result.counters["budget_scenes_collapsed"] == 1
    human = by_id(result)[f"{uid}:behavior"]["conversations"][0]["value"]
    assert estimate_tokens(human) <= 1500 and "Scene 1 (0:00-0:01)." in human
    folded = [line for line in human.splitlines() if line.endswith("are not described.")]
    assert len(folded) == 1 and folded[0].startswith("Scenes ") and "-400 (" in folded[0] and "-6:40)" in folded[0]


def test_over_budget_drops_the_pair(tmp_path):
    result = run_video(tmp_path, max_tokens=64)(**full_video())
    assert result.tables["instructions"].num_rows == 0
    assert [d["reason"] for d in result.dropped] == ["over_budget"] and "64" in result.dropped[0]["detail"]


def _word_tokenizer(folder: Path, words: list[str]) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(dict.fromkeys(words))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(folder)
    return folder


def test_configured_tokenizer_counts_exactly(tmp_path):
    folder = _word_tokenizer(tmp_path / "tok", ["Scene", "the"])
    # whitespace words are tokens: speech of 300 words is cut to fit 250 tokens per turn exactly
    rows = full_video()
    rows["transcripts"] = [yt_transcript("youtube:vid1", [seg(0.1, 2.4, " ".join(f"w{i}" for i in range(300)))])]
    result = run_video(tmp_path, max_tokens=250, tokenizer=str(folder))(**rows)
    assert result.dropped == [] and result.counters["budget_transcript_shortened"] == 1
    assert "budget_ocr_dropped" not in result.counters
    recs = by_id(result)
    worst = max(len(recs["youtube:vid1:behavior"]["conversations"][0]["value"].split()),
                len(recs["youtube:vid1:content"]["conversations"][1]["value"].split()))
    assert worst == 250  # exactly full: the largest word cap that fits
    stage = InstructStage(InstructStage.Config(tokenizer=str(folder)), tmp_path)
    stage.setup()
    assert "tokenizer:" in stage.describe()
    with pytest.raises(ConfigError, match="no-such-tokenizer"):
        InstructStage(InstructStage.Config(tokenizer=str(tmp_path / "no-such-tokenizer")), tmp_path).setup()


# ---------------------------------------------------------------- images, templates, validation


def test_image_caption_comes_from_the_captions_table(tmp_path):
    uid = "reddit:img"
    rows = {
        "items_clean": [{"uid": uid, "platform": "reddit", "item_id": "img", "source": "api", "title": "A photo",
                         "community": "pics", "collected_at": T0, "media_kind": "image", "score": 10,
                         "upvote_ratio": 0.9, "num_comments": 2}],
        "media": [{"uid": uid, "index": 0, "url": "https://i.example/img.jpg", "status": "ok", "path": "media/img.jpg",
                   "mime": "image/jpeg", "width": 800, "height": 600}],
        "attributes": [{"uid": uid, "media_index": 0, "scene": None, "tone": "cool", "caption": None,
                        "keywords": None}],
        "captions": [yt_caption(uid, None, "A red bus on a bridge.", ["bus", "bridge"]),
                     yt_caption(uid, None, "Another image's caption.", ["other"], index=1)],
        "comments_clean": [{"uid": uid, "platform": "reddit", "comment_id": "c", "depth": 0, "text": "nice",
                            "score": 3, "collected_at": T0}],
    }
    result = run_video(tmp_path)(**rows)
    content = by_id(result)[f"{uid}:content"]["conversations"][1]["value"]
    assert "Caption: A red bus on a bridge. Keywords: bus, bridge." in content and "Another" not in content
    assert result.counters["image_captions_used"] == 1
    rows["captions"] = []
    content = by_id(run_video(tmp_path)(**rows))[f"{uid}:content"]["conversations"][1]["value"]
    assert "Caption" not in content


def test_video_templates_are_checked_at_setup(tmp_path):
    beh = load_template("youtube_video_behavior")
    assert (beh.task, beh.platform, beh.media_kind) == ("behavior", "youtube", "video")
    with pytest.raises(ConfigError, match="media_kind"):
        InstructStage(InstructStage.Config(video_behavior_template="reddit_image_behavior"), tmp_path).setup()
    leaky = tmp_path / "leaky.yaml"
    leaky.write_text("name: leaky\nversion: 1\ntask: content\nplatform: youtube\nmedia_kind: video\nturns:\n"
                     "  - {from: human, value: \"<image>\\n{title}\"}\n  - {from: gpt, value: \"{views} views\"}\n")
    with pytest.raises(ConfigError, match=r"\{views\}"):
        InstructStage(InstructStage.Config(video_content_template=str(leaky)), tmp_path).setup()


def test_validate_catches_broken_video_targets(tmp_path):
    rec = by_id(run_video(tmp_path)(**full_video()))["youtube:vid1:behavior"]
    assert validate_record(rec) == []
    t = rec["targets"]
    cases = {
        "like_ratio": {**t, "like_ratio": 0.5},
        "decreasing": {**t, "most_replayed_scenes": [0, 1, 2]},
        "leave out": {**t, "most_replayed_scenes": [1, 2]},
        "distinct": {**t, "most_replayed_scenes": [1, 1]},
        "outside 0..1": {**t, "scene_replay": [1.5, 0.2, 0.1], "most_replayed_scenes": [0, 1, 2]},
        "without view_count": {**t, "view_count": None},
        "without scene_replay": {**t, "scene_replay": None},
        "out of range": {**t, "like_ratio": None, "like_count": -1},
    }
    for message, targets in cases.items():
        problems = validate_record({**rec, "targets": targets})
        assert any(message in p for p in problems), (message, problems)
    assert any("expected one" in p for p in validate_record({**rec, "media": ["a.npy", "b.npy"]}))
    image = {**rec, "media_kind": "image"}
    assert any("scene replay" in p for p in validate_record(image))
    # a video record of any source may state a score (an r/videos post) but must state something
    assert validate_record({**rec, "targets": {**t, "score": 3}}) == []
    empty = {f: None for f in t}
    assert any("states no behavior" in p for p in validate_record({**rec, "targets": empty, "behavior": None}))


# ---------------------------------------------------------------- through the runner


def test_instruct_stage_through_the_runner_mixes_images_and_videos(tmp_path):
    """Shards on disk, the runner, stats.json: missing secondary inputs (frames) are empty tables."""
    run_dir = tmp_path / "run"
    rows = full_video()
    long_speech = " ".join(f"talk{i}" for i in range(3000))
    rows["transcripts"] = [yt_transcript("youtube:vid1", [seg(0.1, 2.4, long_speech)])]
    rows["items_clean"].append({"uid": "reddit:img", "platform": "reddit", "item_id": "img", "source": "api",
                                "title": "A photo", "community": "pics", "collected_at": T0, "media_kind": "image",
                                "score": 10, "upvote_ratio": 0.9, "num_comments": 2})
    rows["media"].append({"uid": "reddit:img", "index": 0, "url": "https://i.example/img.jpg", "status": "ok",
                          "path": "media/img.jpg", "mime": "image/jpeg", "width": 800, "height": 600})
    rows["attributes"].append({"uid": "reddit:img", "media_index": 0, "scene": None, "tone": "cool"})
    rows["comments_clean"].append({"uid": "reddit:img", "platform": "reddit", "comment_id": "c", "depth": 0,
                                   "text": "nice", "score": 3, "collected_at": T0})
    for dataset, schema in InstructStage.inputs.items():
        if dataset in rows:  # frames and videos are not written: the runner reads them as empty
            tables.write_rows(run_dir / dataset / "part-00000.parquet", rows[dataset], schema)
    pipe = tmp_path / "p.yaml"
    pipe.write_text(yaml.safe_dump({"name": "video-instruct", "stages": [{"stage": "instruct"}]}))
    report = run_pipeline(pipe, RunOptions(out=run_dir, workers=1, progress=False))
    assert not report.failed
    out = tables.read_dataset(run_dir / "instructions", "instructions").to_pylist()
    assert sorted(r["id"] for r in out) == ["reddit:img:behavior", "reddit:img:content",
                                            "youtube:vid1:behavior", "youtube:vid1:content"]
    assert all(validate_record(r) == [] for r in out)
    stats = json.loads((run_dir / "stats.json").read_text())["stages"]["instruct"]
    assert stats["counters"]["budget_transcript_shortened"] == 1
    assert stats["counters"]["video_media_file"] == 1 and stats["out"]["instructions"] == 4


# ---------------------------------------------------------------- Reddit videos and any source


def test_reddit_video_post_carries_reddit_behavior_and_the_linked_videos_replay(tmp_path):
    """An r/videos post linking a YouTube video: Reddit's score, ratio and comments; the video's own
    counts and most-replayed graph from its ``videos`` row (what the YouTube link step writes)."""
    uid = "reddit:rv1"
    rows = full_video(uid, platform="reddit", community="videos", score=4321, upvote_ratio=0.97, num_comments=88,
                      view_count=None, like_count=None, comment_count=None, subscriber_count=None, heatmap=None)
    rows["comments_clean"] = [yt_comment(uid, "a", None, "best thing today", platform="reddit", score=12),
                              yt_comment(uid, "b", None, "the ending", platform="reddit", score=40)]
    rows["videos"] = [{"uid": uid, "file_status": "ok", "duration_s": 10.0, "view_count": 150000,
                       "like_count": 3000, "heatmap": bins(HEATMAP)}]
    result = run_video(tmp_path)(**rows)
    assert result.dropped == [] and result.errors == []
    recs = by_id(result)
    beh = recs[f"{uid}:behavior"]
    assert beh["template"] == "reddit_video_behavior" and recs[f"{uid}:content"]["template"] == "reddit_video_content"
    human, answer = (t["value"] for t in beh["conversations"])
    assert human.startswith('<image>\nThis video was posted on the subreddit r/videos with the title')
    assert "Scene 1 (0:00-0:02)" in human
    assert answer.split("\n")[:5] == ["Upvotes: 4321", "Upvote ratio: 97%", "Number of comments: 88",
                                      "Views of the video: 150000", "Likes of the video: 3000"]
    assert "Replay value per scene: Scene 1: 0.32, Scene 2: 0.37, Scene 3: 0.31" in answer
    assert answer.endswith("Top comments, ranked by score:\n1. the ending\n2. best thing today")
    t = beh["targets"]
    assert t["score"] == 4321 and t["view_count"] == 150000 and t["like_ratio"] == pytest.approx(0.02)
    assert t["scene_replay"] == approx([0.32, 1.3 / 3.5, 0.3125]) and t["most_replayed_scenes"][0] == 1
    assert t["comment_scores"] == [40, 12]


def test_any_source_video_says_its_named_values_and_hidden_likes_fall_back(tmp_path):
    """A video from a folder with a sidecar of likes (no heatmap, no comments), and a YouTube video
    whose likes are hidden: both get generic records instead of being dropped."""
    local = full_video("local:clips/cat.mp4", platform="local", community=None, title=None, view_count=None,
                       like_count=120, comment_count=None, subscriber_count=None, heatmap=None)
    local["comments_clean"] = []
    hidden = full_video("youtube:hid", like_count=None)
    rows = {k: local.get(k, []) + hidden.get(k, []) for k in set(local) | set(hidden)}
    rows["behavior"] = [{"uid": "local:clips/cat.mp4", "name": "likes", "value": 120.0, "kind": "count",
                         "collected_at": datetime(2026, 1, 1, tzinfo=timezone.utc)}]
    result = run_video(tmp_path, top_k_comments=2)(**rows)
    assert result.dropped == [] and result.errors == []
    recs = by_id(result)
    cat = recs["local:clips/cat.mp4:behavior"]
    assert cat["template"] == "generic_video_behavior"
    human, answer = (t["value"] for t in cat["conversations"])
    assert human.startswith("<image>\nThis video was shared on a local collection.\nScene-by-scene description")
    assert human.endswith("How did its audience react to it? Give the likes.")
    assert answer == "Likes: 120"
    assert cat["behavior"] == [{"name": "likes", "kind": "count", "value": 120.0, "scale_min": None,
                                "scale_max": None}]
    assert recs["local:clips/cat.mp4:content"]["template"] == "generic_video_content"
    yt = recs["youtube:hid:behavior"]
    assert yt["template"] == "generic_video_behavior"
    human, answer = (t["value"] for t in yt["conversations"])
    assert "This video was shared on YouTube.\nIt was posted in Some Channel." in human
    assert "Give the views, the number of comments, the replay value of each scene and the top comments." in human
    assert answer.startswith("Views: 10000\nNumber of comments: 12\nReplay value per scene: Scene 1: 0.32")
    assert answer.endswith("Top comments:\n1. fifty likes\n2. seven likes")
    assert yt["targets"]["like_count"] is None and yt["targets"]["view_count"] == 10000
    assert result.counters["generic_records"] == 2


def cbc_like(uid: str = "youtube:cbc1") -> dict[str, list[dict[str, Any]]]:
    """A video as cbc.read writes one from LCBM's corpus: counts, replay graph, transcript, per-scene
    BLIP-2 captions and on-screen text; no file fetched, no scenes rows, no comments."""
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return {
        "items_clean": [yt_item(uid, community="Acme Shoes", title="Run further", view_count=50000, like_count=1000,
                                comment_count=None, subscriber_count=120000)],
        "videos": [{"uid": uid, "file_status": "skipped", "file_reason": "not_fetched", "duration_s": 31.0,
                    "channel_name": "Acme Shoes"}],
        "transcripts": [{**yt_transcript(uid, [seg(0.5, 3.0, "Meet the new runner"), seg(20.0, 24.0, "buy now")]),
                         "backend": "cbc", "model": "cbc:asr_raw"}],
        "captions": [{**yt_caption(uid, 0, "a woman running on a beach", ["woman", "running"]), "model": "blip2 (CBC)"},
                     {**yt_caption(uid, 1, "a close up of a shoe", ["shoe"]), "model": "blip2 (CBC)"}],
        "attributes": [{"uid": uid, "media_index": 0, "scene": 1, "ocr_text": "NEW  RUNNER 2"}],
        "behavior": [{"uid": uid, "name": "likes", "value": 1000.0, "kind": "count", "collected_at": t0},
                     {"uid": uid, "name": "views", "value": 50000.0, "kind": "count", "collected_at": t0}],
    }


def test_a_video_known_by_its_annotations_alone_gets_text_only_records(tmp_path):
    result = run_video(tmp_path)(**cbc_like())
    assert result.dropped == [] and result.errors == []
    recs = by_id(result)
    beh, con = recs["youtube:cbc1:behavior"], recs["youtube:cbc1:content"]
    assert beh["template"] == "video_annotations_behavior" and con["template"] == "video_annotations_content"
    assert beh["media"] == [] and beh["media_kind"] == "video"
    assert "<image>" not in str(beh["conversations"]) + str(con["conversations"])
    human, answer = (t["value"] for t in beh["conversations"])
    assert "This video was shared on YouTube.\nIt was posted in Acme Shoes.\nIts title is \"Run further\"." in human
    assert ('A video, 31 seconds long, in 2 scenes, at a slow pace of 1.9 cuts per minute. '
            'The audio says: "Meet the new runner buy now".\n'
            "Scene 1: Caption: a woman running on a beach. Keywords: woman, running.\n"
            'Scene 2: Caption: a close up of a shoe. Keywords: shoe. On-screen text: "NEW RUNNER 2".') in human
    assert human.endswith("Give the likes, the views and the like ratio.")
    assert answer == "Likes: 1000\nViews: 50000\nLike ratio: 2.0%"
    assert [v["name"] for v in beh["behavior"]] == ["likes", "views", "like_ratio"]
    assert beh["targets"]["like_ratio"] == pytest.approx(0.02) and beh["targets"]["scene_replay"] is None
    assert con["conversations"][1]["value"].startswith("A video, 31 seconds long, in 2 scenes")
    assert con["targets"] is None and con["behavior"] is None
    assert result.counters["video_annotation_records"] == 1
    assert result.counters["video_annotation_replay_not_on_scenes"] == 1  # the graph cannot go on untimed scenes
    for rec in recs.values():
        assert validate_record(rec) == []
    # switched off, or nothing annotated: no file is no record, as before
    off = run_video(tmp_path, annotation_records=False)(**cbc_like())
    assert [d["reason"] for d in off.dropped] == ["no_media"]
    bare = {**cbc_like(), "captions": [], "attributes": []}
    assert [d["reason"] for d in run_video(tmp_path)(**bare).dropped] == ["no_media"]
