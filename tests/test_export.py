"""`blift export llava`: blift.json + media a LLaMA-VID trainer reads, its validator, atomic replace.

The releases are made by the real writer from small run folders written with blift.tables
(`make_release`, shared with test_takedown.py): image posts, videos as .npy frames (224 px and
another size), and optionally a video as an mp4 made with ffmpeg.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blift.export import (
    ExportError,
    ExportValidationError,
    export_llava,
    validate_export,
)
from blift.export.validate import SYSTEM, count_tokens
from release_runs import COLOURS, Built, make_release


def word_tokenizer(folder: Path, texts: list[str]) -> Path:
    """A word-level tokenizer over the words of ``texts`` (unknown words -> [UNK]), saved to a folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for t in texts for w in t.split()})
    vocab = {w: i for i, w in enumerate(["[UNK]", "<s>", "</s>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(str(folder))
    return folder


def load_json(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    return make_release(tmp_path_factory.mktemp("exp"), with_mp4=True)


def test_export_is_what_llama_vid_reads_and_passes_its_validator(built: Built, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = export_llava(built.release, out, splits=("train", "test"))
    assert validate_export(out) == []
    train, test = load_json(out / "blift.json"), load_json(out / "blift_test.json")
    assert [r["id"] for r in train] == built.record_ids("train")
    assert [r["id"] for r in test] == built.record_ids("test")
    assert report.records == {"train": len(train), "test": len(test)} and not report.skipped
    assert report.files == {"train": "blift.json", "test": "blift_test.json"}
    source = {r["id"]: r for r in built.instructions}
    for rec in train + test:
        assert set(rec) == {"id", "conversations", "image" if source[rec["id"]]["media_kind"] == "image" else "video"}
        assert rec["conversations"] == source[rec["id"]]["conversations"]
    images = {r["id"]: r["image"] for r in train + test if "image" in r}
    for rid, rel in images.items():
        assert rel.startswith("images/")
        release_file = built.release / "media" / built.post(source[rid]["uid"]).media.removeprefix("media/")
        assert (out / rel).read_bytes() == release_file.read_bytes()
        assert os.stat(out / rel).st_ino == os.stat(release_file).st_ino  # hard link, not a copy
    # one file per distinct media: img2 and img3 share theirs
    assert images["reddit:img2:behavior"] == images["reddit:img3:content"]
    assert report.images == 3 and report.linked >= 4

    videos = {r["id"].rsplit(":", 1)[0]: r["video"] for r in train if "video" in r}
    assert set(videos) == {"youtube:vid0aaaaaaa", "youtube:vid1bbbbbbb", "youtube:vid2ccccccc"}
    for _uid, rel in videos.items():
        assert rel.startswith("videos/") and rel.endswith(".npy")
        arr = np.load(out / rel)
        assert arr.dtype == np.uint8 and arr.shape[1:] == (3, 224, 224)
    # vid0: 224 px in the release -> linked as is; vid1: 112 px -> letterboxed to 224, colour kept
    assert np.load(out / videos["youtube:vid0aaaaaaa"]).shape[0] == 3
    vid1 = np.load(out / videos["youtube:vid1bbbbbbb"])
    assert vid1.shape[0] == 3 and tuple(vid1[0, :, 112, 112]) == COLOURS["blue"]
    assert report.resized == 1 and report.decoded == 1 and report.videos == 3


def test_mp4_is_decoded_at_one_fps_and_letterboxed(built: Built, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export_llava(built.release, out)
    rec = next(r for r in load_json(out / "blift.json") if r["id"] == "youtube:vid2ccccccc:behavior")
    frames = np.load(out / rec["video"])
    # 25 red frames then 38 blue ones at 25 fps: 2.52 s -> instants 0, 1, 2 s
    assert frames.shape == (math.ceil(63 / 25), 3, 224, 224)
    centre = frames[:, :, 112, 112].astype(int)
    assert centre[0, 0] > 150 and centre[0, 2] < 80  # red at 0 s
    assert all(c[2] > 150 and c[0] < 80 for c in centre[1:])  # blue at 1 s and 2 s
    # 160x120 fitted into 224x224: 168 rows of picture, 28 black rows above and below
    assert frames[:, :, :27, :].max() == 0 and frames[:, :, -27:, :].max() == 0
    assert frames[0, 0, 30:-30, :].min() > 150


def test_videos_as_mp4(built: Built, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = export_llava(built.release, out, videos="mp4")
    recs = {r["id"]: r for r in load_json(out / "blift.json")}
    mp4 = recs["youtube:vid2ccccccc:behavior"]["video"]
    assert mp4.endswith(".mp4") and (out / mp4).read_bytes() == (built.release / "media/ff/vid2.mp4").read_bytes()
    # vid0's records point to frames, but the videos config names its mp4
    vid0 = recs["youtube:vid0aaaaaaa:content"]["video"]
    assert vid0.endswith("vid0.mp4") and (out / vid0).read_bytes() == (built.release / "media/ff/vid0.mp4").read_bytes()
    # vid1 has frames only: left out, each record named with its reason
    for task in ("behavior", "content"):
        assert f"youtube:vid1bbbbbbb:{task}" not in recs
        assert report.skipped[f"youtube:vid1bbbbbbb:{task}"].startswith("no_mp4")
    assert set(report.skipped) == {"youtube:vid1bbbbbbb:behavior", "youtube:vid1bbbbbbb:content"}
    assert validate_export(out) == []


def test_videos_as_mp4_from_a_frames_only_release_fails(tmp_path: Path) -> None:
    built = make_release(tmp_path)
    with pytest.raises(ExportError, match="frames only"):
        export_llava(built.release, tmp_path / "out", videos="mp4")
    assert not (tmp_path / "out").exists()


def test_a_release_with_embedded_images_and_frames(tmp_path: Path) -> None:
    """images="bytes" / videos="frames": the media travel inside the shards, not as files."""
    built = make_release(tmp_path, side=112, images="bytes", videos="frames")
    assert not list((built.release).rglob("*.jpg")) and not list((built.release).rglob("*.npy"))
    out = tmp_path / "out"
    report = export_llava(built.release, out, splits=("train", "test"))
    assert validate_export(out) == [] and not report.skipped
    recs = {r["id"]: r for r in load_json(out / "blift.json") + load_json(out / "blift_test.json")}
    assert set(recs) == set(built.record_ids())
    img = recs["reddit:img0:behavior"]["image"]
    assert (out / img).read_bytes() == (built.run / "media/aa/img0.jpg").read_bytes()
    for uid in ("youtube:vid0aaaaaaa", "youtube:vid1bbbbbbb"):
        frames = np.load(out / recs[f"{uid}:behavior"]["video"])
        assert frames.shape == (3, 3, 224, 224) and tuple(frames[1, :, 112, 112]) == COLOURS["blue"]
        assert (frames == np.asarray(COLOURS["blue"], np.uint8)[None, :, None, None]).all()  # square: no bars
    assert report.resized == 2 and report.images == 3


def test_records_with_missing_media_are_left_out_and_named(tmp_path: Path) -> None:
    built = make_release(tmp_path)
    (built.release / "media" / "aa" / "img0.jpg").unlink()
    report = export_llava(built.release, tmp_path / "out")
    ids = [r["id"] for r in load_json(tmp_path / "out" / "blift.json")]
    assert "reddit:img0:behavior" not in ids and "reddit:img0:content" not in ids
    assert set(report.skipped) == {"reddit:img0:behavior", "reddit:img0:content"}
    assert all(why.startswith("missing_media") and "img0.jpg" in why for why in report.skipped.values())
    assert len(ids) == len(built.record_ids("train")) - 2
    assert any("missing_media=2" in line for line in report.summary_lines())


def _broken_export(built: Built, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    export_llava(built.release, out)
    return out


def test_validator_names_the_record_and_field_of_each_problem(built: Built, tmp_path: Path) -> None:
    out = _broken_export(built, tmp_path)
    recs = load_json(out / "blift.json")
    by_id = {r["id"]: r for r in recs}
    by_id["reddit:img0:behavior"]["conversations"][0]["value"] += " and another <image>"
    by_id["reddit:img1:behavior"]["image"] = "images/nope/missing.jpg"
    by_id["reddit:img2:content"]["conversations"].reverse()  # gpt first
    by_id["youtube:vid0aaaaaaa:content"]["conversations"][1]["value"] = "  "
    by_id["reddit:img1:content"]["conversations"][1]["value"] += " <image>"
    bad = out / "videos" / "bad.npy"
    np.save(bad, np.zeros((2, 3, 8, 8), dtype=np.float32))
    by_id["youtube:vid1bbbbbbb:content"]["video"] = "videos/bad.npy"
    recs.append(dict(recs[0]))  # a duplicate id
    (out / "blift.json").write_text(json.dumps(recs))

    problems = validate_export(out)
    text = "\n".join(problems)

    def has(rid: str, *parts: str) -> bool:
        return any(f"record {rid!r}" in p and all(x in p for x in parts) for p in problems)

    assert has("reddit:img0:behavior", "conversations[0].value", "<image> appears 2 times"), text
    assert has("reddit:img1:behavior", "image", "missing.jpg", "file not found"), text
    assert has("reddit:img2:content", "conversations[0].from", "'gpt', expected 'human'"), text
    assert has("reddit:img2:content", "conversations[1].from"), text
    assert has("youtube:vid0aaaaaaa:content", "conversations[1].value", "empty"), text
    assert has("reddit:img1:content", "conversations[1].value", "only the first human turn"), text
    assert has("youtube:vid1bbbbbbb:content", "video", "uint8", "float32"), text
    assert has(recs[0]["id"], "id", "duplicate"), text
    # nothing else is reported: the good records raise no problem
    named = {re.search(r"record '([^']*)'", p).group(1) for p in problems}
    assert named == {"reddit:img0:behavior", "reddit:img1:behavior", "reddit:img1:content", "reddit:img2:content",
                     "youtube:vid0aaaaaaa:content", "youtube:vid1bbbbbbb:content"}, text


@pytest.mark.slow
def test_an_export_with_a_broken_record_fails_and_leaves_the_old_one(tmp_path: Path) -> None:
    good = make_release(tmp_path / "a")
    out = tmp_path / "out"
    export_llava(good.release, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = make_release(tmp_path / "b", broken={"reddit:img1:content": [
        {"from": "human", "value": "<image>\nDescribe."}, {"from": "human", "value": "Again?"}]})
    with pytest.raises(ExportValidationError, match=r"record 'reddit:img1:content': conversations\[1\]\.from") as err:
        export_llava(bad.release, out)
    assert any("reddit:img1:content" in p for p in err.value.problems)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "out"]  # no temp folder left


def test_max_length_with_a_tiny_tokenizer(built: Built, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export_llava(built.release, out)
    recs = load_json(out / "blift.json")
    tok_dir = word_tokenizer(tmp_path / "tok", [SYSTEM, "USER: ASSISTANT:"] +
                             [t["value"] for r in recs for t in r["conversations"]])
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    # the count, by hand: BOS + system words + "USER:" + "hi" "ASSISTANT:" "ok" + "</s>" + 2 per frame
    turns = [{"from": "human", "value": "<image>\nhi"}, {"from": "gpt", "value": "ok"}]
    assert list(count_tokens(tok, [turns], [2])) == [1 + len(SYSTEM.split()) + 1 + 3 + 1 + 2]
    assert list(count_tokens(tok, [turns], [2 * 7])) == [1 + len(SYSTEM.split()) + 5 + 14]

    assert validate_export(out, tok_dir, max_length=2048) == []
    long_id = "reddit:img1:behavior"
    long = next(r for r in recs if r["id"] == long_id)
    long["conversations"][1]["value"] += " upvotes" * 300
    (out / "blift.json").write_text(json.dumps(recs))
    shortest_ok = max(n for r, n in zip(recs, count_tokens(tok, [r["conversations"] for r in recs],
                                                           [2 * 3] * len(recs))) if r["id"] != long_id)
    problems = validate_export(out, tok_dir, max_length=shortest_ok + 6)
    assert len(problems) == 1 and f"record {long_id!r}: conversations:" in problems[0], problems
    assert "longer than max_length" in problems[0]
    assert validate_export(out, tok, max_length=10_000) == []

    # export_llava runs the same check and fails naming the record
    with pytest.raises(ExportValidationError, match="longer than max_length 30"):
        export_llava(built.release, tmp_path / "out2", tokenizer=tok_dir, max_length=30)
    assert not (tmp_path / "out2").exists()


def test_refuses_to_replace_a_folder_that_is_not_an_export(built: Built, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an export"):
        export_llava(built.release, precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    with pytest.raises(ExportError, match="overlaps the release"):
        export_llava(built.release, built.release / "export")
    with pytest.raises(ExportError, match="no shards for split"):
        export_llava(built.release, tmp_path / "o", splits=("validation",))


def test_export_replaces_an_older_export(built: Built, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export_llava(built.release, out, splits=("train", "test"))
    assert (out / "blift_test.json").exists()
    export_llava(built.release, out)
    assert not (out / "blift_test.json").exists() and (out / "blift.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
