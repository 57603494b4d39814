"""blift.train.data (records -> Examples) and blift.train.mixing, on tiny releases made by `release`."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from pydantic import ValidationError

import tiny_llava
from blift import tables
from blift.release.writer import release
from blift.train.collator import VlmCollator
from blift.train.data import (
    DataSource,
    DataSourceError,
    RecordDataError,
    RecordDataset,
    even_indices,
    load_records,
    open_examples,
)
from blift.train.mixing import mix_counts, mix_indices

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
FRAMES = 6  # frame i of every .npy is filled with the value 10 * i (+ video number)


def _jpeg(colour: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    PIL.Image.new("RGB", size, colour).save(buf, format="PNG")  # lossless: pixels can be compared
    return buf.getvalue()


def _conv(question: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]


def _record(uid: str, task: str, kind: str, media: str, split: str) -> dict:
    return {"id": f"{uid}:{task}", "uid": uid, "platform": "reddit" if kind == "image" else "youtube",
            "task": task, "template": f"t_{kind}_{task}", "template_version": 1, "media_kind": kind,
            "media": [media], "conversations": _conv("describe the image", "a red car"),
            "targets": {"score": 12} if task == "behavior" else None, "split": split, "collected_at": T0}


def build_run(run: Path, mp4: Path | None = None) -> list[dict]:
    """A run folder with instruction records: 3 images, 2 .npy videos (+ one mp4) in train, 1 image in test."""
    rows = []
    for i in range(4):
        rel = f"media/im/p{i}.png"
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(_jpeg((40 * i, 100, 200), (10 + i, 12)))
        for task in ("behavior", "content"):
            rows.append(_record(f"reddit:p{i}", task, "image", rel, "test" if i == 3 else "train"))
    for v in range(2):
        rel = f"frames/vv/v{v}.npy"
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        frames = (np.zeros((FRAMES, 3, 8, 8), np.uint8)
                  + (10 * np.arange(FRAMES, dtype=np.uint8)[:, None, None, None]) + v)
        np.save(run / rel, frames)
        rows.append(_record(f"youtube:v{v}", "behavior", "video", rel, "train"))
    if mp4 is not None:
        rel = "media/vid/clip.mp4"
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(mp4.read_bytes())
        rows.append(_record("youtube:m0", "content", "video", rel, "train"))
    tables.write_rows(run / "instructions" / "part-00000.parquet", rows, "instructions")
    return rows


@pytest.fixture(scope="module")
def mp4(tmp_path_factory) -> Path:
    from video_factory import Segment, make_video, require_tools

    require_tools("ffmpeg")
    path = tmp_path_factory.mktemp("mp4") / "clip.mp4"
    make_video(path, [Segment("color=c=red", 10), Segment("color=c=blue", 10)], size=(32, 24))
    return path


@pytest.fixture(scope="module")
def releases(tmp_path_factory, mp4) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("trainrel")
    build_run(base / "run", mp4)
    configs = {"instructions": "instructions"}
    paths = release(base / "run", base / "paths", configs=configs, check=False)
    embedded = release(base / "run", base / "bytes", configs=configs, check=False, images="bytes", videos="frames")
    return {"paths": paths.out_dir, "bytes": embedded.out_dir, "base": base}


def _pixels(image: PIL.Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_release_folder_paths_and_embedded_media_give_the_same_examples(releases):
    by_mode = {}
    for mode in ("paths", "bytes"):
        ds = open_examples(DataSource(path=str(releases[mode])), num_frames=3)
        by_mode[mode] = {ds[i].id: ds[i] for i in range(len(ds))}
    assert by_mode["paths"].keys() == by_mode["bytes"].keys()
    assert len(by_mode["paths"]) == 6 + 2 + 1  # train split only: 3 posts x 2 tasks, 2 npy videos, 1 mp4
    image = by_mode["paths"]["reddit:p1:behavior"]
    assert image.media_kind == "image" and image.frames is None and len(image.images) == 1
    assert image.images[0].size == (11, 12) and tuple(_pixels(image.images[0])[0, 0]) == (40, 100, 200)
    assert image.targets["score"] == 12 and image.task == "behavior" and image.platform == "reddit"
    assert by_mode["paths"]["reddit:p1:content"].targets is None
    for rid, ex in by_mode["paths"].items():
        other = by_mode["bytes"][rid]
        assert ex.conversations == other.conversations == _conv("describe the image", "a red car")
        if ex.media_kind == "image":
            assert np.array_equal(_pixels(ex.images[0]), _pixels(other.images[0]))
        elif rid != "youtube:m0:content":  # the mp4 stays a path in both modes
            assert np.array_equal(ex.frames, other.frames)


def test_npy_frames_are_sampled_evenly(releases):
    ds = open_examples(DataSource(path=str(releases["bytes"])), num_frames=3)
    video = next(ds[i] for i in range(len(ds)) if ds[i].id == "youtube:v1:behavior")
    assert video.frames.dtype == np.uint8 and video.frames.shape == (3, 3, 8, 8)
    # frames 0, 2 (2.5 rounds to even) and 5 of 6; frame i holds 10*i + video number
    assert video.frames[:, 0, 0, 0].tolist() == [1, 21, 51]
    ds8 = open_examples(DataSource(path=str(releases["paths"])), num_frames=8)  # fewer frames: all kept
    video = next(ds8[i] for i in range(len(ds8)) if ds8[i].id == "youtube:v0:behavior")
    assert video.frames[:, 0, 0, 0].tolist() == [0, 10, 20, 30, 40, 50]


def test_mp4_frames_are_decoded_and_sampled(releases):
    ds = open_examples(DataSource(path=str(releases["paths"])), num_frames=3)
    video = next(ds[i] for i in range(len(ds)) if ds[i].id == "youtube:m0:content")
    assert video.frames.shape == (3, 3, 24, 32)
    # frames 0, 10, 19 of 10 red then 10 blue: red, blue, blue
    red, blue = video.frames[:, 0].mean(axis=(1, 2)), video.frames[:, 2].mean(axis=(1, 2))
    assert red[0] > 200 > 60 > blue[0] and (blue[1:] > 200).all() and (red[1:] < 60).all()


def test_even_indices():
    assert even_indices(6, 3).tolist() == [0, 2, 5]
    assert even_indices(2, 4).tolist() == [0, 1]
    assert even_indices(2, 4, exact=True).tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError):
        even_indices(0, 3)


def test_single_files_and_hub_ids(releases, tmp_path):
    shard = releases["paths"] / "data" / "instructions" / "test-00000-of-00001.parquet"
    ds = open_examples(DataSource(path=str(shard)))  # media resolve against the release root
    assert [ds[i].id for i in range(len(ds))] == ["reddit:p3:behavior", "reddit:p3:content"]
    assert ds[0].images[0].size == (13, 12)
    # a folder given as a Hub id goes through load_dataset(id, config, split=...) and its README configs
    hub = open_examples(DataSource(hub_id=str(releases["paths"]), split="test"))
    assert [hub[i].id for i in range(len(hub))] == ["reddit:p3:behavior", "reddit:p3:content"]
    assert np.array_equal(_pixels(hub[1].images[0]), _pixels(ds[1].images[0]))
    # LLaVA-style JSONL of other instruction data, image paths relative to the file
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(_jpeg((1, 2, 3), (5, 5)))
    rows = [{"id": "o1", "image": "imgs/a.png", "conversations": _conv("what", "a dog")},
            {"id": "o2", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
            # a video known by its annotations alone (instruct's text-only records): no media, no token
            {"id": "o3", "media_kind": "video", "media": [],
             "conversations": [{"from": "human", "value": "A video, 2 scenes."}, {"from": "gpt", "value": "Likes: 3"}]}]
    (tmp_path / "other.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    other = open_examples(DataSource(path=str(tmp_path / "other.jsonl"), kind="other"))
    assert [(other[i].id, other[i].task, other[i].media_kind) for i in range(3)] == [
        ("o1", "other", "image"), ("o2", "other", "none"), ("o3", "other", "none")]
    assert tuple(_pixels(other[0].images[0])[0, 0]) == (1, 2, 3) and other[1].images == []
    assert other.kinds() == ["other", "other", "other"] and other[2].frames is None


def test_clear_errors_name_the_source_and_record(releases, tmp_path):
    with pytest.raises(ValidationError, match="exactly one"):
        DataSource(path="a", hub_id="b")
    with pytest.raises(DataSourceError, match="does not exist"):
        load_records(DataSource(path=str(tmp_path / "nope")))
    with pytest.raises(DataSourceError, match=r"no 'validation' shards.*splits found: \['test', 'train'\]"):
        load_records(DataSource(path=str(releases["paths"]), split="validation"))
    with pytest.raises(DataSourceError, match="configs found: \\['instructions'\\]"):
        load_records(DataSource(path=str(releases["paths"]), config="scenes"))
    (tmp_path / "x.csv").write_text("id\n1\n")
    with pytest.raises(DataSourceError, match="unsupported file type"):
        load_records(DataSource(path=str(tmp_path / "x.csv")))
    (tmp_path / "noconv.jsonl").write_text(json.dumps({"id": "a"}) + "\n")
    with pytest.raises(DataSourceError, match="lack column.*conversations"):
        load_records(DataSource(path=str(tmp_path / "noconv.jsonl")))
    # a record whose media file is gone: the error names it and the path; its neighbours still load
    records = load_records(DataSource(path=str(releases["paths"]), split="test"))
    ds = RecordDataset(records, tmp_path, name="test source")
    with pytest.raises(RecordDataError, match=r"'reddit:p3:behavior' \(test source\).*media\[0\].*not found"):
        ds[0]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": "b1", "media_kind": "video", "media": ["f.npy"],
                                                    "conversations": _conv("q", "a")}) + "\n")
    np.save(tmp_path / "f.npy", np.zeros((2, 8, 8, 3), np.uint8))  # channels last: wrong layout
    with pytest.raises(RecordDataError, match=r"'b1'.*expected uint8 frames \(T,3,H,W\)"):
        open_examples(DataSource(path=str(tmp_path / "bad.jsonl")))[0]


def test_examples_feed_the_collator(releases):
    ds = open_examples(DataSource(path=str(releases["bytes"])), num_frames=2)
    collator = VlmCollator(tiny_llava.processor("llava"), "llava", num_frames=2)
    batch = collator([ds[i] for i in range(len(ds))])
    kinds = Counter(ds[i].media_kind for i in range(len(ds)))
    assert batch["pixel_values"].shape[0] == kinds["image"] + 2 * kinds["video"]  # 2 frames per video
    assert (batch["labels"] != -100).sum(1).min() > 0


# ------------------------------------------------------------------------------------ mixing


def test_default_mix_is_one_to_one_and_upsamples_the_short_kind():
    kinds = ["behavior"] * 3 + ["content"] * 7
    assert mix_counts(kinds) == {"behavior": (3, 7), "content": (7, 7)}
    order = mix_indices(kinds, {"behavior": 1, "content": 1}, seed=0)
    picked = Counter(kinds[i] for i in order)
    assert picked == {"behavior": 7, "content": 7}
    assert set(order) == set(range(10))  # every record is used
    assert Counter(i for i in order if kinds[i] == "content") == Counter(range(3, 10))  # larger kind once each
    behavior_uses = Counter(i for i in order if kinds[i] == "behavior")
    assert sorted(behavior_uses.values()) == [2, 2, 3]  # two full passes + one extra
    assert mix_indices(kinds, {"behavior": 1, "content": 1}, seed=0) == order
    assert mix_indices(kinds, {"behavior": 1, "content": 1}, seed=1) != order


def test_mix_ratios_and_refusals():
    kinds = ["behavior"] * 4 + ["content"] * 4 + ["other"] * 5
    order = mix_indices(kinds, {"behavior": 2, "content": 1, "other": 0}, seed=3)
    assert Counter(kinds[i] for i in order) == {"behavior": 8, "content": 4}
    with pytest.raises(ValueError, match=r"kind\(s\) \['other'\] have no mix ratio"):
        mix_indices(kinds, {"behavior": 1, "content": 1}, seed=0)
    with pytest.raises(ValueError, match=r"asks for kind\(s\) \['behavior'\]"):
        mix_indices(["content"] * 3, {"behavior": 1, "content": 1}, seed=0)
    with pytest.raises(ValueError, match=">= 0"):
        mix_indices(kinds, {"behavior": -1, "content": 1, "other": 1}, seed=0)
    assert mix_indices(["content"] * 3, {"content": 1}, seed=0) != []
