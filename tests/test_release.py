"""`blift release` (minimal): HF layout, card front matter, load_dataset self-check, atomic replace."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from blift import schemas, tables
from blift.ids import split_of
from blift.release.writer import ReleaseCheckError, ReleaseError, check_release, release
from blift.stages.instruct.scene_behavior import scene_behavior_rows
from release_runs import T0, build_run, jpeg_for, uids_covering_all_splits

SHARD_NAME = re.compile(r"^(train|validation|test)-(\d{5})-of-(\d{5})\.parquet$")


def front_matter(readme: Path) -> dict[str, Any]:
    text = readme.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def load(out: Path, config: str) -> datasets.DatasetDict:
    return datasets.load_dataset(str(out), name=config, cache_dir=str(out.parent / "hf-cache"))


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    base = tmp_path_factory.mktemp("rel")
    uids = uids_covering_all_splits({"train": 10, "validation": 2, "test": 2})
    written = build_run(base / "run", uids)
    report = release(base / "run", base / "out")
    return base / "out", written, report


@pytest.mark.slow
def test_layout_names_and_card(released):
    out, written, report = released
    expected = Counter(r["split"] for r in written["instructions"])
    assert set(expected) == {"train", "validation", "test"}
    for config in ("instructions", "items", "comments"):
        names = sorted(p.name for p in (out / "data" / config).iterdir())
        assert names and all(SHARD_NAME.match(n) for n in names), names
        assert {SHARD_NAME.match(n).group(1) for n in names} == {"train", "validation", "test"}
    assert sorted(p.name for p in (out / "data" / "instructions").iterdir()) == [
        "test-00000-of-00001.parquet", "train-00000-of-00001.parquet", "validation-00000-of-00001.parquet"]
    meta = front_matter(out / "README.md")
    assert meta["task_categories"] == ["image-text-to-text"] and meta["license"] and meta["pretty_name"]
    cfgs = {c["config_name"]: c for c in meta["configs"]}
    assert set(cfgs) == {"instructions", "items", "comments"}
    assert cfgs["instructions"].get("default") is True and "default" not in cfgs["items"]
    assert {"split": "train", "path": "data/instructions/train-*"} in cfgs["instructions"]["data_files"]
    assert report.rows["instructions"] == dict(expected)
    assert report.files["instructions"]["train"] == ["data/instructions/train-00000-of-00001.parquet"]
    body = (out / "README.md").read_text()
    assert "load_dataset" in body and f"{expected['train']:,}" in body
    # nothing but the release is left next to it (no temp, old or check-cache folders)
    assert not [p.name for p in out.parent.iterdir() if p.name not in ("out", "run", "hf-cache")]


def test_load_dataset_reads_every_config_and_nested_columns_round_trip(released):
    out, written, report = released
    assert report.check is not None and report.check.ok
    inst = load(out, "instructions")
    assert {s: d.num_rows for s, d in inst.items()} == dict(Counter(r["split"] for r in written["instructions"]))
    assert report.check.rows["instructions"] == {s: d.num_rows for s, d in inst.items()}
    source = {r["id"]: r for r in written["instructions"]}
    seen = 0
    for split, ds in inst.items():
        for rec in ds:
            src = source[rec["id"]]
            assert rec["split"] == split
            assert rec["conversations"] == src["conversations"]
            assert rec["targets"] == src["targets"]
            assert rec["media"] == src["media"]
            assert (out / rec["media"][0]).read_bytes() == (out.parent / "run" / src["media"][0]).read_bytes()
            seen += 1
    assert seen == len(written["instructions"])
    assert any(r["targets"] is None for r in written["instructions"])  # content records were in the mix
    items = load(out, "items")
    assert sum(d.num_rows for d in items.values()) == len(written["items"])
    assert "raw" not in items["train"].column_names  # dropped by default
    for split, ds in items.items():
        assert all(split_of(u) == split for u in ds["uid"])
    comments = load(out, "comments")
    assert sum(d.num_rows for d in comments.values()) == len(written["comments"])
    uid_split = {r["uid"]: r["split"] for r in written["instructions"]}
    for split, ds in comments.items():  # a comment shares its item's split
        assert {uid_split[u] for u in ds["uid"]} == {split}


def test_tiny_shards_are_numbered_and_raw_round_trips(tmp_path):
    uids = uids_covering_all_splits({"train": 12, "validation": 0, "test": 0})
    written = build_run(tmp_path / "run", uids, shards=3)
    report = release(tmp_path / "run", tmp_path / "out", max_shard_bytes=1000, drop_raw=False,
                     configs={"instructions": "instructions", "items": "items_clean"}, check=False)
    for config, total in (("instructions", len(written["instructions"])), ("items", len(written["items"]))):
        files = sorted(p.name for p in (tmp_path / "out" / "data" / config).iterdir())
        assert len(files) > 2, files
        n = len(files)
        assert files == [f"train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
        assert sum(pq.read_metadata(tmp_path / "out" / "data" / config / f).num_rows for f in files) == total
        assert report.rows[config] == {"train": total}
    # the order of the rows is the run's order, across shards
    ids = load(tmp_path / "out", "instructions")["train"]["id"]
    assert ids == [r["id"] for r in written["instructions"]]
    items = load(tmp_path / "out", "items")["train"]
    assert items["raw"] == [r["raw"] for r in written["items"]]


def test_release_replaces_an_existing_one_atomically(tmp_path):
    uids = uids_covering_all_splits({"train": 4, "validation": 0, "test": 0})
    build_run(tmp_path / "run", uids)
    out = tmp_path / "out"
    release(tmp_path / "run", out, check=False)
    stale = out / "data" / "instructions" / "validation-00000-of-00001.parquet"
    stale.write_bytes(b"left over from an older release")
    release(tmp_path / "run", out, configs={"instructions": "instructions"}, check=False)
    assert not stale.exists() and not (out / "data" / "items").exists()
    assert [c["config_name"] for c in front_matter(out / "README.md")["configs"]] == ["instructions"]
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    # a release that fails half way leaves the old one untouched and no debris
    (tmp_path / "run" / "media" / "ab" / f"{uids[-1].split(':')[1]}.jpg").unlink()
    with pytest.raises(ReleaseError, match="media file .* not found"):
        release(tmp_path / "run", out, check=False)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run"]


def test_check_names_config_and_split_on_a_mismatch(released):
    out, written, report = released
    wrong = {k: dict(v) for k, v in report.rows.items()}
    wrong["items"]["test"] += 1
    with pytest.raises(ReleaseCheckError, match=r"config 'items', split 'test'"):
        check_release(out, wrong, streaming=False)  # streamed counts: test_streaming_counts_equal_what_was_written


@pytest.mark.slow
def test_items_and_comments_follow_the_instruction_splits(tmp_path):
    """With non-default split fractions in the instruct stage, items/comments still match their records."""
    uids = [f"reddit:f{i}" for i in range(24)]
    written = build_run(tmp_path / "run", uids, split_validation=0.3, split_test=0.3)
    uid_split = {r["uid"]: r["split"] for r in written["instructions"]}
    assert any(uid_split[u] != split_of(u) for u in uids)  # the default fractions would disagree
    report = release(tmp_path / "run", tmp_path / "out", check=False)
    for config in ("items", "comments"):
        for split, ds in load(tmp_path / "out", config).items():
            assert {uid_split[u] for u in ds["uid"]} == {split}, config
    assert sum(report.rows["comments"].values()) == len(written["comments"])


def test_an_empty_config_is_left_out(tmp_path):
    uids = uids_covering_all_splits({"train": 2, "validation": 0, "test": 0})
    build_run(tmp_path / "run", uids)
    tables.write_shard(tmp_path / "run" / "none" / "part-00000.parquet", schemas.get("comments").empty(), "comments")
    report = release(tmp_path / "run", tmp_path / "out", configs={"instructions": "instructions", "nothing": "none"},
                     check=False)
    assert "nothing" in report.skipped and "nothing" not in report.rows
    assert not (tmp_path / "out" / "data" / "nothing").exists()
    assert [c["config_name"] for c in front_matter(tmp_path / "out" / "README.md")["configs"]] == ["instructions"]
    with pytest.raises(ReleaseError, match="nothing to release"):
        release(tmp_path / "run", tmp_path / "out2", configs={"nothing": "none"}, check=False)


def test_refusals(tmp_path):
    uids = uids_covering_all_splits({"train": 2, "validation": 0, "test": 0})
    build_run(tmp_path / "run", uids)
    with pytest.raises(ReleaseError, match="comments_nope"):
        release(tmp_path / "run", tmp_path / "out", configs={"comments": "comments_nope"}, check=False)
    with pytest.raises(ReleaseError, match="run folder"):
        release(tmp_path / "run", tmp_path / "run", check=False)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(ReleaseError, match="not a release"):
        release(tmp_path / "run", tmp_path / "precious", check=False)
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_a_post_collected_by_two_requests_is_released_once(tmp_path):
    """The same post listed by two requests (top and hot) lands in two shards; the release keeps
    the first and reports how many repeats it left out."""
    uids = uids_covering_all_splits({"train": 6, "validation": 0, "test": 0})
    build_run(tmp_path / "run", uids, shards=2)
    run = tmp_path / "run"
    for dataset, schema in (("instructions", "instructions"), ("items_clean", "items"), ("comments_clean", "comments")):
        first = tables.read_shard(run / dataset / "part-00000.parquet", schema)
        tables.write_shard(run / dataset / "part-00002.parquet", first, schema)  # a repeat of shard 0
    report = release(run, tmp_path / "out", check=False)
    n_inst = sum(report.rows["instructions"].values())
    assert n_inst == len(uids) * 2  # behavior + content per post, each once
    ids = load(tmp_path / "out", "instructions")["train"]["id"]
    assert len(ids) == len(set(ids))
    assert report.duplicates["instructions"] == tables.read_shard(run / "instructions" / "part-00000.parquet").num_rows
    assert report.duplicates["items"] == len(uids) - len(uids) // 2


# --------------------------------------------------------------------------- videos, media, release.json

from blift.release import features as release_features  # noqa: E402
from blift.release.manifest import languages_from_stats, read_manifest  # noqa: E402
from blift.release.writer import (  # noqa: E402
    DEFAULT_CONFIGS,
    MEDIA_ROW_GROUP_ROWS,
    pipeline_config_hash,
    write_split_shards,
)

HEATMAP = [{"start_s": 0.0, "end_s": 2.0, "value": 0.2}, {"start_s": 2.0, "end_s": 4.0, "value": 0.6},
           {"start_s": 4.0, "end_s": 8.0, "value": 1.0}, {"start_s": 8.0, "end_s": 12.0, "value": 0.0}]
SCENES = [(0.0, 4.0), (4.0, 8.0), (8.0, 12.0)]
# by hand from HEATMAP: scene 0 = (2*0.2 + 2*0.6) / 4; scene 1 lies in the 1.0 bin; scene 2 in the 0.0 bin
EXPECTED_REPLAY = [(0.4, 0.6), (1.0, 1.0), (0.0, 0.0)]
WORDS = [("hello", 1.0), ("there", 3.0), ("middle", 5.0), ("end", 9.5)]
EXPECTED_TRANSCRIPT = ["hello there", "middle", "end"]


def add_videos(run: Path, n: int, *, side: int = 8, orphan: bool = True, sides: dict[int, int] | None = None
               ) -> dict[str, Any]:
    """YouTube items with scenes, transcripts, frames, video files and video instruction records.

    Video 0 has a heatmap and speech; the others have neither (replay and transcript null). With
    ``orphan``, scenes of an item that ``clean`` dropped (not in items_clean) are in the run too."""
    rng = np.random.default_rng(7)
    items, videos, scenes, transcripts, instructions, frames = [], [], [], [], [], {}
    for i in range(n):
        uid = f"youtube:v{i}"
        items.append({"uid": uid, "platform": "youtube", "item_id": f"v{i}", "source": "api", "title": f"Video {i}",
                      "community": "chan", "created_at": datetime(2024, 1, 1 + i, tzinfo=timezone.utc),
                      "collected_at": T0, "media_kind": "video", "view_count": 1000 + i, "like_count": 10 + i,
                      "heatmap": HEATMAP if i == 0 else None})
        mp4 = f"media_files/vv/v{i}.mp4"
        (run / mp4).parent.mkdir(parents=True, exist_ok=True)
        (run / mp4).write_bytes(b"\x00\x00\x00\x18ftypmp42" + uid.encode())
        videos.append({"uid": uid, "file_status": "ok", "file_path": mp4, "duration_s": 12.0})
        s = (sides or {}).get(i, side)
        frames[uid] = rng.integers(0, 255, (2 + i, 3, s, s), dtype=np.uint8)
        npy = f"frames/vv/v{i}.npy"
        (run / npy).parent.mkdir(parents=True, exist_ok=True)
        np.save(run / npy, frames[uid])
        for k, (start, end) in enumerate(SCENES):
            key = f"keyframes/vv/v{i}-s{k}.jpg"
            (run / key).parent.mkdir(parents=True, exist_ok=True)
            (run / key).write_bytes(jpeg_for(f"{uid}#{k}"))
            scenes.append({"uid": uid, "media_index": 0, "scene": k, "start_s": start, "end_s": end,
                           "start_frame": int(start * 25), "end_frame": int(end * 25), "keyframe_frame": None,
                           "keyframe_path": key, "detector": "content:27.0"})
        if i == 0:
            transcripts.append({"uid": uid, "media_index": 0, "status": "ok", "backend": "faster-whisper",
                                "model": "tiny.en", "text": " ".join(w for w, _ in WORDS), "segments": [
                                    {"start_s": 0.0, "end_s": 10.0, "text": " ".join(w for w, _ in WORDS),
                                     "words": [{"start_s": t, "end_s": t + 0.4, "word": w, "probability": 0.9}
                                               for w, t in WORDS]}]})
        else:
            transcripts.append({"uid": uid, "media_index": 0, "status": "no_speech", "backend": "faster-whisper",
                                "model": "tiny.en"})
        for task in ("behavior", "content"):
            instructions.append({
                "id": f"{uid}:{task}", "uid": uid, "platform": "youtube", "task": task,
                "template": f"youtube_video_{task}", "template_version": 1, "media_kind": "video", "media": [npy],
                "conversations": [{"from": "human", "value": f"<image>\nWhat about video {i}?"},
                                  {"from": "gpt", "value": f"{1000 + i} views"}],
                "targets": {"view_count": 1000 + i} if task == "behavior" else None,
                "split": split_of(uid), "collected_at": T0})
    if orphan:  # clean dropped this item: its scenes must not come back through the scenes config
        scenes.append({"uid": "youtube:gone", "media_index": 0, "scene": 0, "start_s": 0.0, "end_s": 1.0,
                       "start_frame": 0, "end_frame": 25, "detector": "content:27.0"})
    tables.write_rows(run / "items_clean" / "part-video.parquet", items, "items")
    tables.write_rows(run / "videos" / "part-video.parquet", videos, "videos")
    tables.write_rows(run / "scenes" / "part-video.parquet", scenes, "scenes")
    tables.write_rows(run / "transcripts" / "part-video.parquet", transcripts, "transcripts")
    tables.write_rows(run / "instructions" / "part-video.parquet", instructions, "instructions")
    # what the instruct stage writes beside its records, for the items it reads (youtube:gone is not one)
    behavior = [row for i in items for row in scene_behavior_rows(
        i["uid"], i["heatmap"], [s for s in scenes if s["uid"] == i["uid"]],
        [t for t in transcripts if t["uid"] == i["uid"]])]
    tables.write_rows(run / "scene_behavior" / "part-video.parquet", behavior, "scene_behavior")
    return {"items": items, "instructions": instructions, "frames": frames, "scenes": scenes}


def write_stats(run: Path, instruct_out: int, hashes: dict[str, str] | None = None) -> None:
    """stats.json and shard manifests as the runner leaves them (the fields the release reads)."""
    stats = {"pipeline": "test-pipeline", "blift_version": "0.1.0", "stages": {
        "instruct": {"out": {"instructions": instruct_out}, "dropped": {"no_media": 2}, "errors": {}}}}
    (run / "stats.json").write_text(json.dumps(stats))
    for stage, value in (hashes or {"clean": "c1", "instruct": "i1"}).items():
        folder = run / "_blift" / "manifests" / stage
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "shard0.json").write_text(json.dumps({"stage": stage, "config_hash": value, "shard": "shard0"}))


@pytest.fixture(scope="module")
def video_release(tmp_path_factory):
    """Images and videos, released with image bytes and frame arrays, fully checked."""
    base = tmp_path_factory.mktemp("vrel")
    uids = uids_covering_all_splits({"train": 6, "validation": 1, "test": 1})
    written = build_run(base / "run", uids)
    vids = add_videos(base / "run", 3)
    n_inst = len(written["instructions"]) + len(vids["instructions"])
    write_stats(base / "run", n_inst)
    report = release(base / "run", base / "out", images="bytes", videos="frames", takedown_contact="x@example.org")
    return base / "out", base / "run", written, vids, report


def _all_rows(out: Path, config: str) -> list[dict[str, Any]]:
    ds = load(out, config)
    return [r for split in ds for r in ds[split]]


@pytest.mark.slow
def test_every_config_loads_scenes_joined_with_replay_and_speech(video_release):
    out, run, written, vids, report = video_release
    assert set(report.rows) == {"instructions", "items", "comments", "scenes", "videos"}
    for config, splits in report.rows.items():
        ds = load(out, config)
        assert {s: d.num_rows for s, d in ds.items()} == splits, config
    scenes = _all_rows(out, "scenes")
    assert {r["uid"] for r in scenes} == {f"youtube:v{i}" for i in range(3)}  # youtube:gone left out
    assert report.not_released == {"scenes": 1}
    for r in scenes:
        if r["uid"] == "youtube:v0":
            mean, peak = EXPECTED_REPLAY[r["scene"]]
            assert r["replay_mean"] == pytest.approx(mean) and r["replay_peak"] == pytest.approx(peak)
            assert r["transcript"] == EXPECTED_TRANSCRIPT[r["scene"]]
        else:  # no heatmap, no speech
            assert r["replay_mean"] is None and r["replay_peak"] is None and r["transcript"] is None
        assert r["keyframe"].size == PIL.Image.open(
            run / f"keyframes/vv/{r['uid'].split(':')[1]}-s{r['scene']}.jpg").size
    uid_split = {r["uid"]: r["split"] for r in written["instructions"] + vids["instructions"]}
    for config in ("scenes", "videos"):  # same split as the item's records
        for split, ds in load(out, config).items():
            assert {uid_split[u] for u in ds["uid"]} == {split}, config
    videos = _all_rows(out, "videos")
    assert sorted(r["uid"] for r in videos) == [f"youtube:v{i}" for i in range(3)]
    for r in videos:  # the mp4 travels as a copied path
        assert (out / r["file_path"]).read_bytes() == (
            run / f"media_files/vv/{r['uid'].split(':')[1]}.mp4").read_bytes()
    # the added columns are documented where the card reads column docs
    for col in ("replay_mean", "replay_peak", "transcript", "keyframe"):
        assert release_features.column_doc("scenes", col)
    assert release_features.column_doc("scenes", "start_s") == schemas.get("scenes").column_doc("start_s")


def test_image_bytes_decode_to_pil_images_through_load_dataset(video_release):
    out, run, written, vids, report = video_release
    inst = load(out, "instructions")
    assert isinstance(inst["train"].features["image"], datasets.Image)
    source = {r["id"]: r for r in written["instructions"] + vids["instructions"]}
    n_images = 0
    for _split, ds in inst.items():
        for rec in ds:
            if rec["media_kind"] == "image":
                img = rec["image"]
                assert isinstance(img, PIL.Image.Image)
                want = PIL.Image.open(run / source[rec["id"]]["media"][0])
                assert img.size == want.size and np.array_equal(np.asarray(img), np.asarray(want))
                assert rec["media"] == ["media/" + source[rec["id"]]["media"][0].removeprefix("media/")]
                assert not (out / rec["media"][0]).exists()  # embedded, not copied
                n_images += 1
            else:
                assert rec["image"] is None
    assert n_images == len(written["instructions"]) == report.embedded_media["instructions.image"]
    for shard in (out / "data" / "instructions").glob("*.parquet"):
        meta = json.loads(pq.read_schema(shard).metadata[b"huggingface"])
        assert meta["info"]["features"]["image"] == {"_type": "Image"}


def test_video_frames_travel_as_uint8_arrays(video_release):
    out, run, written, vids, report = video_release
    inst = load(out, "instructions")
    assert inst["train"].features["video_frames"] == datasets.Array4D(shape=(None, 3, 8, 8), dtype="uint8")
    seen = 0
    for _split, ds in inst.items():
        for rec in ds:
            if rec["media_kind"] == "video":
                frames = np.asarray(rec["video_frames"], dtype=np.uint8)
                assert np.array_equal(frames, vids["frames"][rec["uid"]])
                assert not (out / rec["media"][0]).exists()
                seen += 1
    assert seen == len(vids["instructions"])


@pytest.mark.slow
def test_frames_of_two_sizes_are_refused_naming_the_record(tmp_path):
    build_run(tmp_path / "run", uids_covering_all_splits({"train": 1, "validation": 0, "test": 0}))
    add_videos(tmp_path / "run", 2, sides={1: 16})
    with pytest.raises(ReleaseError, match=r"youtube:v1:.*\(3, 16, 16\).*\(3, 8, 8\)"):
        release(tmp_path / "run", tmp_path / "out", videos="frames", check=False)
    release(tmp_path / "run", tmp_path / "out", videos="paths", check=False)  # paths take any size
    assert not (tmp_path / "out" / "data" / "instructions" / "video_frames").exists()


def test_streaming_counts_equal_what_was_written(video_release):
    out, run, written, vids, report = video_release
    assert report.check is not None and report.check.streaming_rows == report.rows
    for config, splits in report.rows.items():
        stream = datasets.load_dataset(str(out), name=config, streaming=True)
        assert {s: sum(1 for _ in d) for s, d in stream.items()} == splits, config


def test_release_json_says_what_the_release_holds(video_release):
    out, run, written, vids, report = video_release
    m = read_manifest(out)
    assert m.pipeline == "test-pipeline" and m.pipeline_config_hash == pipeline_config_hash(run)
    assert m.images == "bytes" and m.videos == "frames" and m.takedown_contact == "x@example.org"
    assert m.platforms == ["reddit", "youtube"]
    assert [n for n, c in m.configs.items() if c.default] == ["instructions"]
    for name, cfg in m.configs.items():
        assert {s: f.rows for s, f in cfg.splits.items()} == report.rows[name]
        for split, sf in cfg.splits.items():
            assert sf.files == sorted(p.relative_to(out).as_posix() for p in (out / "data" / name).glob(f"{split}-*"))
            assert sum(pq.read_metadata(out / f).num_rows for f in sf.files) == sf.rows
    assert m.configs["scenes"].schema_name == "scenes" and m.configs["items"].source == "items_clean"
    items = written["items"] + vids["items"]
    created = [i["created_at"] for i in items if i.get("created_at")]
    assert m.collection_window["created_at_min"] == min(created)
    assert m.collection_window["created_at_max"] == max(created)
    assert m.collection_window["collected_at_min"] == m.collection_window["collected_at_max"] == T0
    media = [p for p in (out / "media").rglob("*") if p.is_file()]
    assert m.media_files == len(media) == 3  # the mp4s: images and frames are embedded
    assert m.media_bytes == sum(p.stat().st_size for p in media)
    assert (out / "stats.json").read_bytes() == (run / "stats.json").read_bytes()


def test_pipeline_config_hash_follows_the_stage_configs(tmp_path):
    assert pipeline_config_hash(tmp_path) is None  # no manifests
    write_stats(tmp_path, 1, {"clean": "c1", "instruct": "i1"})
    first = pipeline_config_hash(tmp_path)
    assert first and pipeline_config_hash(tmp_path) == first
    write_stats(tmp_path, 1, {"clean": "c1", "instruct": "i2"})
    assert pipeline_config_hash(tmp_path) not in (None, first)


def _video_run(run: Path) -> None:
    build_run(run, uids_covering_all_splits({"train": 1, "validation": 0, "test": 0}))
    add_videos(run, 2)


def test_scenes_take_their_values_from_the_runs_scene_behavior_table(tmp_path):
    """The release joins what the instruct stage wrote; it does not compute replay or speech itself."""
    run = tmp_path / "run"
    _video_run(run)
    path = run / "scene_behavior" / "part-video.parquet"
    rows = tables.read_shard(path, "scene_behavior").to_pylist()
    for r in rows:
        r["replay_mean"], r["transcript"] = 0.25 + r["scene"], f"said in {r['uid']} scene {r['scene']}"
    tables.write_rows(path, rows, "scene_behavior")
    release(run, tmp_path / "out", check=False)
    scenes = pq.read_table(tmp_path / "out" / "data" / "scenes").to_pylist()
    assert len(scenes) == 6 and all(s["replay_mean"] == 0.25 + s["scene"] for s in scenes)
    assert all(s["transcript"] == f"said in {s['uid']} scene {s['scene']}" for s in scenes)


def test_a_run_whose_instruct_predates_scene_behavior_is_refused_with_the_command(tmp_path):
    run = tmp_path / "run"
    _video_run(run)
    shutil.rmtree(run / "scene_behavior")
    with pytest.raises(ReleaseError, match=r"scene_behavior: no shards.*`blift run PIPELINE --stage instruct`"):
        release(run, tmp_path / "out", check=False)
    assert not (tmp_path / "out").exists()
    # without scenes there is nothing to join: the same run releases without its scenes config
    report = release(run, tmp_path / "out", configs={k: v for k, v in DEFAULT_CONFIGS.items() if k != "scenes"},
                     check=False)
    assert "scenes" not in report.rows and report.rows["videos"]


def test_a_scene_missing_from_scene_behavior_is_refused_by_name(tmp_path):
    """Scenes written after instruct ran (a stale table) must not be released with null values."""
    run = tmp_path / "run"
    _video_run(run)
    path = run / "scene_behavior" / "part-video.parquet"
    rows = [r for r in tables.read_shard(path, "scene_behavior").to_pylist()
            if (r["uid"], r["scene"]) != ("youtube:v1", 2)]
    tables.write_rows(path, rows, "scene_behavior")
    with pytest.raises(ReleaseError, match=r"no row for scene 2 of youtube:v1#0.*--stage instruct"):
        release(run, tmp_path / "out", check=False)


def test_release_json_records_the_languages_the_run_kept(tmp_path):
    run = tmp_path / "run"
    build_run(run, uids_covering_all_splits({"train": 2, "validation": 0, "test": 0}))
    write_stats(run, 4)
    stats = json.loads((run / "stats.json").read_text())
    stats["stages"]["clean"] = {"out": {}, "dropped": {}, "errors": {}, "languages": {"kept": ["en", "de"]}}
    (run / "stats.json").write_text(json.dumps(stats))
    release(run, tmp_path / "out", check=False)
    langs = json.loads((tmp_path / "out" / "release.json").read_text())["languages"]
    assert langs == {"stage": "clean", "codes": ["en", "de"], "filtered": True, "counts": {}, "min_share": None}
    assert read_manifest(tmp_path / "out").languages.codes == ["en", "de"]


def test_languages_from_stats_observed_without_a_filter():
    observed = {"stages": {"clean": {"languages": {"observed": {"en": 80, "fr": 12, "de": 8}}}}}
    langs = languages_from_stats(observed)
    assert (langs.codes, langs.filtered, langs.counts, langs.min_share) == (
        ["en", "fr"], False, {"en": 80, "fr": 12, "de": 8}, 0.10)  # de: 8% < 10%
    assert languages_from_stats(None) is None
    assert languages_from_stats({"stages": {"clean": {"out": {}}}}) is None  # a run that predates the record


def _image_table(n: int, payload: int) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table({
        "id": [f"r{i}" for i in range(n)],
        "image": pa.array([{"bytes": rng.bytes(payload), "path": f"media/{i}.jpg"} for i in range(n)],
                          type=release_features.IMAGE_STRUCT),
    })


def test_write_split_shards_renumbers_and_removes_old_files(tmp_path):
    cfg = tmp_path / "data" / "instructions"
    table = _image_table(450, 2000)
    other = write_split_shards(table.slice(0, 10), cfg, "test", 10**9)
    first = write_split_shards(table, cfg, "train", 300_000)
    n = len(first)
    assert n > 2 and [p.name for p in first] == [f"train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    assert pa.concat_tables([pq.read_table(p) for p in first])["id"].to_pylist() == table["id"].to_pylist()
    # rewriting the split (a takedown) renumbers it and leaves no old file behind
    kept = table.filter(pa.array([i % 3 != 0 for i in range(table.num_rows)]))
    second = write_split_shards(kept, cfg, "train", 10**9)
    assert sorted(p.name for p in cfg.iterdir()) == ["test-00000-of-00001.parquet", "train-00000-of-00001.parquet"]
    assert [p.name for p in second] == ["train-00000-of-00001.parquet"] and other[0].is_file()
    back = pq.read_table(second[0])
    assert back["id"].to_pylist() == kept["id"].to_pylist()
    assert release_features.read_features(second[0])["image"] == datasets.Image()
    meta = pq.read_metadata(second[0])
    assert meta.num_row_groups >= 2 and all(
        meta.row_group(i).num_rows <= MEDIA_ROW_GROUP_ROWS for i in range(meta.num_row_groups))
    # a failed rewrite leaves the split as it was; an empty one removes it
    with pytest.raises(ReleaseError, match="max_shard_bytes"):
        write_split_shards(kept, cfg, "train", 0)
    assert pq.read_table(second[0])["id"].to_pylist() == kept["id"].to_pylist()
    assert write_split_shards(kept.slice(0, 0), cfg, "train", 10**9) == []
    assert sorted(p.name for p in cfg.iterdir()) == ["test-00000-of-00001.parquet"]


def test_a_stats_json_mismatch_is_reported_with_the_numbers(tmp_path):
    uids = uids_covering_all_splits({"train": 3, "validation": 0, "test": 0})
    written = build_run(tmp_path / "run", uids)
    n = len(written["instructions"])
    write_stats(tmp_path / "run", n + 3)
    with pytest.raises(ReleaseCheckError,
                       match=rf"wrote {n + 3} rows.*0 duplicate.*{n + 3} were expected, but {n} were released"):
        release(tmp_path / "run", tmp_path / "out", configs={"instructions": "instructions"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing written, no debris
    report = release(tmp_path / "run", tmp_path / "out", configs={"instructions": "instructions"}, check=False)
    assert report.stats is not None and report.stats.problems
    assert any("MISMATCH" in line and str(n + 3) in line for line in report.summary_lines())


@pytest.mark.slow
def test_stats_json_count_less_the_duplicates_left_out_matches(tmp_path):
    uids = uids_covering_all_splits({"train": 4, "validation": 0, "test": 0})
    build_run(tmp_path / "run", uids, shards=2)
    run = tmp_path / "run"
    repeat = tables.read_shard(run / "instructions" / "part-00000.parquet", "instructions")
    tables.write_shard(run / "instructions" / "part-00002.parquet", repeat, "instructions")
    total = sum(tables.read_shard(p).num_rows for p in tables.shard_paths(run / "instructions"))
    write_stats(run, total)  # the stage counted the repeats; the release leaves them out
    report = release(run, tmp_path / "out", configs={"instructions": "instructions"})
    assert report.duplicates["instructions"] == repeat.num_rows
    assert report.stats.expected == sum(report.rows["instructions"].values()) == total - repeat.num_rows
    assert "matches" in str(report.check)
